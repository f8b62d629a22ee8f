"""Audit, replay and operator commands against real servers and a real worker.

1 000 real decisions (story-point rows) are served by trained knn_median /
token_quantile snapshots (50 % canary), archived by the worker, and every one
is recomputed bit for bit; tampering with the archive is caught. Manual
promote / rollback travel as ``operator.command`` through the worker.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from itertools import islice
from typing import Any

import orjson
import pytest
import redis
from typer.testing import CliRunner

from agents.client import AgentClient
from agents.decision import new_learner
from ops.access.rbac import RoleStore
from ops.cli.root import app
from ops.data import data_path
from ops.stack.processes import Spawned, stop
from ops.stack.workers import start_worker, wait_ready, worker_env
from ops.usecases.audit import audit_decision, audit_sample
from ops.usecases.lineage import registry_run
from projections.archive import EventArchive
from projections.datasets import iter_storypoints
from projections.feature_store import feature_key
from projections.policy_store import PolicyStore
from projections.registry import ModelRegistry
from schemas import decode
from schemas.addresses import Addresses
from schemas.catalog import topic_name
from schemas.policy import LivePolicy, ModelRef, model_key
from schemas.settings import Settings
from tests.kafka_util import read_topic

N = 1000
AUDITED = f"audit-est-{uuid.uuid4().hex[:6]}"  # the agent whose decisions are audited


@pytest.fixture(scope="module")
def run(settings: Settings, stack: Addresses,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One worker on a fresh topic prefix for this module."""
    tmp = tmp_path_factory.mktemp("audit")
    prefix = f"{settings.topic_prefix}-{uuid.uuid4().hex[:6]}"
    own = settings.model_copy(update={"topic_prefix": prefix, "data_dir": tmp})
    # Create MLflow's SQLite schema here: two processes migrating a fresh file at once
    # (the worker registering, this test reading) leave it broken.
    ModelRegistry(stack.mlflow_uri).client().search_experiments()
    worker: Spawned = start_worker(own, stack, tmp / "worker.log")
    try:
        wait_ready(worker.log)
        yield {"settings": own, "prefix": prefix, "tmp": tmp}
    finally:
        stop(worker.pid, worker.create_time, timeout=10)


def _trained(kind: str, name: str, rows: list[Any]) -> bytes:
    learner = new_learner(kind, name)
    for r in rows:
        learner.learn_one(r.x, r.storypoint)
    return learner.snapshot()


def _wait_archived(archive: EventArchive, agent: str, n: int, timeout: float = 60,
                   types: tuple[str, ...] = ("decision.made", "decision.requested")) -> None:
    """Wait until the archive holds ``n`` events of each of ``types`` from ``agent``."""
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        with archive.connection() as conn:
            got = conn.execute("SELECT count(*) FROM events WHERE producer = %s AND "
                               "type = ANY(%s)", (agent, list(types))).fetchone()[0]
            conn.commit()
        if got >= len(types) * n:
            return
        time.sleep(0.3)
    raise AssertionError(f"archive holds {got} of {len(types) * n} {types} events of {agent}")


