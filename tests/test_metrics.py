"""The Prometheus endpoint, scraped over real HTTP.

Values are recorded with the helpers of :mod:`ops.metrics`, then ``/metrics``
is fetched with urllib and parsed with prometheus_client's own text parser,
so the assertions read what Prometheus would read.
"""

from __future__ import annotations

import socket
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops import metrics


@pytest.fixture()
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A metrics endpoint on a free port (chosen through ``SELFLEARN_METRICS_PORT=0``)."""
    metrics.stop_metrics_server()
    monkeypatch.setenv(metrics.PORT_ENV, "0")
    monkeypatch.delenv(metrics.ADDR_ENV, raising=False)
    port = metrics.start_metrics_server()
    try:
        yield port
    finally:
        metrics.stop_metrics_server()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Fetch ``/metrics`` and return ``{(sample name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_recorded_values_are_scraped(endpoint: int) -> None:
    tag = uuid.uuid4().hex[:8]  # label values unique to this run: the registry is global
    agent, topic, camera = f"agent-{tag}", f"t-{tag}.agent", f"cam-{tag}"

    metrics.observe_batch(topic, 120)
    metrics.observe_batch(topic, 5)
    metrics.observe_batch(topic, 0)  # empty batches are not counted
    metrics.observe_dead_letter(f"bad-{tag}", 2)
    metrics.set_consumer_lag(topic, 3, 42)
    metrics.observe_decision(agent, "champion", 0.00004)  # 40 µs
    metrics.observe_decision(agent, "champion", 0.0007)
    metrics.observe_decision(agent, "canary", 0.2)
    metrics.observe_frame(camera, 29.5, processing_seconds=0.012)
    metrics.observe_learner(agent, "hoeffding:v2",
                            {"mae": 1.25, "n": 300, "label": "x", "nan": float("nan")})
    metrics.observe_transition(agent, "promotion.step_changed", canary_percent=5)
    metrics.observe_transition(agent, "promotion.step_changed", canary_percent=25)
    metrics.observe_transition(agent, "promotion.rolled_back")

    got = scrape(endpoint)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    assert value("selflearn_events_processed_total", topic=topic) == 125
    assert value("selflearn_dead_letters_total", reason=f"bad-{tag}") == 2
    assert value("selflearn_consumer_lag", topic=topic, partition="3") == 42
    # Sub-millisecond buckets separate a 40 µs answer from a 0.7 ms one.
    champion = {"agent": agent, "policy": "champion"}
    assert value("selflearn_decide_latency_seconds_bucket", **champion, le="5e-05") == 1
    assert value("selflearn_decide_latency_seconds_bucket", **champion, le="0.001") == 2
    assert value("selflearn_decide_latency_seconds_count", **champion) == 2
    assert value("selflearn_decide_latency_seconds_count", agent=agent, policy="canary") == 1
    assert value("selflearn_frames_per_second", camera=camera) == 29.5
    assert value("selflearn_frame_processing_seconds_count", camera=camera) == 1
    assert value("selflearn_learner_metric", agent=agent, model="hoeffding:v2",
                 metric="mae") == 1.25
    assert value("selflearn_learner_metric", agent=agent, model="hoeffding:v2",
                 metric="n") == 300
    assert value("selflearn_learner_metric", agent=agent, model="hoeffding:v2",
                 metric="label") is None
    assert value("selflearn_learner_metric", agent=agent, model="hoeffding:v2",
                 metric="nan") is None
    assert value("selflearn_policy_transitions_total", agent=agent,
                 event_type="promotion.step_changed") == 2
    assert value("selflearn_promotions_total", agent=agent) == 2
    assert value("selflearn_rollbacks_total", agent=agent) == 1
    assert value("selflearn_canary_percent", agent=agent) == 0


def test_second_start_reuses_the_endpoint(endpoint: int) -> None:
    assert metrics.start_metrics_server() == endpoint
    assert metrics.start_metrics_server(0) == endpoint
    assert metrics.metrics_port() == endpoint
    with pytest.raises(RuntimeError, match="already listens"):
        metrics.start_metrics_server(endpoint + 1 if endpoint < 65535 else endpoint - 1)


def test_fixed_port_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics.stop_metrics_server()
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    monkeypatch.setenv(metrics.PORT_ENV, str(free))
    try:
        assert metrics.start_metrics_server() == free
        metrics.observe_batch("env-port.agent", 1)
        assert ("selflearn_events_processed_total", (("topic", "env-port.agent"),)) in scrape(free)
    finally:
        metrics.stop_metrics_server()


def test_bad_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics.stop_metrics_server()
    monkeypatch.setenv(metrics.PORT_ENV, "ninety")
    with pytest.raises(ValueError, match="SELFLEARN_METRICS_PORT"):
        metrics.start_metrics_server()
    with pytest.raises(ValueError, match="outside"):
        metrics.start_metrics_server(70000)
