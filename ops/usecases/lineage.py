"""Lineage: where a decision's model came from, and what a model version served.

For a ``decision.made`` (by event id or request id) :func:`decision_lineage`
gives the model version it names, and :func:`version_lineage` of that version:

- **snapshot**: where its bytes are now (Redis, else MLflow) and their SHA-256;
- **registry**: the MLflow model version and run that recorded it, with the
  offsets it was trained up to (``lineage.json``; the worker writes the applied
  offsets of the agent's partition when it registers a snapshot);
- **learned_from**: the archived events it learned from, as offset ranges per
  topic partition — the agent's ``decision.requested`` events and the outcomes
  (``task.completed`` / ``review.completed``) that answered them, up to the
  snapshot (by those offsets when the registry has them, else by the event
  time of the transition that took the snapshot);
- **transitions**: the archived promotion events that made it live (its canary
  steps, the 100 % step that made it champion, a rollback that restored it);
- **served**: the decisions it served, by policy, with the first few ids.

Model versions are ``name:N`` in decisions and ``name:vN`` in promotion events;
a 100 % step creates version N+1 of challenger N (``promoted`` names it; older
events predate that field). Versions ``name:0`` are baselines (fresh learners).

>>> same_version("knn_median:v3", "knn_median:3"), predecessor("knn_median:4")
(True, 'knn_median:3')
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ops.usecases.audit import SnapshotResolver, find_decision, split_version
from projections import archive_sql as q
from projections.archive import EventArchive
from projections.policy_store import PolicyStore
from projections.shadow import OUTCOMES

TRANSITION_TYPES = ("promotion.step_changed", "promotion.rolled_back", "promotion.refreshed")


def norm(version: str) -> str:
    """``name:N`` whether given as ``name:N`` or ``name:vN`` (promotion events)."""
    name, _, number = version.rpartition(":")
    return f"{name}:{number.lstrip('v')}" if name else version


def same_version(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and norm(a or "") == norm(b or "")


def predecessor(version: str) -> str:
    """The challenger version whose 100 % step created champion ``version``."""
    name, number = split_version(norm(version))
    return f"{name}:{number - 1}"


def _rows(archive: EventArchive, stmt: Any, params: Any) -> list[tuple[Any, ...]]:
    with archive.connection() as conn:
        rows = conn.execute(stmt, params).fetchall()
        conn.commit()
    return rows


def transitions(archive: EventArchive, agent_id: str,
                until: datetime | None = None) -> list[dict[str, Any]]:
    """Every archived promotion event of ``agent_id`` (up to ``until``), oldest first."""
    stmt = q.sql.SQL(
        "SELECT event_id, occurred_at, type, payload, src_topic, src_partition, src_offset "
        "FROM {t} WHERE type = ANY(%s) AND payload->>'agent_id' = %s "
        "AND occurred_at <= COALESCE(%s, 'infinity'::timestamptz) "
        "ORDER BY occurred_at, event_id").format(t=q.ident(archive.table))
    return [{"event_id": str(eid), "at": at.isoformat(), "type": kind, "payload": dict(p),
             "source": f"{topic}:{part}@{off}"}
            for eid, at, kind, p, topic, part, off in _rows(
                archive, stmt, (list(TRANSITION_TYPES), agent_id, until))]


def _role(version: str, t: dict[str, Any]) -> str | None:
    """What transition ``t`` did for ``version`` (None: nothing)."""
    p = t["payload"]
    if t["type"] == "promotion.refreshed":
        if same_version(p.get("champion"), version) or same_version(p.get("challenger"), version):
            return "snapshotted from its shadow copy (refresh)"
        if any(same_version(old, version) for old in str(p.get("replaces", "")).split()):
            return "replaced by a refreshed version"
        return None
    if t["type"] == "promotion.rolled_back":
        if same_version(p.get("challenger"), version):
            return "rolled back (lost its traffic)"
        if same_version(p.get("champion"), version) and p.get("from_step") == 100:
            return "restored as champion by a rollback"
        return None
    if p.get("to_step") == 100:
        if same_version(p.get("promoted"), version) or (
                "promoted" not in p and same_version(p.get("challenger"), predecessor(version))):
            return "became champion (100 %)"
        if same_version(p.get("challenger"), version):
            return "promoted to 100 % as a new champion version"
        return None
    if same_version(p.get("challenger"), version):
        return f"canary {p.get('from_step')} → {p.get('to_step')} %"
    if same_version(p.get("challenger"), predecessor(version)):
        return f"its predecessor's canary {p.get('from_step')} → {p.get('to_step')} %"
    return None


def _creation(version: str, ts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The transition that took this version's snapshot (entering canary, or 100 %)."""
    for t in ts:
        p = t["payload"]
        if t["type"] == "promotion.refreshed" and _role(version, t) == \
                "snapshotted from its shadow copy (refresh)":
            return t
        if t["type"] != "promotion.step_changed":
            continue
        if p.get("from_step") == 0 and same_version(p.get("challenger"), version):
            return t
        if p.get("to_step") == 100 and _role(version, t) == "became champion (100 %)":
            return t
    return None