def test_every_decision_recomputes_bit_for_bit_and_tampering_is_caught(
        run: dict[str, Any], stack: Addresses) -> None:
    prefix, tmp = run["prefix"], run["tmp"]
    agent = AUDITED
    rows = list(islice(iter_storypoints(data_path("storypoints")), 400 + N))
    train, serve = rows[:400], rows[400:]
    champ = ModelRef("knn_median", 901)
    canary = ModelRef("token_quantile", 902)
    champ, canary = (ModelRef(r.name, r.version, model_key(prefix, agent, r))
                     for r in (champ, canary))
    snaps = {champ: _trained("task_estimate", "knn_median", train),
             canary: _trained("task_estimate", "token_quantile", train)}
    r = redis.Redis.from_url(stack.redis_url)
    store = PolicyStore(r, prefix)
    # Revision 1000: the worker's own bootstrap of this agent (revision 0) cannot override it.
    assert store.publish(LivePolicy(agent, "task_estimate", "live", champ, canary, 50, 1000),
                         snaps)
    # The canary's snapshot also goes to the registry: the audit must find it there later.
    reg = ModelRegistry(stack.mlflow_uri)
    reg.register(agent, canary, snaps[canary], alias="challenger")

    client = AgentClient(agent, bootstrap=stack.kafka_bootstrap, topic_prefix=prefix,
                         outbox_path=tmp / f"{agent}.db", decision_kind="task_estimate",
                         redis_url=stack.redis_url)
    deadline = time.monotonic() + 20
    while (client.engine.policy is None or client.engine.policy.revision != 1000) \
            and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.1)
    served: dict[str, int] = {}
    for i, row in enumerate(serve):
        if i == 20:
            # The features of the outcomes so far, before going on: a worker busy
            # with other tests must not leave every decision without them (the
            # digests below must cover feature values too).
            assert client.flush(60)
            deadline = time.monotonic() + 90
            while not r.exists(feature_key(prefix, f"agent:{agent}")):
                assert time.monotonic() < deadline, "the worker computed no features"
                time.sleep(0.2)
            assert client.engine is not None and client.engine.refresh()
        ctx = {"task_id": row.issuekey, "project": row.project, "title": row.title,
               "description": row.description[:600]}
        d = client.decide(ctx)
        served[d.policy] = served.get(d.policy, 0) + 1
        client.emit("task.completed", {"task_id": row.issuekey, "project": row.project,
                                       "actual_points": row.storypoint,
                                       "duration_s": row.storypoint * 3600.0,
                                       "success": abs(d.output - row.storypoint) <= 2})
        time.sleep(0.002)  # let the read model refresh features a few times
    assert client.flush(60)
    client.close()
    assert served.get("champion", 0) > 300 and served.get("canary", 0) > 300, served

    archive = EventArchive(stack.database_url)
    _wait_archived(archive, agent, N)
    r.delete(canary.snapshot_key)  # Redis lost the canary: the audit falls back to MLflow

    began = time.monotonic()
    report = audit_sample(archive, store, n=N, seed=7, agent=agent, mlflow_uri=stack.mlflow_uri)
    seconds = time.monotonic() - began
    print(f"audit of {report['checked']} decisions in {seconds:.2f}s: {report['by_version']} "
          f"{report['by_source']}")
    assert report["checked"] == N
    assert report["mismatches"] == []
    assert report["match_rate"] == 1.0
    assert set(report["by_version"]) == {"knn_median:901", "token_quantile:902"}
    assert set(report["by_source"]) == {"redis", "mlflow"}
    # The decisions carried online feature values (part of every digest checked above).
    assert decode_features(archive, agent) == {"avg_completion_time", "success_rate",
                                               "complexity_score"}

    one = audit_decision(archive, store, _a_canary_request(archive, agent),
                         mlflow_uri=stack.mlflow_uri)
    assert one.match and one.lineage["snapshot"]["source"] == "mlflow"
    assert one.lineage["request_event"] and one.lineage["features"]["events"] > 0
    res = _cli(run, stack, "audit", one.request_id)
    assert res.exit_code == 0 and "mlflow" in res.output, res.output
    res = _cli(run, stack, "audit", "--sample", "50", "--agent", agent, "--seed", "3")
    assert res.exit_code == 0 and "match rate 1.0000 (50/50)" in res.output, res.output

    # Tampering: a copy of the agent's events, one output off by one ulp, one feature changed.
    table = f"tamper_{uuid.uuid4().hex[:8]}"
    copy = EventArchive(stack.database_url, table=table)
    copy.ensure_schema()
    try:
        with copy.connection() as conn:
            conn.execute(f"INSERT INTO {table} SELECT * FROM events WHERE producer = %s",
                         (agent,))
            ids = [row[0] for row in conn.execute(
                f"SELECT event_id FROM {table} WHERE type = 'decision.made' "
                "ORDER BY event_id LIMIT 2")]
            out = conn.execute(f"SELECT (payload->>'output')::float8 FROM {table} "
                               "WHERE event_id = %s", (ids[0],)).fetchone()[0]
            conn.execute(f"UPDATE {table} SET payload = jsonb_set(payload, '{{output}}', "
                         "%s::jsonb) WHERE event_id = %s",
                         (orjson.dumps(math.nextafter(out, math.inf)).decode(), ids[0]))
            conn.execute(f"UPDATE {table} SET payload = jsonb_set(payload, "
                         "'{features,success_rate}', '0.123') WHERE event_id = %s", (ids[1],))
            conn.commit()
        bad_output = audit_decision(copy, store, str(ids[0]), mlflow_uri=stack.mlflow_uri)
        assert not bad_output.match and not bad_output.output_match and bad_output.digest_match
        bad_inputs = audit_decision(copy, store, str(ids[1]), mlflow_uri=stack.mlflow_uri)
        assert not bad_inputs.match and not bad_inputs.digest_match
        tampered = audit_sample(copy, store, n=N, seed=7, mlflow_uri=stack.mlflow_uri)
        assert tampered["checked"] == N and tampered["matched"] == N - 2
        assert {m["decision_id"] for m in tampered["mismatches"]} == {str(i) for i in ids}
    finally:
        with copy.connection() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            conn.execute(f"DROP TABLE IF EXISTS {table}_cold")
            conn.commit()
        archive.close()
        reg.close()


