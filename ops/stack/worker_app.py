"""The worker as deployed: ``streams.app`` with the Prometheus sensor and endpoint.

``selflearn worker`` and ``faust -A ops.stack.worker_app worker`` run this module.
"""

from __future__ import annotations

import logging

from ops.metrics import PrometheusSensor, start_metrics_server
from streams.app import app, runtime

log = logging.getLogger(__name__)

runtime.sensor = PrometheusSensor()


@app.task
async def metrics_endpoint() -> None:
    """Prometheus metrics on SELFLEARN_METRICS_PORT (0 or unset: a free port, logged)."""
    log.info("metrics on :%d/metrics", start_metrics_server())


__all__ = ["app"]
