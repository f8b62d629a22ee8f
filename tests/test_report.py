"""The HTML report: what it says about three agents, and how it looks in a real browser."""

from __future__ import annotations

import base64
import random
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ops.report.collect import collect, percentile
from ops.report.page import build_report
from ops.report.server import serve
from schemas import Envelope, new_event
from schemas.policy import LivePolicy, ModelRef

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("task-estimator", "doc-keeper", "code-reviewer")
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
DEAD = {"malformed": 3, "unknown_type": 1}
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _decision(agent: str, kind: str, policy: str, latency_us: float, minute: float) -> Envelope:
    return new_event("decision.made", {
        "request_id": f"{agent}-{policy}-{minute}", "kind": kind, "output": 1.0,
        "model_version": "m:v1", "policy": policy, "inputs_digest": "d", "features": {},
        "latency_us": latency_us}, producer=agent, occurred_at=_at(minute))


def _evaluated(agent: str, kind: str, model: str, value: float, minute: float) -> Envelope:
    metric = "mae" if kind == "task_estimate" else "log_loss"
    return new_event("model.evaluated", {"kind": kind, "model": model, "n": int(minute) + 1,
                                         "metrics": {metric: value, f"rolling_{metric}": value}},
                     producer=agent, occurred_at=_at(minute))


def _step(agent: str, kind: str, frm: int, to: int, minute: float, reason: str) -> Envelope:
    return new_event("promotion.step_changed", {
        "agent_id": agent, "kind": kind, "from_step": frm, "to_step": to,
        "champion": "running_median:v1", "challenger": "linear:v2", "reason": reason},
        producer=agent, occurred_at=_at(minute))


def synthetic_events() -> list[Envelope]:
    """Three agents, a canary ramp with one rollback, decisions, a camera; shuffled."""
    evs: list[Envelope] = []
    te, cr = "task_estimate", "review_risk"
    # task-estimator: champion latencies 0..100 µs (p50 50, p95 95, p99 99), a few canary ones
    evs += [_decision("task-estimator", te, "champion", float(v), v * 0.5) for v in range(101)]
    evs += [_decision("task-estimator", te, "canary", 200.0 + v, 10 + v) for v in range(5)]
    evs += [_decision("task-estimator", te, "fallback", 5_000.0, 30)]
    evs += [_decision("doc-keeper", te, "baseline", 30.0 + v, v) for v in range(20)]
    evs += [_decision("code-reviewer", cr, "champion", 80.0 + v, v) for v in range(40)]
    for i in range(30):
        evs += [_evaluated("task-estimator", te, "running_median", 3.0 - 0.01 * i, i * 2),
                _evaluated("task-estimator", te, "linear", 3.5 - 0.05 * i, i * 2),
                _evaluated("task-estimator", te, "knn", 3.2, i * 2),
                _evaluated("doc-keeper", te, "running_median", 2.0, i * 2),
                _evaluated("doc-keeper", te, "linear", 2.2 - 0.02 * i, i * 2),
                _evaluated("code-reviewer", cr, "size_bucket", 0.69, i * 2),
                _evaluated("code-reviewer", cr, "logistic", 0.7 - 0.005 * i, i * 2)]
    evs += [_step("task-estimator", te, 0, 5, 5, "challenger better (p=0.01)"),
            _step("task-estimator", te, 5, 25, 10, "challenger better (p=0.02)"),
            new_event("promotion.rolled_back", {
                "agent_id": "task-estimator", "kind": te, "from_step": 25,
                "champion": "running_median:v1", "challenger": "linear:v2",
                "reason": "canary degraded: MAE up 40 %"},
                producer="task-estimator", occurred_at=_at(15)),
            _step("task-estimator", te, 0, 5, 20, "challenger better (p=0.01)"),
            _step("task-estimator", te, 5, 25, 25, "challenger better (p=0.03)"),
            _step("code-reviewer", cr, 0, 5, 40, "challenger better (p=0.04)")]
    evs += [new_event("frame.processed", {
        "camera_id": "cam0", "frame_no": n, "fps": 29.0 + (n % 3), "capture_latency_ms": 1.0,
        "processing_latency_ms": 8.0, "faces": 1, "boxes": [[1, 2, 3, 4]],
        "dropped": int(n % 50 == 0)}, producer="vision", occurred_at=_at(n / 30))
        for n in range(300)]
    random.Random(7).shuffle(evs)
    return evs


