"""Prometheus metrics shared by every long-running selflearn process.

Workers, agents and the vision loop record into the process-wide default
registry of ``prometheus_client`` through the small ``observe_*`` / ``set_*``
helpers below, and :func:`start_metrics_server` exposes ``/metrics`` over
HTTP for Prometheus to scrape.

Every helper only touches memory (a lock and a float add), so it is safe on
the hot paths (``decide``, the frame loop): about a microsecond per call.
Label values are kept to bounded sets — topics, reasons, agents, models,
cameras, partitions — never request or event ids.

Environment
-----------
``SELFLEARN_METRICS_PORT``
    Port of the endpoint when :func:`start_metrics_server` is called without
    one; ``0`` (the default) picks a free port. The port actually used is
    returned, so a caller can log it.
``SELFLEARN_METRICS_ADDR``
    Address to bind; ``127.0.0.1`` by default (the laptop stack), ``0.0.0.0``
    in containers so Prometheus can reach it.

>>> observe_batch("doctest.agent", 3)
>>> EVENTS_PROCESSED.labels(topic="doctest.agent")._value.get()
3.0
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from pydantic import ValidationError

from schemas.settings import Settings
from streams.sensor import Sensor

PORT_ENV = "SELFLEARN_METRICS_PORT"
ADDR_ENV = "SELFLEARN_METRICS_ADDR"
DEFAULT_ADDR = "127.0.0.1"

# Decision latency: the read model answers in microseconds; the target is P95 < 100 ms.
DECIDE_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)
# Frame processing: 30 fps leaves 33 ms per frame.
FRAME_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25, 1.0,
)

# -- metrics --------------------------------------------------------------------
EVENTS_PROCESSED = Counter(
    "selflearn_events_processed", "Events taken from a topic and applied", ["topic"],
)
DEAD_LETTERS = Counter(
    "selflearn_dead_letters", "Events rejected to the dead-letter topic, by reason", ["reason"],
)
SEQUENCE_GAPS = Gauge(
    "selflearn_sequence_gaps", "Producer sequence numbers never received (lost events)",
    ["partition"],
)
CONSUMER_LAG = Gauge(
    "selflearn_consumer_lag",
    "Messages between the partition's high watermark and the consumer's position",
    ["topic", "partition"],
)
DECIDE_LATENCY = Histogram(
    "selflearn_decide_latency_seconds", "Time to answer one decide() call",
    ["agent", "policy"], buckets=DECIDE_BUCKETS,
)
FRAMES_PER_SECOND = Gauge(
    "selflearn_frames_per_second", "Frames processed per second, per camera", ["camera"],
)
FRAME_LATENCY = Histogram(
    "selflearn_frame_processing_seconds", "Time to process one frame (detect + blur)",
    ["camera"], buckets=FRAME_BUCKETS,
)
LEARNER_METRIC = Gauge(
    "selflearn_learner_metric", "Latest value of a learner metric (prequential)",
    ["agent", "model", "metric"],
)
TRANSITIONS = Counter(
    "selflearn_policy_transitions", "Promotion-projection events, by type",
    ["agent", "event_type"],
)
PROMOTIONS = Counter(
    "selflearn_promotions", "Canary steps that moved traffic towards the challenger", ["agent"],
)
ROLLBACKS = Counter(
    "selflearn_rollbacks", "Canaries rolled back to the champion", ["agent"],
)
CANARY_PERCENT = Gauge(
    "selflearn_canary_percent", "Percent of live traffic on the challenger", ["agent"],
)

_lock = threading.Lock()
_server: tuple[Any, int] | None = None  # (server, port) of this process's endpoint


# -- the endpoint -----------------------------------------------------------------
def start_metrics_server(port: int | None = None, addr: str | None = None) -> int:
    """Serve ``/metrics`` from a daemon thread; return the port it listens on.

    Parameters
    ----------
    port
        Port to bind; ``None`` reads ``SELFLEARN_METRICS_PORT`` (default ``0``),
        and ``0`` lets the OS pick a free port.
    addr
        Address to bind; ``None`` reads ``SELFLEARN_METRICS_ADDR`` (default
        ``127.0.0.1``).

    Calling it again in the same process returns the running endpoint's port
    (so the worker and an agent SDK in one process share one endpoint), unless
    a *different* fixed port is asked for, which raises ``RuntimeError``.

    Raises
    ------
    ValueError
        When ``SELFLEARN_METRICS_PORT`` is not an integer in 0..65535.
    OSError
        When the port is taken.
    """
    global _server
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"metrics port {port} is outside 0..65535")
    if port is None or addr is None:
        try:
            settings = Settings()
        except ValidationError as exc:
            raise ValueError(f"{PORT_ENV} / {ADDR_ENV}: {exc}") from None
        port = settings.metrics_port if port is None else port
        addr = addr or settings.metrics_addr
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port {port} is outside 0..65535")
    bind = addr
    with _lock:
        if _server is not None:
            running = _server[1]
            if port not in (0, running):
                raise RuntimeError(
                    f"the metrics endpoint already listens on port {running}, not {port}"
                )
            return running
        server, _thread = start_http_server(port, addr=bind, registry=REGISTRY)
        actual = int(server.server_port)
        _server = (server, actual)
        return actual


def stop_metrics_server() -> None:
    """Stop this process's endpoint, if one is running (tests, clean shutdown)."""
    global _server
    with _lock:
        if _server is None:
            return
        server, _ = _server
        _server = None
    server.shutdown()
    server.server_close()


