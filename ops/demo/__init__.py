"""The demo and the live evaluation: the whole loop on the embedded stack, with real data.

* :mod:`ops.demo.runner` — ``selflearn demo``: stack, worker, agents, summary, report.
* :mod:`ops.demo.data_agents` — the demo's agents, replaying real data through the SDK.
* :mod:`ops.demo.pipeline_eval` — ``selflearn evaluate --through-pipeline``.
"""
