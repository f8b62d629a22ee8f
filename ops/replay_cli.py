"""``selflearn replay | audit | promote | rollback | fleet``: look back, verify, intervene.

Registered on :data:`ops.cli.app` when imported (``ops/cli.py`` imports this
module). Heavy modules (psycopg, aiokafka, mlflow) are imported inside the
commands so ``selflearn --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ops.cli import AsJson, DataDir, app, fail, load_settings
from ops.cli_support import policy_summary, print_table, redis_client, resolve_or_fail

WAIT_S = 30.0


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"not an ISO time: {text!r} (e.g. 2025-01-31T12:00:00Z)")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _archive(addresses: Any) -> Any:
    from projections.archive import ArchiveUnavailable, EventArchive

    archive = EventArchive(addresses.database_url)
    try:
        archive.ensure_schema()
    except ArchiveUnavailable as exc:
        fail(str(exc))
    return archive


# --------------------------------------------------------------------- replay

@app.command()
def replay(
    since: Annotated[str | None, typer.Option(help="From this event time (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this event time (ISO).")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this producer's events.")] = None,
    types: Annotated[list[str] | None, typer.Option("--type", help="Event type (repeat).")]
    = None,
    source: Annotated[str, typer.Option(help="archive | broker")] = "archive",
    into: Annotated[str | None, typer.Option(help="Rebuild a projection: features")] = None,
    prefix: Annotated[str | None, typer.Option(
        help="Redis prefix of the rebuilt projection (default <prefix>-replay-<time>).")]
    = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Read events back in event-time order; optionally rebuild the features and compare."""
    from projections.replay import read_broker, read_events
    from schemas.catalog import STREAMS, topic_name

    if source not in ("archive", "broker"):
        fail(f"--source must be archive or broker, not {source!r}")
    if into not in (None, "features"):
        fail(f"--into supports only 'features', not {into!r}")
    settings = load_settings(data_dir)
    addresses = resolve_or_fail(settings)
    lo, hi = _time(since), _time(until)
    began = time.monotonic()
    if source == "archive":
        events = read_events(_archive(addresses), since=lo, until=hi, producer=agent,
                             types=types)
    else:
        topics = [topic_name(settings.topic_prefix, s) for s in STREAMS]
        events = read_broker(addresses.kafka_bootstrap, topics, since=lo, until=hi,
                             producer=agent, types=types)
    by_type: Counter[str] = Counter()

    def counted() -> Any:
        for ev in events:
            by_type[ev.type] += 1
            yield ev

    report: dict[str, Any] = {"source": source}
    if into == "features":
        report.update(_rebuild(settings, addresses, counted(), prefix))
    else:
        for _ in counted():
            pass
    report.update(events=sum(by_type.values()), by_type=dict(sorted(by_type.items())),
                  seconds=round(time.monotonic() - began, 3))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    print_table(f"replay from {source}: {report['events']} events in {report['seconds']} s",
           ["type", "events"], [[k, v] for k, v in report["by_type"].items()])
    if into == "features":
        title = f"features rebuilt under {report['prefix']!r} vs live {settings.topic_prefix!r}"
        print_table(title,
               ["replayed entities", "equal", "different", "not live", "live, not replayed"],
               [[report["entities"], report["equal"], len(report["different"]),
                 len(report["only_replay"]), len(report["only_live"])]],
               caption="equal: every feature value within 1e-9 relative (sums in another "
                       "order); a filtered replay is compared on its own entities only")
        for ent in report["different"][:20]:
            typer.echo(f"different: {ent['entity']}: replay {ent['replay']} live {ent['live']}")


