"""Audit a decision: recompute it from the archive and the model snapshot, bit for bit.

A ``decision.made`` event carries the model version, the feature values the
engine used and a digest of its inputs; its ``decision.requested`` (the event
it was caused by) carries the context. With the model snapshot of that
version the answer can be recomputed exactly as
:meth:`agents.decision.DecisionEngine.decide` computed it::

    new_learner(kind, name, snapshot).predict_one({**context, **features})

and compared with what was served (``==`` and ``float.hex``), together with
:func:`agents.decision.inputs_digest` of the reconstructed inputs.

Snapshots come from Redis (:meth:`PolicyStore.load_model`) first, then from
the MLflow registry (artifact ``model/snapshot.json`` of the version tagged
with the learner name and selflearn version); the baseline versions
(``constant:0``, ``size_heuristic:0``) are fresh learners. A snapshot found
nowhere is an audit failure, not a guess.

>>> split_version("knn_median:3")
('knn_median', 3)
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.decision import inputs_digest, new_learner
from projections import archive_sql as q
from projections.archive import EventArchive
from projections.policy_store import PolicyStore
from schemas import Envelope
from schemas.cipher import FieldCipher
from schemas.envelope import thaw
from schemas.policy import ModelRef, model_key
from schemas.protect import reveal

Stored = tuple[Envelope, str]  # (event, "topic:partition@offset")
FEATURE_TYPES = ("task.completed", "review.completed", "review.requested")


def split_version(version: str) -> tuple[str, int]:
    """``"knn_median:3"`` → ``("knn_median", 3)``."""
    name, _, number = version.rpartition(":")
    return name, int(number)


@dataclass
class AuditResult:
    """The verdict on one decision, with everything needed to reproduce it."""

    decision_id: str
    request_id: str
    agent_id: str
    kind: str
    model_version: str
    policy: str
    output: float
    recomputed: float | None
    logged_digest: str
    recomputed_digest: str | None
    output_match: bool
    digest_match: bool
    reason: str = ""  # why it does not match ("" when it does)
    lineage: dict[str, Any] = field(default_factory=dict)
    # Personal inputs whose subject was erased: the decision cannot be recomputed,
    # and that is reported as such, not as a mismatch.
    inputs_erased: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        return self.output_match and self.digest_match

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats also as ``float.hex``)."""
        out = asdict(self)
        out["match"] = self.match
        out["output_hex"] = float(self.output).hex()
        out["recomputed_hex"] = None if self.recomputed is None else self.recomputed.hex()
        return out


class SnapshotResolver:
    """Model snapshots by ``(agent, version)``: Redis, then MLflow; cached per audit run."""

    def __init__(self, store: PolicyStore, mlflow_uri: str | None = None) -> None:
        self.store = store
        self.mlflow_uri = mlflow_uri
        self._cache: dict[tuple[str, str], tuple[bytes | None, dict[str, Any]]] = {}
        self._client: Any = None

    def get(self, agent_id: str, version: str) -> tuple[bytes | None, dict[str, Any]]:
        """Snapshot bytes (``None`` for a baseline) and where they came from."""
        key = (agent_id, version)
        if key not in self._cache:
            self._cache[key] = self._find(agent_id, version)
        return self._cache[key]

    def _find(self, agent_id: str, version: str) -> tuple[bytes | None, dict[str, Any]]:
        name, number = split_version(version)
        if number == 0:
            return None, {"ref": version, "source": "baseline (fresh learner)"}
        ref = ModelRef(name, number)
        data = self.store.load_model(agent_id, ref)
        if data is not None:
            return data, {"ref": version, "source": "redis",
                          "key": model_key(self.store.prefix, agent_id, ref),
                          "sha256": hashlib.sha256(data).hexdigest()}
        errors: list[str] = []
        if self.mlflow_uri:
            try:
                found = self._mlflow(agent_id, name, number)
            except Exception as exc:  # noqa: BLE001 - a registry outage is an audit finding
                errors.append(f"mlflow: {type(exc).__name__}: {exc}")
                found = None
            if found is not None:
                data, where = found
                return data, {"ref": version, "source": "mlflow", "uri": where,
                              "sha256": hashlib.sha256(data).hexdigest()}
        return None, {"ref": version, "source": "missing", "errors": errors}

    def _mlflow(self, agent_id: str, name: str, number: int) -> tuple[bytes, str] | None:
        from projections.registry import registered_name

        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.mlflow_uri,
                                        registry_uri=self.mlflow_uri)
        model = registered_name(agent_id)
        versions = [mv for mv in self._client.search_model_versions(f"name='{model}'")
                    if mv.tags.get("learner") == name
                    and mv.tags.get("selflearn_version") == str(number)]
        if not versions:
            return None
        mv = max(versions, key=lambda v: int(v.version))
        with tempfile.TemporaryDirectory() as tmp:
            path = self._client.download_artifacts(mv.run_id, "model/snapshot.json", tmp)
            return Path(path).read_bytes(), f"models:/{model}/{mv.version}"