def synthetic_policies() -> dict[str, LivePolicy]:
    return {
        "task-estimator": LivePolicy("task-estimator", "task_estimate", "live",
                                     ModelRef("running_median", 1), ModelRef("linear", 2), 25, 5),
        "doc-keeper": LivePolicy("doc-keeper", "task_estimate", "log_only",
                                 ModelRef("running_median", 1)),
        "code-reviewer": LivePolicy("code-reviewer", "review_risk", "live",
                                    ModelRef("size_bucket", 1), ModelRef("logistic", 2), 5, 1),
    }


class _Checker(HTMLParser):
    """Checks tag balance and collects ``img`` sources and section ids."""

    VOID = {"meta", "link", "img", "br", "hr", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _section(page: str, agent: str) -> str:
    m = re.search(rf'<section id="agent-{agent}">(.*?)</section>', page, re.S)
    assert m, f"no section for {agent}"
    return m.group(1)


def test_report_shows_each_agent_canary_history_and_latency_percentiles() -> None:
    page = build_report(synthetic_events(), synthetic_policies(), DEAD, title="fleet report")

    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert page.startswith("<!DOCTYPE html>") and checker.errors == [] and checker.stack == []
    assert "<title>fleet report</title>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched: offline-safe
    # every chart is an embedded, decodable PNG
    assert len(checker.images) >= 9
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # the agents table at the top links to one section per agent
    overview = page[page.index("<h2>Agents</h2>"):page.index("<h2>Dead letters</h2>")]
    for agent in AGENTS:
        assert f'href="#agent-{agent}"' in overview and f"agent-{agent}" in checker.ids
    te = _section(page, "task-estimator")
    assert "live" in te and "canary step 25 %" in te
    # step history, newest first, with the rollback and its reason
    steps = re.findall(r"<td>(step|<span class=\"rollback\">rollback</span>)</td><td>(\d+ % → "
                       r"\d+ %)</td>", te)
    assert [s for _, s in steps] == ["5 % → 25 %", "0 % → 5 %", "25 % → 0 %", "5 % → 25 %",
                                     "0 % → 5 %"]
    assert "canary degraded: MAE up 40 %" in te
    # latency percentiles of the champion: 0..100 µs → p50 50, p95 95, p99 99, max 100
    assert ('<td>champion</td><td class="n">101</td><td class="n">50.0</td>'
            '<td class="n">95.0</td><td class="n">99.0</td><td class="n">100.0</td>') in te
    assert "<td>canary</td>" in te and "<td>fallback</td>" in te
    assert "running_median (live)" not in te  # legend text is inside the PNG, not the HTML
    dk = _section(page, "doc-keeper")
    assert "log_only" in dk and "canary step 0 %" in dk and "<td>baseline</td>" in dk
    cr = _section(page, "code-reviewer")
    assert "review_risk" in cr and "canary step 5 %" in cr
    # dead letters and vision
    assert '<td>malformed</td><td class="n">3</td>' in page
    assert "<h2>Vision</h2>" in page and "<td>cam0</td>" in page


def test_collect_is_independent_of_event_order() -> None:
    evs = synthetic_events()
    a, b = collect(evs), collect(sorted(evs, key=lambda e: e.occurred_at, reverse=True))
    assert a.agents["task-estimator"].history == b.agents["task-estimator"].history
    assert a.agents["code-reviewer"].metric_name == "rolling_log_loss"
    assert percentile([], 50) != percentile([], 50)  # NaN for no data


def test_served_page_is_regenerated() -> None:
    calls: list[int] = []

    def regenerate() -> str:
        calls.append(1)
        return build_report([], {}, {}, title=f"n{len(calls)}", refresh=5)

    import urllib.request

    with serve(0, regenerate, every=0.2) as server:
        first = urllib.request.urlopen(server.url, timeout=5).read().decode()
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        later = urllib.request.urlopen(server.url, timeout=5).read().decode()
    assert '<meta http-equiv="refresh" content="5">' in first
    assert "<title>n1</title>" in first and "<title>n1</title>" not in later


def test_gather_reads_archive_redis_and_dead_letters_from_real_servers(
        stack: Any, settings: Any) -> None:
    import asyncio
    import uuid

    import redis
    from aiokafka import AIOKafkaProducer

    from ops.report.sources import gather
    from projections.archive import EventArchive
    from projections.policy_store import PolicyStore
    from schemas.deadletter import dead_letter
    from streams.topics import ensure_topics

    agent, reason = f"rep-{uuid.uuid4().hex[:8]}", f"reason-{uuid.uuid4().hex[:8]}"
    evs = [_decision(agent, "task_estimate", "champion", 10.0 * i, i) for i in range(10)]
    evs.append(new_event("promotion.step_changed", {
        "agent_id": agent, "kind": "task_estimate", "from_step": 0, "to_step": 5,
        "champion": "running_median:v1", "challenger": "linear:v2", "reason": "better"},
        producer=agent, occurred_at=_at(20)))
    archive = EventArchive(stack.database_url)
    archive.ensure_schema()
    archive.write([("t", 0, i, ev) for i, ev in enumerate(evs)])
    archive.close()
    client = redis.Redis.from_url(stack.redis_url)
    PolicyStore(client, settings.topic_prefix).publish(LivePolicy(
        agent, "task_estimate", "live", ModelRef("running_median", 1), ModelRef("linear", 2),
        5, 1), {})
    client.close()
    dlq = f"{settings.topic_prefix}.dlq"

    async def send() -> None:
        await ensure_topics(stack.kafka_bootstrap, [dlq], 1)
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(3):
                await producer.send_and_wait(dlq, dead_letter(b"{", reason=reason,
                                                              error="bad", source="test"))
        finally:
            await producer.stop()

    asyncio.run(send())
    events, policies, dead, notes = gather(stack.kafka_bootstrap, stack.database_url,
                                           stack.redis_url, settings.topic_prefix,
                                           since=T0 - timedelta(minutes=1))
    assert notes == []
    mine = [e for e in events if e.producer == agent]
    assert sorted(e.event_id for e in mine) == sorted(e.event_id for e in evs)
    assert policies[agent].canary_percent == 5 and dead[reason] == 3
    page = build_report(events, policies, dead)
    assert f'id="agent-{agent}"' in page and "0 % → 5 %" in page


# --- the page in a real browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> None:
    """Debian's Chromium and chromedriver, installed by ops/scripts/browser.sh if missing."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        script = ROOT / "ops" / "scripts" / "browser.sh"
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if done.returncode != 0 or not CHROMEDRIVER.exists():
            pytest.skip("Chromium is not installed and cannot be installed here (needs root "
                        f"and apt-get): run `sudo bash {script}`; {done.stderr.strip()[-300:]}")


@pytest.fixture
def driver(chromium: None, tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield drv
    finally:
        drv.quit()


def test_dashboard_renders_in_headless_chromium(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    events, policies = synthetic_events(), synthetic_policies()

    def regenerate() -> str:
        return build_report(events, policies, DEAD, title="selflearn dashboard", refresh=5)

    with serve(0, regenerate, every=1.0) as server:
        driver.get(server.url)
        assert driver.title == "selflearn dashboard"
        for agent in AGENTS:
            heading = driver.find_element(By.CSS_SELECTOR, f"#agent-{agent} h2")
            assert heading.text == agent and heading.is_displayed()
            link = driver.find_element(By.CSS_SELECTOR, f'a[href="#agent-{agent}"]')
            assert link.is_displayed()
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        assert len(images) >= 9
        assert all(done and width > 0 for _, done, width in images), images
        refresh = driver.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert refresh.get_attribute("content") == "5"
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height), 8000))
        out = ROOT / "artifacts" / "dashboard.png"
        out.parent.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