def _rebuild(settings: Any, addresses: Any, events: Any, prefix: str | None) -> dict[str, Any]:
    """Rebuild features into a fresh prefix and compare every entity with the live store."""
    import math

    from projections.feature_store import OnlineFeatureStore
    from projections.replay import rebuild_features

    r = redis_client(addresses.redis_url)
    prefix = prefix or f"{settings.topic_prefix}-replay-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    if prefix == settings.topic_prefix:
        fail("--prefix must differ from the live topic prefix (it would double-count)")
    fresh = OnlineFeatureStore(r, prefix=prefix)
    if fresh.entities():
        fail(f"Redis prefix {prefix!r} already holds features; choose a fresh --prefix")
    applied = rebuild_features(events, fresh)
    live = OnlineFeatureStore(r, prefix=settings.topic_prefix)
    mine, theirs = set(fresh.entities()), set(live.entities())
    equal, different = 0, []
    for entity in sorted(mine):
        a, b = fresh.get(entity), live.get(entity)
        va, vb = (a.values if a else {}), (b.values if b else {})
        if va.keys() == vb.keys() and all(
                math.isclose(va[k], vb[k], rel_tol=1e-9, abs_tol=1e-12) for k in va):
            equal += 1
        else:
            different.append({"entity": entity, "replay": va, "live": vb})
    return {"prefix": prefix, "applied": applied, "entities": len(mine),
            "equal": equal, "different": different,
            "only_replay": sorted(mine - theirs), "only_live": sorted(theirs - mine)}


# ---------------------------------------------------------------------- audit