def _select(archive: EventArchive, where: str, params: Iterable[Any]) -> list[Stored]:
    cols = q.sql.SQL(", ").join(q.ident(c) for c in q.READ_COLUMNS)
    stmt = q.sql.SQL("SELECT {c} FROM {t} WHERE " + where).format(
        c=cols, t=q.ident(archive.table))
    with archive.connection() as conn:
        rows = conn.execute(stmt, list(params)).fetchall()
        conn.commit()
    return [(q.envelope_from_row(r), f"{r[9]}:{r[10]}@{r[11]}") for r in rows]


def find_decision(archive: EventArchive, ident: str) -> tuple[Stored, Stored | None]:
    """The archived ``decision.made`` (by event id or request id) and its request.

    Raises
    ------
    LookupError
        No ``decision.made`` with that event id or request id is archived.
    """
    try:
        made = _select(archive, "type = 'decision.made' AND event_id = %s", [uuid.UUID(ident)])
    except ValueError:
        made = []
    if not made:
        made = _select(archive, "type = 'decision.made' AND payload->>'request_id' = %s",
                       [ident])
    if not made:
        raise LookupError(f"no decision.made with event id or request id {ident!r} "
                          f"in the archive table {archive.table!r}")
    decision = made[0]
    return decision, _requests(archive, [decision[0]]).get(decision[0].event_id)


def _requests(archive: EventArchive, decisions: list[Envelope]) -> dict[uuid.UUID, Stored]:
    """The ``decision.requested`` of each decision: by causation id, else by request id."""
    by_cause: dict[str, Envelope] = {d.causation_id: d for d in decisions if d.causation_id}
    out: dict[uuid.UUID, Stored] = {}
    if by_cause:
        ids = [uuid.UUID(c) for c in by_cause]
        for req in _select(archive, "type = 'decision.requested' AND event_id = ANY(%s)",
                           [ids]):
            out[by_cause[str(req[0].event_id)].event_id] = req
    rest = {d.payload["request_id"]: d for d in decisions if d.event_id not in out}
    if rest:
        for req in _select(archive, "type = 'decision.requested' AND "
                           "payload->>'request_id' = ANY(%s)", [list(rest)]):
            d = rest[req[0].payload["request_id"]]
            if req[0].producer == d.producer:
                out.setdefault(d.event_id, req)
    return out


def check(decision: Stored, request: Stored | None, snapshots: SnapshotResolver,
          cipher: FieldCipher | None = None) -> AuditResult:
    """Recompute one decision and compare it with what was served.

    The request's personal text is opened with ``cipher`` (the engine saw it in
    clear); if its subject was erased the result says so in ``inputs_erased``.
    """
    made, made_at = decision
    p = made.payload
    version = p["model_version"]
    result = AuditResult(
        decision_id=str(made.event_id), request_id=p["request_id"], agent_id=made.producer,
        kind=p["kind"], model_version=version, policy=p["policy"], output=float(p["output"]),
        recomputed=None, logged_digest=p["inputs_digest"], recomputed_digest=None,
        output_match=False, digest_match=False,
        lineage={"decision_event": str(made.event_id), "decision_at": made_at,
                 "occurred_at": made.occurred_at.isoformat()})
    if request is None:
        result.reason = "decision.requested not found in the archive"
        return result
    req, req_at = request
    result.lineage.update(request_event=str(req.event_id), request_at=req_at)
    opened = reveal(req, cipher)
    if opened.erased:
        result.inputs_erased = opened.erased
        result.reason = (f"inputs erased (subject {req.subject_id}): "
                         f"{', '.join(opened.erased)}; not recomputable")
        return result
    context, features = opened.payload["context"], thaw(p["features"])
    result.recomputed_digest = inputs_digest(context, features, version)
    result.digest_match = result.recomputed_digest == result.logged_digest
    snapshot, source = snapshots.get(made.producer, version)
    result.lineage["snapshot"] = source
    if source["source"] == "missing":
        result.reason = f"snapshot of {version} found neither in Redis nor in MLflow"
        return result
    name, _ = split_version(version)
    try:
        learner = new_learner(p["kind"], name, snapshot)
        result.recomputed = float(learner.predict_one({**context, **features}))
    except Exception as exc:  # noqa: BLE001 - a broken snapshot is an audit finding
        result.reason = f"recomputation failed: {type(exc).__name__}: {exc}"
        return result
    result.output_match = (result.recomputed == result.output
                           and result.recomputed.hex() == result.output.hex())
    reasons = []
    if not result.output_match:
        reasons.append(f"output {result.output!r} != recomputed {result.recomputed!r}")
    if not result.digest_match:
        reasons.append("inputs digest differs (context, features or version changed)")
    result.reason = "; ".join(reasons)
    return result