def learned_from(archive: EventArchive, agent_id: str, kind: str,
                 offsets: dict[str, int] | None, until: datetime | None) -> dict[str, Any]:
    """Offset ranges per topic partition of the requests and outcomes the model learned."""
    outcome, key = next(((o, k) for o, (kd, k) in OUTCOMES.items() if kd == kind),
                        (None, None))
    if outcome is None:
        return {"bound": "unknown kind", "ranges": []}
    # With the registry's offsets the bound is exact per partition; else by event time.
    bound = q.sql.SQL(
        "(src_offset <= COALESCE((%(offsets)s::jsonb ->> (src_topic || ':' || src_partition))"
        "::bigint, -1))" if offsets
        else "occurred_at <= COALESCE(%(until)s, 'infinity'::timestamptz)")
    stmt = q.sql.SQL("""
        WITH req AS (
            SELECT src_topic, src_partition, src_offset, occurred_at,
                   payload->'context'->>%(key)s AS k
            FROM {t} WHERE producer = %(agent)s AND type = 'decision.requested' AND {b}),
        outc AS (
            SELECT src_topic, src_partition, src_offset, occurred_at FROM {t}
            WHERE type = %(outcome)s AND {b}
              AND payload->>%(key)s IN (SELECT k FROM req WHERE k IS NOT NULL))
        SELECT 'decision.requested', src_topic, src_partition, min(src_offset),
               max(src_offset), count(*), min(occurred_at), max(occurred_at)
        FROM req GROUP BY src_topic, src_partition
        UNION ALL
        SELECT %(outcome)s, src_topic, src_partition, min(src_offset), max(src_offset),
               count(*), min(occurred_at), max(occurred_at)
        FROM outc GROUP BY src_topic, src_partition
        ORDER BY 1, 2, 3""").format(t=q.ident(archive.table), b=bound)
    rows = _rows(archive, stmt, {"key": key, "agent": agent_id, "outcome": outcome,
                                 "offsets": orjson.dumps(offsets or {}).decode(),
                                 "until": until})
    return {
        "bound": ("offsets recorded with the registry run" if offsets else
                  f"event time <= {until.isoformat() if until else 'now'} (approximate)"),
        "ranges": [{"type": kind_, "partition": f"{topic}:{part}", "first_offset": lo,
                    "last_offset": hi, "events": n, "first_at": a.isoformat(),
                    "last_at": b.isoformat()}
                   for kind_, topic, part, lo, hi, n, a, b in rows],
    }


def served(archive: EventArchive, agent_id: str, version: str,
           limit: int = 20) -> dict[str, Any]:
    """The decisions ``version`` served: counts by policy and the first ``limit`` ids."""
    t = q.ident(archive.table)
    where = ("type = 'decision.made' AND producer = %s AND "
             "(payload->>'model_version' = %s OR payload->>'model_version' = %s)")
    name, number = split_version(norm(version))
    params = (agent_id, f"{name}:{number}", f"{name}:v{number}")
    by = _rows(archive, q.sql.SQL("SELECT payload->>'policy', count(*), min(occurred_at), "
                                  "max(occurred_at) FROM {t} WHERE " + where +
                                  " GROUP BY 1 ORDER BY 1").format(t=t), params)
    first = _rows(archive, q.sql.SQL("SELECT event_id, occurred_at, payload->>'request_id', "
                                     "payload->>'policy' FROM {t} WHERE " + where +
                                     " ORDER BY occurred_at, event_id LIMIT %s").format(t=t),
                  (*params, limit))
    return {"decisions": sum(r[1] for r in by),
            "by_policy": {p: {"decisions": n, "first_at": a.isoformat(),
                              "last_at": b.isoformat()} for p, n, a, b in by},
            "first": [{"decision_id": str(e), "at": a.isoformat(), "request_id": r,
                       "policy": p} for e, a, r, p in first]}