def decode_features(archive: EventArchive, agent: str) -> set[str]:
    """Feature names the agent's archived decisions carried."""
    with archive.connection() as conn:
        rows = conn.execute("SELECT DISTINCT jsonb_object_keys(payload->'features') FROM events "
                            "WHERE producer = %s AND type = 'decision.made'", (agent,)).fetchall()
        conn.commit()
    return {row[0] for row in rows}


def _a_canary_request(archive: EventArchive, agent: str) -> str:
    with archive.connection() as conn:
        rid = conn.execute("SELECT payload->>'request_id' FROM events WHERE producer = %s AND "
                           "type = 'decision.made' AND payload->>'policy' = 'canary' "
                           "ORDER BY event_id DESC LIMIT 1",
                           (agent,)).fetchone()[0]
        conn.commit()
    return str(rid)


def _cli(run: dict[str, Any], stack: Addresses, *args: str, identity: str = "") -> Any:
    env = {**worker_env(run["settings"], stack), "SELFLEARN_IDENTITY": identity}
    return CliRunner().invoke(app, list(args), env=env)


def test_promote_and_rollback_go_through_the_worker(run: dict[str, Any], stack: Addresses,
                                                    ) -> None:
    prefix = run["prefix"]
    agent = "task-estimator"  # a live agent by default: it may be promoted by hand
    store = RoleStore(run["settings"].data_dir)
    assert store.grant("alice", "operator") and store.grant("bob", "operator")
    res = _cli(run, stack, "promote", agent, "--challenger", "knn_median", "--reason",
               "looks better", "--wait", "60", "--json", identity="alice")
    assert res.exit_code == 0, res.output
    promoted = orjson.loads(res.output)
    assert promoted["after"]["canary_percent"] == 5
    assert promoted["after"]["challenger"].startswith("knn_median:")
    res = _cli(run, stack, "rollback", agent, "--reason", "pager", "--wait", "60", "--json",
               identity="bob")
    assert res.exit_code == 0, res.output
    rolled = orjson.loads(res.output)
    assert rolled["after"]["revision"] > promoted["after"]["revision"]
    assert rolled["after"]["canary_percent"] == 0 and rolled["after"]["challenger"] is None
    # Nothing left to roll back: the worker refuses, the CLI says so and fails.
    res = _cli(run, stack, "rollback", agent, "--reason", "again", "--wait", "20",
               identity="bob")
    assert res.exit_code == 2 and "refused" in res.output, res.output

    control = read_topic(stack.kafka_bootstrap, topic_name(prefix, "control"), expect=5,
                         timeout=30)
    events = [(part, decode(value or b"")) for part, _, value in control]
    commands = [(p, e) for p, e in events if e.type == "operator.command"]
    # promotion.refreshed: the live models' new snapshots as they keep learning,
    # not a change of policy (docs/served.md)
    changes = [(p, e) for p, e in events
               if e.type.startswith("promotion.") and e.type != "promotion.refreshed"]
    assert len(commands) == 3 and len(changes) == 2, [e.type for _, e in events]
    assert {p for p, _ in commands} == {p for p, _ in changes}  # the agent's partition
    step, back = (e.payload for _, e in changes)
    assert step["manual"] and step["operator"] == "alice" and step["to_step"] == 5
    assert back["manual"] and back["operator"] == "bob" and back["reason"] == "pager"
    assert {e.producer for _, e in commands} == {"operator:alice", "operator:bob"}
    _transitions_audited(run, stack, {str(e.event_id): e for _, e in changes})
    # The worker registered the canary with the offsets it had applied (its lineage).
    partition = commands[0][0]
    deadline, reg = time.monotonic() + 60, registry_run(stack.mlflow_uri, agent, "-:0")
    while time.monotonic() < deadline:
        reg = registry_run(stack.mlflow_uri, agent, promoted["after"]["challenger"])
        if reg["found"] and f"{prefix}.control:{partition}" in reg["offsets"]:
            break
        time.sleep(1)
    assert reg["found"] and reg["offsets"], reg
    assert all(k.startswith(f"{prefix}.") and k.endswith(f":{partition}") for k in reg["offsets"])

    res = _cli(run, stack, "fleet", "--json")
    assert res.exit_code == 0, res.output
    fleet = orjson.loads(res.output)
    assert fleet["agents"][agent]["revision"] == rolled["after"]["revision"]
    assert isinstance(fleet["dead_letters"], int)
    # Committed offsets of the worker's group are readable on Tansu (AdminClient's are not).
    assert fleet["lag_error"] is None, fleet
    assert all(x["lag"] >= 0 for x in fleet["lag"]), fleet["lag"]
    assert {x["topic"] for x in fleet["lag"]} >= {topic_name(prefix, "control")}
    res = _cli(run, stack, "fleet")
    assert res.exit_code == 0 and agent in res.output and "dead letters: 0" in res.output, \
        res.output


