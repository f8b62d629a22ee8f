"""The worker as deployed: ``streams.app`` with the Prometheus sensor and endpoint.

``selflearn worker`` and ``faust -A ops.stack.worker_app worker`` run this module.
It refuses to start for a caller without the operator role (ops.access), and
every ``SELFLEARN_AUDIT_CHECKPOINT_S`` seconds it copies promotion transitions
into the audit log and signs a checkpoint (docs/access.md).
"""

from __future__ import annotations

import asyncio
import logging

from ops.access import Denied, authorize
from ops.metrics import PrometheusSensor, start_metrics_server
from streams.app import app, runtime, settings

log = logging.getLogger(__name__)

try:
    authorize(settings, "worker", once=True)
except Denied as exc:
    raise SystemExit(str(exc)) from None

runtime.sensor = PrometheusSensor()


@app.task
async def metrics_endpoint() -> None:
    """Prometheus metrics on SELFLEARN_METRICS_PORT (0 or unset: a free port, logged)."""
    log.info("metrics on :%d/metrics", start_metrics_server())


@app.timer(interval=settings.audit_checkpoint_s)
async def audit_checkpoint() -> None:
    """Transitions into the audit log, then a signed checkpoint (off the event loop)."""
    from ops.access.trail import Trail, tick

    try:
        copied = await asyncio.to_thread(tick, Trail.of(settings))
    except Exception as exc:  # noqa: BLE001 - the audit trail must never stop the worker
        log.error("audit checkpoint failed: %s", exc)
        return
    if copied:
        log.info("audit log: %d transition(s) copied and checkpointed", copied)


__all__ = ["app"]