def _store(redis_or_policy_store: Any, prefix: str) -> PolicyStore:
    if isinstance(redis_or_policy_store, PolicyStore):
        return redis_or_policy_store
    return PolicyStore(redis_or_policy_store, prefix)


def feature_lineage(archive: EventArchive, agent_id: str, until: str) -> dict[str, Any]:
    """How many of the agent's feature events were archived up to the decision."""
    stmt = q.sql.SQL("SELECT count(*), max(occurred_at) FROM {t} WHERE producer = %s "
                     "AND type = ANY(%s) AND occurred_at <= %s").format(
        t=q.ident(archive.table))
    with archive.connection() as conn:
        row = conn.execute(stmt, (agent_id, list(FEATURE_TYPES), until)).fetchone()
        n, last = row if row is not None else (0, None)
        conn.commit()
    return {"entity": f"agent:{agent_id}", "types": list(FEATURE_TYPES), "until": until,
            "events": int(n), "last_event_at": last.isoformat() if last else None,
            "note": "features are the online values the engine held (refreshed every 0.5 s),"
                    " so they may trail the newest of these events"}


def audit_decision(archive: EventArchive, redis_or_policy_store: Any,
                   decision_id_or_request_id: str, *, mlflow_uri: str | None = None,
                   prefix: str = "selflearn", cipher: FieldCipher | None = None) -> AuditResult:
    """Audit one decision given its ``decision.made`` event id or its request id.

    Parameters
    ----------
    archive
        The event archive holding the decision and its request.
    redis_or_policy_store
        A :class:`PolicyStore`, or a ``redis.Redis`` (then ``prefix`` names its keys).
    mlflow_uri
        Registry to fall back to when Redis no longer holds the snapshot.
    """
    if archive.backend is None:
        archive.ensure_schema()
    decision, request = find_decision(archive, decision_id_or_request_id)
    resolver = SnapshotResolver(_store(redis_or_policy_store, prefix), mlflow_uri)
    result = check(decision, request, resolver, cipher)
    result.lineage["features"] = feature_lineage(
        archive, result.agent_id, decision[0].occurred_at.isoformat())
    return result


def audit_sample(archive: EventArchive, redis_or_policy_store: Any, n: int, seed: int = 0, *,
                 agent: str | None = None, mlflow_uri: str | None = None,
                 prefix: str = "selflearn", cipher: FieldCipher | None = None,
                 topics_of: str | None = None) -> dict[str, Any]:
    """Audit ``n`` decisions drawn at random (reproducibly, by ``seed``) from the archive.

    ``topics_of``: only decisions read from that topic prefix's topics (an
    archive shared by several installations, as in the tests).

    Returns ``{"checked", "matched", "match_rate", "mismatches", "by_version",
    "by_policy", "by_source", "erased"}``; ``mismatches`` holds the failed results as
    dicts; ``erased`` counts decisions whose inputs were erased (not mismatches).
    """
    if archive.backend is None:
        archive.ensure_schema()
    where, params = "type = 'decision.made'", []
    if agent is not None:
        where, params = where + " AND producer = %s", [agent]
    if topics_of is not None:
        where, params = where + " AND src_topic LIKE %s", [*params, f"{topics_of}.%"]
    stmt = q.sql.SQL("SELECT event_id FROM {t} WHERE " + where + " ORDER BY event_id").format(
        t=q.ident(archive.table))
    with archive.connection() as conn:
        ids = [r[0] for r in conn.execute(stmt, params).fetchall()]
        conn.commit()
    chosen = random.Random(seed).sample(ids, min(n, len(ids)))
    resolver = SnapshotResolver(_store(redis_or_policy_store, prefix), mlflow_uri)
    results: list[AuditResult] = []
    for i in range(0, len(chosen), 500):
        made = _select(archive, "type = 'decision.made' AND event_id = ANY(%s)",
                       [chosen[i:i + 500]])
        reqs = _requests(archive, [m[0] for m in made])
        results.extend(check(m, reqs.get(m[0].event_id), resolver, cipher) for m in made)
    matched = sum(r.match for r in results)
    erased = sum(bool(r.inputs_erased) for r in results)
    return {
        "checked": len(results), "matched": matched, "erased": erased,
        "match_rate": matched / len(results) if results else 0.0,
        "by_version": _counts(r.model_version for r in results),
        "by_policy": _counts(r.policy for r in results),
        "by_source": _counts(r.lineage.get("snapshot", {}).get("source", "-") for r in results),
        "mismatches": [r.as_dict() for r in results if not r.match and not r.inputs_erased],
    }


def _counts(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def summary_row(result: AuditResult) -> Mapping[str, str]:
    """Short strings of a result for a table."""
    return {"match": "yes" if result.match else "NO", "output": repr(result.output),
            "recomputed": repr(result.recomputed), "model": result.model_version,
            "policy": result.policy, "logged digest": result.logged_digest,
            "recomputed digest": str(result.recomputed_digest)}