def metrics_port() -> int | None:
    """Port of this process's endpoint, or ``None`` when it is not started."""
    return None if _server is None else _server[1]


# -- helpers the processes call -----------------------------------------------------
def observe_batch(topic: str, n: int) -> None:
    """``n`` events from ``topic`` were applied (call once per batch)."""
    if n > 0:
        EVENTS_PROCESSED.labels(topic=topic).inc(n)


def observe_dead_letter(reason: str, n: int = 1) -> None:
    """``n`` events went to the dead-letter topic for ``reason`` (an enum value)."""
    if n > 0:
        DEAD_LETTERS.labels(reason=reason).inc(n)


def set_consumer_lag(topic: str, partition: int, lag: int | float) -> None:
    """Messages still to consume in ``topic``/``partition`` (high watermark - position)."""
    CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(max(0.0, float(lag)))


def observe_decision(agent: str, policy: str, seconds: float) -> None:
    """One ``decide()`` call for ``agent`` answered by ``policy`` (champion/canary)."""
    DECIDE_LATENCY.labels(agent=agent, policy=policy).observe(seconds)


def observe_frame(camera: str, fps: float, processing_seconds: float | None = None) -> None:
    """The frame loop of ``camera`` runs at ``fps``; optionally one frame's processing time."""
    FRAMES_PER_SECOND.labels(camera=camera).set(fps)
    if processing_seconds is not None:
        FRAME_LATENCY.labels(camera=camera).observe(processing_seconds)


def observe_learner(agent: str, model: str, metrics: Mapping[str, Any]) -> None:
    """Latest metric values of ``model`` for ``agent``; non-numeric and NaN values are skipped."""
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isnan(value):
            continue
        LEARNER_METRIC.labels(agent=agent, model=model, metric=str(name)).set(float(value))


def observe_transition(agent: str, event_type: str, canary_percent: float | None = None) -> None:
    """A promotion-projection event for ``agent`` (e.g. ``promotion.step_changed``).

    ``promotion.rolled_back`` counts a rollback; ``promotion.step_changed``
    counts a promotion when ``canary_percent`` is not lower than before
    (unknown counts as a promotion). ``canary_percent``, when given, is the
    challenger's new share of traffic.
    """
    TRANSITIONS.labels(agent=agent, event_type=event_type).inc()
    previous = _gauge_value(CANARY_PERCENT, agent=agent)
    if event_type == "promotion.rolled_back":
        ROLLBACKS.labels(agent=agent).inc()
        CANARY_PERCENT.labels(agent=agent).set(0.0 if canary_percent is None else canary_percent)
        return
    if event_type == "promotion.step_changed":
        if canary_percent is None or previous is None or canary_percent >= previous:
            PROMOTIONS.labels(agent=agent).inc()
    if canary_percent is not None:
        CANARY_PERCENT.labels(agent=agent).set(canary_percent)


def _gauge_value(gauge: Gauge, **labels: str) -> float | None:
    """Current value of a labelled gauge, ``None`` if that child was never set."""
    value = REGISTRY.get_sample_value(gauge._name, labels)  # type: ignore[attr-defined]
    return value


def decision_observer(agent: str) -> Callable[[Any], None]:
    """An ``on_decision`` hook for the SDK that records each answer's latency."""

    def observe(decision: Any) -> None:
        observe_decision(agent, decision.policy, decision.latency_us / 1e6)

    return observe


class PrometheusSensor(Sensor):
    """The worker's sensor hooks, exported to Prometheus."""

    def on_batch(self, topic: str, n: int) -> None:
        observe_batch(topic, n)

    def on_dead_letter(self, reason: str, n: int = 1) -> None:
        observe_dead_letter(reason, n)

    def on_learner(self, agent: str, model: str, metrics: Mapping[str, Any]) -> None:
        observe_learner(agent, model, metrics)

    def on_transition(self, agent: str, event_type: str, canary_percent: float | None) -> None:
        observe_transition(agent, event_type, canary_percent)

    def on_lag(self, topic: str, partition: int, lag: float) -> None:
        set_consumer_lag(topic, partition, lag)

    def on_gaps(self, gaps: Mapping[int, int]) -> None:
        for partition, n in gaps.items():
            SEQUENCE_GAPS.labels(partition=str(partition)).set(n)
