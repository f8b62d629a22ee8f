"""``selflearn demo``: the whole loop on the embedded stack, with real data.

Starts the stack (only what is not running or configured), a Faust worker
(features, shadow learning, promotion, archive) and the vision agent, then
runs seven agents that replay real issues and code changes through the SDK
while the worker learns in the shadow and the promotion projection moves the
live agents through the canary ramp. At the end: a summary table, an HTML
report, and everything it started is stopped (``--keep-running`` leaves it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from agents.client import AgentClient
from ops.data import data_path
from ops.demo.data_agents import RUNNERS, AgentPlan, plans
from ops.demo.data_agents import Progress as AgentProgress
from ops.demo.identity import DemoIdentity, as_operator, erase_as_officer, print_trail_paths
from ops.metrics import decision_observer, start_metrics_server
from ops.stack.processes import Spawned, stop
from ops.stack.workers import start_worker, wait_ready, worker_env
from projections.policy_store import PolicyStore
from schemas.addresses import Addresses
from schemas.settings import Settings


@dataclass
class DemoResult:
    """What the demo did, for the summary and for tests."""

    agents: dict[str, AgentProgress]
    policies: dict[str, Any]
    vision: dict[str, Any]
    report: Path | None
    elapsed_s: float
    learned: dict[str, dict[str, dict[str, float]]]  # agent -> model -> latest shadow metrics
    erasure: dict[str, Any] | None = None  # the subject erased half-way, and what it did


def _start_vision(settings: Settings, addresses: Addresses, duration: float) -> subprocess.Popen:
    env = worker_env(settings, addresses)
    argv = [sys.executable, "-m", "ops.cli", "vision", "--source",
            str(data_path("video/Megamind.avi")), "--loop", "--fps", "30",
            "--duration", f"{duration:.0f}", "--camera-id", "camera-1"]
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def run_demo(settings: Settings, *, duration: float = 120.0, speed: float = 1.0,
             keep_running: bool = False, console: Console | None = None) -> DemoResult:
    """Run the demo for ``duration`` seconds of agent traffic; returns what happened."""
    from ops.stack.lifecycle import down, up

    console = console or Console()
    started = time.monotonic()
    console.print(f"metrics of the agents: http://127.0.0.1:{start_metrics_server()}/metrics")
    console.print(f"[bold]selflearn demo[/] — data folder {settings.data_dir}")
    since = datetime.now(UTC)
    addresses = up(settings)
    who = as_operator(settings)  # the worker, the vision agent and the commands run as it
    print_trail_paths(settings, who, console)
    operator = who.operator
    worker: Spawned | None = None
    vision: subprocess.Popen | None = None
    clients: list[AgentClient] = []
    try:
        log = Path(settings.data_dir) / "logs" / "worker.log"
        offset = log.stat().st_size if log.exists() else 0
        worker = start_worker(operator, addresses, log)
        with console.status("starting the Faust worker (joins its consumer group) ..."):
            wait_ready(log, after=offset)
        vision = _start_vision(operator, addresses, duration)
        erasure: dict[str, Any] = {}
        result_agents = _run_agents(settings, addresses, duration, speed, clients, console,
                                    erasure, who)
        vision_stats = _finish_vision(vision)
        vision = None
        with console.status("letting the worker finish learning and forgetting ..."):
            time.sleep(3 * settings.checkpoint_s)
            _await_forgetting(addresses.redis_url, settings.topic_prefix, erasure)
        policies = PolicyStore(redis.Redis.from_url(addresses.redis_url),
                               settings.topic_prefix).all_policies()
        _sync_trail(settings)
        report, learned = _write_report(settings, addresses, console, since)
        if erasure.get("subject"):
            erasure["unreadable_events"] = _unreadable(addresses, erasure["subject"])
        result = DemoResult(result_agents, dict(policies), vision_stats, report,
                            time.monotonic() - started, learned, erasure or None)
        summarize(result, console)
        print_trail_paths(settings, who, console)
        return result
    finally:
        for c in clients:
            c.close(timeout=5)
        if vision is not None:
            vision.kill()
        if not keep_running:
            if worker is not None:
                stop(worker.pid, worker.create_time, timeout=15)
            stopped = down(settings)
            console.print(f"stopped: {', '.join(stopped) or 'nothing (servers were configured)'}")
        else:
            console.print("[yellow]--keep-running:[/] worker and servers left running; "
                          "`selflearn down` stops the servers")


def _erase_half_way(who: DemoIdentity, database_url: str,
                    progress: dict[str, AgentProgress], out: dict[str, Any]) -> None:
    """Erase a data subject the task estimator served (runs in its own thread)."""
    from schemas.protect import key_store

    keys = key_store(who.operator)
    try:  # the data folder outlives a run: the same data replays subjects erased before
        subjects = [s for s in progress.get("task-estimator", AgentProgress()).subjects[:1000]
                    if not keys.is_erased(s)]
    finally:
        getattr(keys, "close", lambda: None)()
    if not subjects:
        return
    out["subject"] = _settled_subject(database_url, subjects)
    erase_as_officer(who, out["subject"], "demo: right to erasure, half-way", out)


def _await_forgetting(redis_url: str, prefix: str, erasure: dict[str, Any],
                      timeout_s: float = 90.0) -> None:
    """Wait until the workers handled every copy of the erasure (a lagging worker is late).

    ``erase`` waits 30 s; on a loaded machine the worker may read the control
    topic later. Sets ``erasure["forgot"]`` to the workers' totals when they come.
    """
    from ops.report.trail import forgot_counts

    if not erasure.get("partitions") or erasure.get("forgot"):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            counts = forgot_counts(redis_url, prefix, erasure["subject"]) or {}
        except Exception:  # Redis busy: try again until the deadline
            counts = {}
        if counts.get("copies", 0) >= erasure["partitions"]:
            erasure["forgot"] = {k: v for k, v in counts.items() if k != "copies"}
            return
        time.sleep(1.0)


def _settled_subject(database_url: str, subjects: list[str], wait_s: float = 30.0) -> str:
    """The first of ``subjects`` whose task outcome the worker has archived (else the first).

    Events on different topics are not ordered against the erasure: one the
    worker has not read yet is applied after it forgot the subject (its text
    then reads ``[erased]``, but memory and learners index it again). A subject
    the worker is done with shows what erasure does to every projection.
    """
    import psycopg

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(database_url, connect_timeout=5) as conn:
                row = conn.execute("SELECT subject_id FROM events WHERE type = 'task.completed' "
                                   "AND subject_id = ANY(%s) LIMIT 1", (subjects,)).fetchone()
        except psycopg.Error:
            row = None
        if row:
            return str(row[0])
        time.sleep(1.0)
    return subjects[0]


def _unreadable(addresses: Addresses, subject: str) -> int:
    """Archived events of ``subject`` with personal text (now unreadable)."""
    import psycopg

    try:
        with psycopg.connect(addresses.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM events WHERE subject_id = %s AND type = "
                               "ANY(%s)", (subject, ["decision.requested", "task.estimated"]))
            return int(row.fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return -1


def _run_agents(settings: Settings, addresses: Addresses, duration: float, speed: float,
                clients: list[AgentClient], console: Console,
                erasure: dict[str, Any], who: DemoIdentity) -> dict[str, AgentProgress]:
    from schemas.protect import Protector, detector_for, key_store

    stop_flag = threading.Event()
    progress: dict[str, AgentProgress] = {}
    threads = []
    keys = key_store(settings) if settings.privacy else None
    for plan in plans(speed):
        # Personal text is sealed per data subject on each client's producer thread.
        protector = Protector(keys, detector_for(settings.pii_detector)) if keys else None
        client = AgentClient(plan.agent_id, bootstrap=addresses.kafka_bootstrap,
                             topic_prefix=settings.topic_prefix, decision_kind=plan.kind,
                             redis_url=addresses.redis_url, partitions=settings.partitions,
                             outbox_path=Path(settings.data_dir) / "outbox" / f"{plan.agent_id}.db",
                             on_decision=decision_observer(plan.agent_id), protector=protector)
        clients.append(client)
        progress[plan.agent_id] = AgentProgress()
        t = threading.Thread(target=_guarded, args=(RUNNERS[plan.kind], client, plan,
                                                    progress[plan.agent_id], stop_flag),
                             name=plan.agent_id, daemon=True)
        threads.append(t)
    for t in threads:
        t.start()
    columns = (TextColumn("{task.description:<22}"), BarColumn(),
               TextColumn("{task.completed:>6.0f} decisions"), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bars:
        clock = bars.add_task("demo time", total=duration, info="")
        ids = {a: bars.add_task(a, total=None, info="") for a in progress}
        end = time.monotonic() + duration
        eraser: threading.Thread | None = None
        while time.monotonic() < end and any(t.is_alive() for t in threads):
            if eraser is None and time.monotonic() > end - duration / 2:
                eraser = threading.Thread(target=_erase_half_way,
                                          args=(who, addresses.database_url, progress,
                                                erasure), daemon=True)
                eraser.start()
            for agent, task in ids.items():
                p = progress[agent]
                policy = clients[list(ids).index(agent)].engine.policy  # type: ignore[union-attr]
                info = (f"canary {policy.canary_percent:>3}% champion {policy.champion.name}"
                        if policy else "baseline")
                bars.update(task, completed=p.decisions, info=info)
            bars.update(clock, completed=duration - max(0.0, end - time.monotonic()))
            time.sleep(0.25)
    stop_flag.set()
    if eraser is not None:
        eraser.join(timeout=70)
    for t in threads:
        t.join(timeout=10)
    for c in clients:
        c.flush(timeout=30)
    return progress


def _guarded(runner: Any, client: AgentClient, plan: AgentPlan, progress: AgentProgress,
             stop_flag: threading.Event) -> None:
    try:
        runner(client, plan, progress, stop_flag)
    except Exception:  # an agent crashing must not take the demo down silently
        import logging

        logging.getLogger(__name__).exception("agent %s failed", plan.agent_id)


def _finish_vision(proc: subprocess.Popen) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _sync_trail(settings: Settings, settle_s: float = 5.0, limit_s: float = 20.0) -> None:
    """Copy the run's last transitions into the audit log and sign (the worker's tick, now).

    A transition reaches the archive only when the worker reads it back from its
    topic, so this repeats until nothing new came for ``settle_s`` seconds.
    """
    from ops.access.trail import Trail, tick

    trail = Trail.of(settings)
    start = quiet = time.monotonic()
    try:
        while time.monotonic() - quiet < settle_s and time.monotonic() - start < limit_s:
            if tick(trail):
                quiet = time.monotonic()
            time.sleep(1.0)
    except Exception as exc:  # the worker copies them at its next tick
        import logging

        logging.getLogger(__name__).warning("audit trail not synced: %s", exc)


def _write_report(settings: Settings, addresses: Addresses, console: Console,
                  since: datetime) -> tuple[Path | None, dict[str, dict[str, dict[str, float]]]]:
    """The HTML report, and the latest shadow metrics per agent and model."""
    from ops.report.generate import default_target, write_current

    path = default_target(settings)
    try:
        _, events = write_current(settings, addresses, path, title="selflearn demo",
                                  audit_since=since)
    except Exception as exc:  # the report is a by-product; the demo's result stands
        console.print(f"[yellow]report not written: {exc}[/]")
        return None, {}
    learned: dict[str, dict[str, dict[str, float]]] = {}
    for ev in sorted((e for e in events if e.type == "model.evaluated"),
                     key=lambda e: e.occurred_at):
        learned.setdefault(ev.producer, {})[ev.payload["model"]] = dict(ev.payload["metrics"])
    return path, learned


def summarize(result: DemoResult, console: Console) -> None:
    """The per-agent learning results, as a table."""
    table = Table(title=f"selflearn demo — {result.elapsed_s:.0f} s")
    for col in ("agent", "decisions", "outcomes", "served by", "live policy", "MAE of answers"):
        table.add_column(col)
    for agent, p in result.agents.items():
        pol = result.policies.get(agent)
        live = (f"{pol.mode}, canary {pol.canary_percent}%, champion {pol.champion.name}"
                f" v{pol.champion.version}" + (f", challenger {pol.challenger.name}"
                                               if pol.challenger else "")) if pol else "-"
        served = ", ".join(f"{k} {v}" for k, v in sorted(p.policies.items()))
        mae = f"{p.abs_error / p.outcomes:.2f}" if p.outcomes and p.abs_error else "-"
        table.add_row(agent, str(p.decisions), str(p.outcomes), served, live, mae)
    v = result.vision
    if v:
        table.add_row("camera-1 (vision)", f"{v.get('frames', 0)} frames", "-",
                      f"{v.get('fps', 0):.1f} fps, {v.get('dropped', 0)} dropped",
                      f"p99 frame {v.get('p99_frame_ms', 0):.1f} ms", "-")
    console.print(table)
    e = result.erasure
    if e:
        forgot = ", ".join(f"{k} {v}" for k, v in (e.get("forgot") or {}).items()) or \
            "no worker report yet"
        by = f" by {e['by']}" if e.get("by") else ""
        denied = f" (denied to {', '.join(e['denied'])} first)" if e.get("denied") else ""
        console.print(f"erased half-way{by}{denied}: subject {e.get('subject')} — "
                      f"{e.get('key_versions_destroyed', 0)} key version(s) destroyed, "
                      f"{e.get('unreadable_events', 0)} archived events now read '\\[erased]'; "
                      f"forgotten: {forgot}" + (f" [red]{e['error']}[/]" if "error" in e else ""))
    console.print(learning_table(result))
    if result.report:
        console.print(f"HTML report: {result.report}")


def learning_table(result: DemoResult) -> Table:
    """Shadow learning per agent: every model's prequential error, best first."""
    table = Table(title="shadow learning (prequential, on outcomes seen so far)")
    for col in ("agent", "metric", "champion", "models, best first (rolling error / all-time)"):
        table.add_column(col)
    for agent, models in sorted(result.learned.items()):
        pol = result.policies.get(agent)
        metric = "mae" if "mae" in next(iter(models.values())) else "log_loss"
        ranked = sorted(models.items(), key=lambda kv: kv[1].get(f"rolling_{metric}", 0.0))
        cells = ", ".join(f"{name} {m.get(f'rolling_{metric}', 0):.3f}/{m.get(metric, 0):.3f}"
                          for name, m in ranked)
        table.add_row(agent, metric, pol.champion.name if pol else "-", cells)
    return table
