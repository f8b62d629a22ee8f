"""``bench soak``: steady load from 8 agents while faults hit every server, then one verdict.

Private servers in a temporary folder (a Tansu broker, PostgreSQL, Redis with
its append-only file; never the machine's shared ones), one worker, and 8
agents that decide (each decision logs a ~2 KB ``decision.requested`` and a
``decision.made``) and emit outcomes, requests and estimates. Every
:data:`FAULT_EVERY_S` seconds the next fault of :data:`FAULTS` strikes, in
turn: the worker killed with ``kill -9`` (and a new one started), the broker
killed and restarted empty, PostgreSQL stopped for 10 s, Redis stopped for
8 s. Afterwards the agents flush and the checker of the reliability suite
(:mod:`ops.usecases.verify`) accounts for every event sent. A run that
lost, duplicated or invented events keeps its folder (worker logs, server
data) and names it on stderr.

Keys: ``faults_injected``, ``events_sent``, ``lost`` and ``duplicated`` (sums
over features, memory and archive), ``unseen``, ``wrong_values``,
``gaps_detected``, ``max_lag_s`` (worst seconds between the newest event
sent and the newest the agents' features reflect, sampled each second
through the faults and the catch-up after them), ``max_rss_mb`` (largest
worker resident set), ``decide_p99_us`` (an agent's ``decide`` call, wall
clock, both events logged), ``events_per_s`` (sent over the load period),
``duration_s``, ``worker_crashes`` (worker exits the bench did not cause; it
starts a new worker then, as a supervisor would).

The issue asks 5 000 events/s; this bench defaults to :data:`RATE_PER_S`
(the rate one worker on a shared 2-vCPU machine keeps up with while the
load generator shares the machine); ``--rate`` asks for more.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from agents.client import AgentClient
from ops.benches._common import percentile
from ops.stack.private import PrivateBroker, PrivatePostgres, PrivateRedis, kill9
from ops.stack.processes import Spawned, is_alive
from ops.usecases.traffic import REVIEW_CONTEXT, event_for, recorded
from ops.usecases.verify import Lab, check
from projections.feature_store import OnlineFeatureStore
from projections.redis_client import redis_client
from schemas import Envelope
from schemas.addresses import Addresses, default_mlflow_uri
from schemas.settings import Settings

AGENTS = [f"soak-agent-{i}" for i in range(8)]
# Short-term memory evicts its oldest entries beyond a bound (100 000 by default);
# a long run stays under it so every memory entry can be accounted for.
MEMORY_BOUND = "10000000"
RATE_PER_S = 500.0
DURATION_S = 600.0
RESEND_WINDOW_S = 30.0  # the SDK's default
FAULT_EVERY_S = 25.0
FIRST_FAULT_S = 15.0
NOTES = ("A steady stream of review requests from the soak bench. " * 40)[:1800]


class Soak:
    """The private world of one soak run, its load, its faults and its samples."""

    def __init__(self, data_dir: Path, rate: float, resend_window_s: float) -> None:
        self.broker, self.pg, self.redis = (PrivateBroker(data_dir), PrivatePostgres(data_dir),
                                            PrivateRedis(data_dir))
        for server in (self.broker, self.pg, self.redis):
            server.start()
        settings = Settings(data_dir=data_dir, topic_prefix=f"soak-{uuid.uuid4().hex[:6]}",
                            _env_file=None)  # type: ignore[call-arg]
        addresses = Addresses(self.broker.address, self.pg.url, self.redis.url,
                              default_mlflow_uri(data_dir))
        self.lab = Lab.create(settings, addresses, data_dir)
        self.rate = rate
        self.resend_window_s = resend_window_s
        self.sent: list[Envelope] = []
        self.decide_us: list[float] = []
        self.faults: list[tuple[float, str]] = []
        self.lag_s: list[float] = []
        self.rss_mb: list[float] = []
        self.halt = threading.Event()
        self._worker_lock = threading.Lock()
        self.worker_crashes = 0
        self.worker: Spawned = self.lab.worker("worker-1",
                                               SELFLEARN_MEMORY_MAX_ENTRIES=MEMORY_BOUND)
        self.clients: list[AgentClient] = [
            recorded(self.lab.client(a, decision_kind="review_risk", redis_url=self.redis.url,
                                     resend_window_s=resend_window_s), self.sent)
            for a in AGENTS]

    # -- load -----------------------------------------------------------------------
    def load(self, until: float) -> None:
        """Emit at ``rate`` events/s until ``until`` (monotonic): half of it decisions."""
        started, i, count = time.monotonic(), 0, 0
        while time.monotonic() < until and not self.halt.is_set():
            client = self.clients[i % len(self.clients)]
            if i % 2 == 0:
                began = time.perf_counter()
                client.decide({**REVIEW_CONTEXT, "change_id": f"c{i}", "nf": i % 9,
                               "notes": NOTES})
                self.decide_us.append((time.perf_counter() - began) * 1e6)
                count += 2
            else:
                client.emit(*event_for(i, client.agent_id))
                count += 1
            i += 1
            ahead = started + count / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    # -- faults ---------------------------------------------------------------------
    def kill_worker(self) -> None:
        with self._worker_lock:
            kill9(self.worker)
            self._new_worker()

    def _new_worker(self) -> None:
        self.worker = self.lab.worker(f"worker-{len(self.lab.workers) + 1}", ready=False,
                                      SELFLEARN_MEMORY_MAX_ENTRIES=MEMORY_BOUND)

    def supervise(self) -> None:
        """Start a new worker if the current one exited on its own (a supervisor's job)."""
        with self._worker_lock:
            if not is_alive(self.worker.pid, self.worker.create_time):
                self.worker_crashes += 1
                self._new_worker()

    def restart_broker(self) -> None:
        self.broker.kill()
        time.sleep(2)
        self.broker.start()  # empty: every partition is a new incarnation

    def stop_postgres(self) -> None:
        self.pg.stop()
        time.sleep(10)
        self.pg.start()

    def stop_redis(self) -> None:
        self.redis.stop()
        time.sleep(8)
        self.redis.start()

    def inject(self, until: float, began: float) -> None:
        """Strike the next fault every ``FAULT_EVERY_S`` seconds until ``until``."""
        faults: list[tuple[str, Callable[[], None]]] = [
            ("worker kill -9", self.kill_worker), ("broker restart", self.restart_broker),
            ("postgres stop", self.stop_postgres), ("redis stop", self.stop_redis)]
        at = began + FIRST_FAULT_S
        n = 0
        while at < until - 5 and not self.halt.wait(max(0.0, at - time.monotonic())):
            name, strike = faults[n % len(faults)]
            strike()
            self.faults.append((round(at - began, 1), name))
            n += 1
            at += FAULT_EVERY_S

    # -- samples ----------------------------------------------------------------------
    def sample(self, store: OnlineFeatureStore) -> None:
        """Worker RSS and feature lag, once."""
        try:
            rss = psutil.Process(self.worker.pid).memory_info().rss
            self.rss_mb.append(rss / 2**20)
        except psutil.Error:
            pass  # between a kill and the next worker
        try:
            newest = max((row.as_of_us for a in AGENTS
                          if (row := store.get(f"agent:{a}")) is not None), default=0)
        except Exception:  # noqa: BLE001 - Redis is one of the servers being stopped
            return
        last = self.sent[-1].occurred_at.timestamp() if self.sent else 0.0
        if newest and last:
            self.lag_s.append(max(0.0, last - newest / 1e6))

    def close(self) -> None:
        self.halt.set()
        self.lab.close()
        for server in (self.broker, self.pg, self.redis):
            server.close()


def run(duration_s: float = DURATION_S, rate: float = RATE_PER_S,
        resend_window_s: float = RESEND_WINDOW_S) -> dict[str, Any]:
    """Load for ``duration_s`` at ``rate`` events/s with faults, then judge every event.

    ``resend_window_s`` is the SDK's: how long the agents keep events the
    broker acknowledged, to send again when it restarts empty.
    """
    tmp = Path(tempfile.mkdtemp(prefix="selflearn-soak-"))
    result: dict[str, Any] = {}
    try:
        soak = Soak(tmp, rate, resend_window_s)
        try:
            result = _measure(soak, duration_s)
        finally:
            soak.close()
    finally:
        if result and not (result["lost"] or result["duplicated"] or result["unseen"]):
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # the worker logs and the servers' data explain what went wrong
            print(f"soak: data folder kept for inspection: {tmp}", file=sys.stderr)
    return result


def _measure(soak: Soak, duration_s: float) -> dict[str, Any]:
    store = OnlineFeatureStore(redis_client(soak.redis.url, socket_timeout=2.0,
                                            socket_connect_timeout=2.0),
                               prefix=soak.lab.prefix)
    began = time.monotonic()
    until = began + duration_s
    loader = threading.Thread(target=soak.load, args=(until,), name="soak-load", daemon=True)
    faults = threading.Thread(target=soak.inject, args=(until, began), name="soak-faults",
                              daemon=True)
    loader.start()
    faults.start()
    while loader.is_alive():
        soak.supervise()
        soak.sample(store)
        time.sleep(1.0)
    load_s = time.monotonic() - began
    faults.join()
    for c in soak.clients:
        if not c.flush(300):
            raise RuntimeError(f"{c.agent_id}: events not delivered within 300 s of the end")
    sent = list(soak.sent)
    sampler = threading.Thread(target=_sample_until, args=(soak, store), daemon=True)
    sampler.start()
    verdict = check(soak.lab, sent, timeout=600, stall_s=90)
    soak.halt.set()
    sampler.join(5)
    return {
        "duration_s": round(load_s, 1),
        "faults_injected": len(soak.faults),
        "events_sent": len(sent),
        "lost": sum(verdict.lost.values()),
        "duplicated": sum(verdict.duplicated.values()),
        "unseen": sum(verdict.unseen.values()),
        **{f"lost_{k}": v for k, v in verdict.lost.items()},
        "wrong_values": len(verdict.wrong_values),
        "gaps_detected": verdict.gaps,
        "max_lag_s": round(max(soak.lag_s, default=0.0), 1),
        "median_lag_s": round(statistics.median(soak.lag_s), 2) if soak.lag_s else 0.0,
        "max_rss_mb": round(max(soak.rss_mb, default=0.0), 1),
        "decide_p50_us": round(percentile(soak.decide_us, 50), 1),
        "decide_p99_us": round(percentile(soak.decide_us, 99), 1),
        "events_per_s": round(len(sent) / load_s, 1),
        "rate_asked_per_s": soak.rate,
        "resend_window_s": soak.resend_window_s,
        "workers_started": len(soak.lab.workers),
        "worker_crashes": soak.worker_crashes,
    }


def _sample_until(soak: Soak, store: OnlineFeatureStore) -> None:
    """Keep sampling while the checker waits: the catch-up is part of the lag."""
    while not soak.halt.wait(1.0):
        soak.supervise()
        soak.sample(store)