def _transitions_audited(run: dict[str, Any], stack: Addresses, changes: dict[str, Any]) -> None:
    """The operators' requests and the worker's transitions are in the audit log."""
    deadline = time.monotonic() + 60
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:  # the worker archives the transitions asynchronously
        res = _cli(run, stack, "audit-log", "show", "--operation", "promotion.*", "--limit", "0",
                   "--json")
        assert res.exit_code == 0, res.output
        records = [r for r in orjson.loads(res.output[res.output.index("["):])
                   if r["ref"] in changes]
        if len(records) == len(changes):
            break
        time.sleep(0.5)
    assert sorted((r["operation"], r["actor"]) for r in records) == [
        ("promotion.rollback", "bob"), ("promotion.step", "alice")], records
    res = _cli(run, stack, "audit-log", "show", "--actor", "bob", "--limit", "0", "--json")
    bob = [(r["operation"], r["outcome"]) for r in orjson.loads(res.output)]
    # Newest first: the refused second rollback, the applied first one, its transition.
    assert ("rollback", "refused") in bob and ("rollback", "applied") in bob, bob
    assert ("promotion.rollback", "applied") in bob and bob.count(("rollback", "allowed")) == 2
    res = _cli(run, stack, "audit-log", "verify")
    assert res.exit_code == 0 and "audit log OK" in res.output, res.output


def test_replay_rebuilds_features_equal_to_live(run: dict[str, Any], stack: Addresses) -> None:
    # The archive table is shared by every topic prefix of the session: replay one agent
    # (the one the first test drove; its outcomes are archived with its decisions).
    _wait_archived(EventArchive(stack.database_url), AUDITED, N, types=("task.completed",))
    res = _cli(run, stack, "replay", "--agent", AUDITED, "--into", "features", "--json")
    assert res.exit_code == 0, res.output
    report = orjson.loads(res.output)
    assert report["by_type"]["task.completed"] == N
    assert report["entities"] == report["equal"] == 1
    assert report["different"] == [] and report["only_replay"] == []
