"""The deterministic decision engine: answers from memory, learns nothing itself.

``decide(context)`` reads one immutable :class:`ReadModel` (live policy,
restored model snapshots, online features) that a background thread swaps in
as Redis changes. Nothing on the call path touches the network, so a slow or
dead Redis, broker or registry cannot slow a decision. The same context, the
same features and the same model version give the same output, bit for bit;
the answer carries the model version and a digest of its inputs so an
auditor can recompute it.

Circuit breaker: when the read model is older than ``stale_after_s`` (Redis
unreachable, refresher stuck) the engine keeps serving the last good policy
and labels the decision ``fallback``; before any policy was ever loaded it
serves the rule-based baseline (``baseline``). Never an exception, never a wait.

Refused policies: a policy whose model snapshots cannot be restored — above
all a sealed snapshot whose HMAC does not match (:class:`SnapshotTampered`:
changed in Redis, or written with another key) — is refused as a whole. The
engine logs it, records it in :attr:`DecisionEngine.refused` and keeps serving
its last good policy (or the baseline if it never had one); it does not retry
that revision.

>>> engine = DecisionEngine("code-reviewer", "review_risk", redis_url=None)
>>> d = engine.decide({"change_id": "c1", "project": "Ant", "la": 0.5, "lt": 100, "nf": 2},
...                   request_id="r1")
>>> d.policy, d.model_version, d.output
('baseline', 'size_heuristic:0', 52.0)
>>> engine.decide(d.context, request_id="r1").inputs_digest == d.inputs_digest
True
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from projections.feature_store import feature_key, parse_counters
from projections.features import values
from projections.learners import REVIEW_LEARNERS, TASK_LEARNERS, Learner, learner_factory
from projections.redis_client import redis_client
from projections.sealing import SnapshotTampered
from schemas.policy import LivePolicy, ModelRef, policy_key

log = logging.getLogger(__name__)

BASELINES = {"task_estimate": "constant", "review_risk": "size_heuristic"}
LEARNERS = {"task_estimate": TASK_LEARNERS, "review_risk": REVIEW_LEARNERS}
MAX_REFUSED = 100  # refused revisions remembered (a refused revision is never retried)


def new_learner(kind: str, name: str, snapshot: bytes | None = None) -> Learner:
    """A learner of ``kind`` by name (or River spec), restored from ``snapshot`` when given.

    Raises :class:`SnapshotTampered` when a sealed snapshot fails its MAC.
    """
    if kind not in LEARNERS:
        raise KeyError(f"unknown decision kind {kind!r}")
    factory = learner_factory(kind, name)
    if snapshot is None:
        return factory()
    restore = type(factory()).restore
    return restore(snapshot)


def inputs_digest(context: Mapping[str, Any], features: Mapping[str, float], version: str) -> str:
    """BLAKE2b of the canonical JSON of everything a decision depends on."""
    blob = orjson.dumps({"context": context, "features": features, "model": version},
                        option=orjson.OPT_SORT_KEYS, default=_plain)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not part of a decision's inputs")


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer, with everything needed to audit it."""

    request_id: str
    kind: str
    output: float
    model_version: str
    policy: str  # champion | canary | fallback | baseline
    inputs_digest: str
    context: Mapping[str, Any]
    features: Mapping[str, float]
    latency_us: float


@dataclass(frozen=True)
class ReadModel:
    """Everything ``decide`` needs, immutable; replaced wholesale on refresh."""

    policy: LivePolicy
    champion: Learner
    challenger: Learner | None
    features: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    loaded_at: float = 0.0


def _version(ref: ModelRef) -> str:
    return f"{ref.name}:{ref.version}"


