"""The HTML report: live vs shadow metrics, canary history, latency, vision, dead letters.

* :mod:`ops.report.collect` — events folded into per-agent and per-camera series.
* :mod:`ops.report.html` — style sheet, escaping, formats, tables.
* :mod:`ops.report.plots` — matplotlib charts and the page's sections.
* :mod:`ops.report.page` — :func:`~ops.report.page.build_report`, one self-contained page.
* :mod:`ops.report.sources` — reading archive (or broker), Redis and dead letters.
* :mod:`ops.report.generate` — one call from settings to a written page.
* :mod:`ops.report.server` — the page on a small local web server.
* :mod:`ops.report.tables` — rich tables for evaluation results.
"""