def registry_run(mlflow_uri: str | None, agent_id: str, version: str) -> dict[str, Any]:
    """The MLflow model version and run that registered ``version``, with its lineage.json."""
    from projections.registry import registered_name

    name, number = split_version(norm(version))
    if number == 0:
        return {"found": False, "why": "baseline version: a fresh learner, never registered"}
    if not mlflow_uri:
        return {"found": False, "why": "no MLflow registry configured"}
    # A progress bar per artifact would clutter the report (MLflow reads this at download).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
        model = registered_name(agent_id)
        versions = [mv for mv in client.search_model_versions(f"name='{model}'")
                    if mv.tags.get("learner") == name
                    and mv.tags.get("selflearn_version") == str(number)]
        if not versions:
            return {"found": False, "why": f"no version of {model} is tagged {name} v{number}"}
        mv = max(versions, key=lambda v: int(v.version))
        run_id = str(mv.run_id)
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, "model/lineage.json", tmp)
            lineage = orjson.loads(Path(path).read_bytes())
    except Exception as exc:  # noqa: BLE001 - an unreachable registry is reported, not fatal
        return {"found": False, "why": f"{type(exc).__name__}: {exc}"}
    return {"found": True, "model": f"models:/{model}/{mv.version}", "run_id": run_id,
            "run_name": run.info.run_name, "artifact_uri": run.info.artifact_uri,
            "registered_at": datetime.fromtimestamp(int(mv.creation_timestamp) / 1000)
            .isoformat(), "offsets": lineage.get("offsets") or {}}


def version_lineage(archive: EventArchive, store: PolicyStore, agent_id: str, version: str,
                    kind: str, *, mlflow_uri: str | None = None, until: datetime | None = None,
                    limit: int = 20) -> dict[str, Any]:
    """Snapshot, registry run, learned-from ranges, transitions and decisions of a version."""
    version = norm(version)
    ts = transitions(archive, agent_id, until)
    made_live = [{**t, "role": role} for t in ts if (role := _role(version, t))]
    created = _creation(version, ts)
    _, source = SnapshotResolver(store, mlflow_uri).get(agent_id, version)
    registry = registry_run(mlflow_uri, agent_id, version)
    if split_version(version)[1] == 0:
        learned: dict[str, Any] = {"bound": "baseline: learns nothing", "ranges": []}
    else:
        snap_at = datetime.fromisoformat(created["at"]) if created else None
        learned = learned_from(archive, agent_id, kind, registry.get("offsets") or None,
                               snap_at or until)
        if created is None:
            learned["note"] = ("no archived transition created this version (an agent's "
                               "first champion, snapshot at the worker's start)")
    return {"agent_id": agent_id, "model_version": version, "snapshot": source,
            "registry": registry, "created_by": created, "learned_from": learned,
            "transitions": made_live, "served": served(archive, agent_id, version, limit)}


def agent_kind(archive: EventArchive, agent_id: str) -> str:
    """The decision kind of an agent, from its newest archived decision.

    Raises
    ------
    LookupError
        The agent made no archived decision.
    """
    rows = _rows(archive, q.sql.SQL("SELECT payload->>'kind' FROM {t} WHERE producer = %s AND "
                                    "type = 'decision.made' ORDER BY occurred_at DESC LIMIT 1")
                 .format(t=q.ident(archive.table)), (agent_id,))
    if not rows:
        raise LookupError(f"no archived decision of agent {agent_id!r}")
    return str(rows[0][0])


def decision_lineage(archive: EventArchive, store: PolicyStore, ident: str, *,
                     mlflow_uri: str | None = None, limit: int = 20) -> dict[str, Any]:
    """Lineage of one decision (``decision.made`` event id or request id).

    Raises
    ------
    LookupError
        No such decision in the archive.
    """
    if archive.backend is None:
        archive.ensure_schema()
    (made, where), request = find_decision(archive, ident)
    p = made.payload
    decision = {"decision_id": str(made.event_id), "request_id": p["request_id"],
                "agent_id": made.producer, "at": made.occurred_at.isoformat(),
                "policy": p["policy"], "model_version": p["model_version"],
                "archived_at": where, "request_event": str(request[0].event_id)
                if request else None}
    model = version_lineage(archive, store, made.producer, p["model_version"], p["kind"],
                            mlflow_uri=mlflow_uri, until=made.occurred_at, limit=limit)
    return {"decision": decision, "model": model}
