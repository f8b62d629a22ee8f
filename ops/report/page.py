"""The HTML report: per-agent live vs shadow metrics, canary history, latency, vision, DLQ.

:func:`build_report` is a pure function of events, live policies and
dead-letter counts; it returns one self-contained HTML page (charts are
embedded PNGs, no scripts, nothing fetched from the network). The loaders in
:mod:`ops.report.sources` read those inputs from the archive (or the broker),
Redis and the dead-letter topic; :func:`ops.report.server.serve` keeps a
regenerated copy on a small local web server.

>>> from datetime import UTC, datetime
>>> from schemas import new_event
>>> ev = new_event("decision.made", {"request_id": "r", "kind": "task_estimate",
...     "output": 3.0, "model_version": "m:v1", "policy": "champion",
...     "inputs_digest": "d", "features": {}, "latency_us": 42.0},
...     producer="task-estimator", occurred_at=datetime(2025, 1, 1, tzinfo=UTC))
>>> page = build_report([ev], {}, {"malformed": 2})
>>> "task-estimator" in page and "<img" in page
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ops.report.collect import AgentData, collect
from ops.report.html import CSS, esc, fmt_time
from ops.report.served import served_section
from schemas import Envelope
from schemas.policy import LivePolicy


def build_report(events: Iterable[Envelope], policies: Mapping[str, LivePolicy],
                 dead_letters: Mapping[str, int], title: str = "selflearn report", *,
                 refresh: int | None = None, notes: Sequence[str] = (),
                 generated_at: datetime | None = None, sections: Sequence[str] = ()) -> str:
    """One self-contained HTML page about ``events``, the live ``policies`` and dead letters.

    Parameters
    ----------
    events
        Envelopes in any order; types other than :data:`REPORT_TYPES` are only counted.
    policies
        The current live policy per agent id (mode, champion, canary).
    dead_letters
        Dead-letter record counts by reason.
    title
        Page title and heading.
    refresh
        Seconds after which a browser reloads the page (``None``: never).
    notes
        Warnings shown at the top (e.g. a source that could not be read).
    generated_at
        Time printed as "generated" (default: now).
    sections
        Finished HTML sections appended after the agents (e.g. the audit trail,
        :mod:`ops.report.trail`).
    """
    from ops.report import plots  # matplotlib: only when a page is built

    events = list(events)
    c = collect(events)
    until = c.last or datetime.now(UTC)
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>")
    sub = (f"generated {fmt_time(generated_at or datetime.now(UTC))} · {c.events:,} events "
           f"from {fmt_time(c.first)} to {fmt_time(c.last)}")
    parts = [head, f"<header><h1>{esc(title)}</h1><p>{esc(sub)}</p></header><main>"]
    parts += [f'<div class="note">{esc(n)}</div>' for n in notes]
    parts.append(plots.agents_section(c, policies))
    parts.append(served_section(events, policies))
    parts.append(plots.dead_letter_section(dead_letters))
    if c.cameras:
        parts.append(plots.vision_section(c))
    for aid in sorted(set(c.agents) | set(policies)):
        parts.append(plots.agent_section(c.agents.get(aid) or AgentData(aid), policies.get(aid),
                                    until))
    parts.extend(sections)
    parts.append("</main></body></html>")
    return "".join(parts)


def write_report(path: str | Path, page: str) -> Path:
    """Write ``page`` atomically to ``path`` (parents created); returns the resolved path."""
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