@app.command()
def audit(
    decision_id: Annotated[str | None, typer.Argument(
        help="decision.made event id, or the request id")] = None,
    sample: Annotated[int | None, typer.Option(help="Audit N random decisions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    agent: Annotated[str | None, typer.Option(help="With --sample: only this agent.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Recompute a decision (or a sample) from the archive and its model snapshot.

    Exits with code 1 when any audited decision does not match.
    """
    from ops.audit import audit_decision, audit_sample, summary_row

    if (decision_id is None) == (sample is None):
        fail("give either a DECISION_ID or --sample N")
    settings = load_settings(data_dir)
    addresses = resolve_or_fail(settings)
    archive, r = _archive(addresses), redis_client(addresses.redis_url)
    if sample is not None:
        report = audit_sample(archive, r, sample, seed, agent=agent,
                              mlflow_uri=addresses.mlflow_uri, prefix=settings.topic_prefix)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            print_table(f"audit of {report['checked']} decisions", ["model version", "decisions"],
                   [[k, v] for k, v in report["by_version"].items()],
                   caption=f"snapshots from {report['by_source']}")
            typer.echo(f"match rate {report['match_rate']:.4f} "
                       f"({report['matched']}/{report['checked']})")
            for m in report["mismatches"][:20]:
                typer.echo(f"MISMATCH {m['decision_id']} ({m['model_version']}): {m['reason']}")
        if report["matched"] != report["checked"]:
            raise typer.Exit(1)
        return
    assert decision_id is not None
    try:
        result = audit_decision(archive, r, decision_id, mlflow_uri=addresses.mlflow_uri,
                                prefix=settings.topic_prefix)
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        rows = [[k, v] for k, v in summary_row(result).items()]
        rows += [["reason", result.reason or "-"]]
        rows += [[f"lineage.{k}", json.dumps(v, default=str) if isinstance(v, dict) else v]
                 for k, v in result.lineage.items()]
        print_table(f"audit of decision {result.decision_id} ({result.agent_id})",
               ["field", "value"], rows)
    if not result.match:
        raise typer.Exit(1)


# --------------------------------------------------------- promote / rollback

async def _send_keyed(settings: Any, bootstrap: str, topic: str, key: bytes,
                      value: bytes) -> None:
    """Produce one record keyed like the SDK does (so it lands in the agent's partition)."""
    from aiokafka import AIOKafkaProducer

    from streams.topics import ensure_topics

    tls = settings.kafka_ssl_context()
    extra = {"security_protocol": "SSL", "ssl_context": tls} if tls else {}
    await ensure_topics(bootstrap, [topic], settings.partitions, tls)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                request_timeout_ms=10_000, **extra)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def send_command(settings: Any, agent_id: str, action: str, operator: str, reason: str,
                 challenger: str | None = None, wait_s: float = WAIT_S) -> dict[str, Any]:
    """Emit ``operator.command`` keyed by ``agent_id``; wait for the live policy to change.

    Returns ``{"command", "before", "after", "seconds"}``; raises TimeoutError
    (or RuntimeError when the worker refused the command).
    """
    from projections.policy_store import PolicyStore
    from schemas import encode, new_event
    from schemas.catalog import topic_name

    addresses = resolve_or_fail(settings)
    store = PolicyStore(redis_client(addresses.redis_url), settings.topic_prefix)
    before = store.get(agent_id)
    payload = {"agent_id": agent_id, "action": action, "operator": operator, "reason": reason}
    if challenger:
        payload["challenger"] = challenger
    event = new_event("operator.command", payload, producer=f"operator:{operator}",
                      subject_id=None)
    began = time.monotonic()
    asyncio.run(_send_keyed(settings, addresses.kafka_bootstrap,
                            topic_name(settings.topic_prefix, "control"),
                            agent_id.encode(), encode(event)))
    start_rev = before.revision if before else -1
    archive = None
    deadline = began + wait_s
    while time.monotonic() < deadline:
        after = store.get(agent_id)
        if after is not None and after.revision > start_rev:
            return {"command": str(event.event_id), "before": policy_summary(before),
                    "after": policy_summary(after), "seconds": round(time.monotonic() - began, 3)}
        archive = archive or _archive(addresses)
        if _refused(archive, str(event.event_id)):
            raise RuntimeError(f"the worker refused {action} of {agent_id} (command "
                               f"{event.event_id}); its log says why (e.g. log-only agent, "
                               "unknown challenger, nothing to roll back)")
        time.sleep(0.25)
    raise TimeoutError(f"no new live policy for {agent_id} within {wait_s:.0f} s after command "
                       f"{event.event_id}: is a worker running (`selflearn worker`), and is "
                       f"it caught up (`selflearn fleet`)?")


def _refused(archive: Any, command_id: str) -> bool:
    from projections import archive_sql as q

    stmt = q.sql.SQL("SELECT 1 FROM {t} WHERE type = 'model.evaluated' AND causation_id = %s "
                     "LIMIT 1").format(t=q.ident(archive.table))
    with archive.connection() as conn:
        hit = conn.execute(stmt, (command_id,)).fetchone()
        conn.commit()
    return hit is not None


def _command(action: str, agent_id: str, operator: str, reason: str, challenger: str | None,
             wait: float, data_dir: str | None, as_json: bool) -> None:
    settings = load_settings(data_dir)
    try:
        out = send_command(settings, agent_id, action, operator, reason, challenger, wait)
    except (TimeoutError, RuntimeError) as exc:
        fail(str(exc), code=2)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    rows = [[k, (out["before"] or {}).get(k, "-"), out["after"][k]] for k in out["after"]]
    print_table(f"{action} {agent_id} by {operator}: applied in {out['seconds']} s",
           ["field", "before", "after"], rows, caption=f"command event {out['command']}")


Operator = Annotated[str, typer.Option("--operator", help="Who asks (recorded in the event).")]
Wait = Annotated[float, typer.Option("--wait", help="Seconds to wait for the new policy.")]


@app.command()
def promote(
    agent_id: Annotated[str, typer.Argument(help="The agent whose canary moves up.")],
    operator: Operator,
    challenger: Annotated[str | None, typer.Option(help="Model to promote from shadow.")]
    = None,
    reason: Annotated[str, typer.Option(help="Why.")] = "manual promotion",
    wait: Wait = WAIT_S,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Move an agent's canary one step up now (5 → 25 → 50 → 100 %)."""
    _command("promote", agent_id, operator, reason, challenger, wait, data_dir, as_json)


@app.command()
def rollback(
    agent_id: Annotated[str, typer.Argument(help="The agent to roll back.")],
    operator: Operator,
    reason: Annotated[str, typer.Option(help="Why (required, it is the audit record).")],
    wait: Wait = WAIT_S,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Send an agent back to its last champion now."""
    _command("rollback", agent_id, operator, reason, None, wait, data_dir, as_json)