class DecisionEngine:
    """One agent's in-process read side."""

    def __init__(
        self,
        agent_id: str,
        kind: str,
        *,
        redis_url: str | None,
        prefix: str = "selflearn",
        refresh_s: float = 0.5,
        stale_after_s: float = 5.0,
        on_decision: Callable[[Decision], object] | None = None,
        freeze_gc: bool = True,
    ) -> None:
        if kind not in LEARNERS:
            raise ValueError(f"unknown decision kind {kind!r}; expected one of {sorted(LEARNERS)}")
        self.agent_id = agent_id
        self.kind = kind
        self.prefix = prefix
        self.stale_after_s = stale_after_s
        self._baseline = new_learner(kind, BASELINES[kind])
        self._model: ReadModel | None = None
        self._on_decision = on_decision
        self._freeze_gc = freeze_gc
        self.refresh_failures = 0
        self.refused: dict[int, str] = {}  # policy revision -> why its models were refused
        self._stop = threading.Event()
        self._redis: Any = None
        self._redis_url = redis_url
        if redis_url is not None:
            self._thread = threading.Thread(
                target=self._refresh_loop, args=(refresh_s,), name=f"readmodel-{agent_id}",
                daemon=True,
            )
            self._thread.start()

    # -- the hot path --------------------------------------------------------------
    def decide(self, context: Mapping[str, Any], *, request_id: str) -> Decision:
        """Answer from the in-process read model; never raises, never waits."""
        start = time.perf_counter()
        model = self._model
        features: Mapping[str, float] = {}
        if model is None:
            learner, ref, label = self._baseline, ModelRef(BASELINES[self.kind], 0), "baseline"
        else:
            features = model.features
            canary = model.challenger is not None and model.policy.routes_to_canary(request_id)
            if canary:
                learner, ref = model.challenger, model.policy.challenger  # type: ignore[assignment]
            else:
                learner, ref = model.champion, model.policy.champion
            label = "canary" if canary else "champion"
            if time.monotonic() - model.loaded_at > self.stale_after_s:
                label = "fallback"
        x = {**context, **features}
        try:
            output = float(learner.predict_one(x))
        except Exception:  # a broken model must not break the agent
            log.exception("%s: model %s failed; serving the baseline", self.agent_id, ref)
            learner, ref, label = self._baseline, ModelRef(BASELINES[self.kind], 0), "baseline"
            output = float(learner.predict_one(x))
        version = _version(ref)
        decision = Decision(
            request_id=request_id, kind=self.kind, output=output, model_version=version,
            policy=label, inputs_digest=inputs_digest(context, features, version),
            context=context, features=features,
            latency_us=(time.perf_counter() - start) * 1e6,
        )
        if self._on_decision is not None:
            self._on_decision(decision)
        return decision

    # -- the read model, refreshed in the background ---------------------------------
    @property
    def policy(self) -> LivePolicy | None:
        return self._model.policy if self._model else None

    def install(self, policy: LivePolicy, snapshots: Mapping[ModelRef, bytes | None],
                features: Mapping[str, float]) -> None:
        """Build and swap in a new read model (also used by replay and audit).

        A policy whose models cannot be restored is refused (see the module
        docstring): the current read model stays, with the new features.
        """
        current = self._model
        if policy.revision in self.refused:
            if current is None:
                return
            policy = current.policy
        champion = challenger = None
        if current is not None and current.policy.revision == policy.revision:
            champion, challenger = current.champion, current.challenger
        if champion is None:
            try:
                champion = new_learner(self.kind, policy.champion.name,
                                       snapshots.get(policy.champion))
                if policy.challenger is not None:
                    challenger = new_learner(self.kind, policy.challenger.name,
                                             snapshots.get(policy.challenger))
            except Exception as exc:  # a forged or broken model must never be served
                self._refuse(policy, current, exc)
                if current is None:
                    return
                policy, champion, challenger = current.policy, current.champion, current.challenger
        fresh = current is None or champion is not current.champion
        self._model = ReadModel(policy, champion, challenger,
                                MappingProxyType(dict(features)), time.monotonic())
        if fresh and self._freeze_gc:
            # Model state is large and long-lived; letting the cyclic collector
            # walk it costs milliseconds on the decision path. Frozen objects are
            # still freed by reference counting when a newer model replaces them.
            gc.freeze()

    def _refuse(self, policy: LivePolicy, current: ReadModel | None, exc: Exception) -> None:
        keeping = (f"keeping revision {current.policy.revision}" if current is not None
                   else "serving the baseline")
        why = ("its snapshot failed authentication" if isinstance(exc, SnapshotTampered)
               else "its models could not be restored")
        log.error("%s: policy revision %d refused (%s), %s: %s", self.agent_id,
                  policy.revision, why, keeping, exc)
        self.refused[policy.revision] = f"{type(exc).__name__}: {exc}"
        while len(self.refused) > MAX_REFUSED:
            del self.refused[next(iter(self.refused))]

    def refresh(self) -> bool:
        """Read policy, snapshots and features from Redis once; True on success."""
        if self._redis is None:  # made here: a cluster client asks a node for its slots
            self._redis = redis_client(self._redis_url or "", socket_timeout=1.0,
                                       socket_connect_timeout=1.0)
        r = self._redis
        raw = r.get(policy_key(self.prefix, self.agent_id))
        if raw is None:
            return True
        policy = LivePolicy.from_bytes(raw)
        current = self._model
        snapshots: dict[ModelRef, bytes | None] = {}
        if (current is None or current.policy.revision != policy.revision) \
                and policy.revision not in self.refused:
            for ref in (policy.champion, policy.challenger):
                if ref is not None and ref.snapshot_key is not None:
                    snapshots[ref] = r.get(ref.snapshot_key)
        counters = r.hgetall(feature_key(self.prefix, f"agent:{self.agent_id}"))
        features = values(parse_counters(counters)) if counters else {}
        self.install(policy, snapshots, features)
        return True

    def _refresh_loop(self, every_s: float) -> None:
        delay = every_s
        while not self._stop.wait(delay):
            try:
                self.refresh()
                delay = every_s
            except Exception as exc:  # Redis down: keep serving what we have
                self.refresh_failures += 1
                log.debug("%s: read model refresh failed: %s", self.agent_id, exc)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self._stop.set()
