"""River learners: one-line specs, sealed snapshots, refused forgeries, own estimators."""

from __future__ import annotations

import base64
import pickle
import time
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from pydantic import SecretStr
from river import checks

from agents.decision import DecisionEngine, new_learner
from ops.data import data_path
from projections.agent_specs import AgentSpec
from projections.datasets import iter_storypoints, read_changes
from projections.learners import REVIEW_LEARNERS, TASK_LEARNERS, learner_factory
from projections.learners.river_adapter import check_river_learner, river_learner
from projections.learners.river_parts import JitLogScaler, OffsetLogisticRegression
from projections.learners.river_spec import SpecError, build
from projections.policy_store import PolicyStore
from projections.sealing import SnapshotTampered, dumps_sealed
from projections.shadow import ShadowProjection
from schemas import new_event
from schemas.addresses import Addresses
from schemas.policy import LivePolicy, ModelRef, model_key
from schemas.settings import Settings, snapshot_key

TASK_ROWS = [(r.x, r.storypoint) for r in islice(iter_storypoints(data_path("storypoints")), 200)]
REVIEW_ROWS = [(r.x, float(r.bug)) for r in read_changes(data_path("changes"), "IVY")[:200]]
PA = "river.feature_extraction.TFIDF(on='title')|linear_model.PARegressor"


class _Trap:
    """Unpickling this touches a file: proof that a forged pickle was (not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _trained(name: str, kind: str = "task_estimate") -> Any:
    model = learner_factory(kind, name)()
    for x, y in TASK_ROWS if kind == "task_estimate" else REVIEW_ROWS:
        model.predict_one(x)
        model.learn_one(x, y)
    return model


# ------------------------------------------------------------------ specs


def test_a_spec_builds_river_pipelines_and_unions() -> None:
    model: Any = build("river.(feature_extraction.BagOfWords(on='title') + "
                  "feature_extraction.TFIDF(on='description')) | linear_model.LinearRegression("
                  "optimizer=optim.SGD(0.01), l2=0.001)")
    assert type(model).__name__ == "Pipeline"
    assert model[-1].l2 == 0.001 and model[-1].optimizer.learning_rate == 0.01


@pytest.mark.parametrize("spec", [
    "river.__import__('os').system('true')",
    "river.os.system",
    "river.linear_model.LinearRegression(**{'l2': 1})",
    "river.linear_model.LinearRegression(optimizer=(lambda: 0))",
    "river.linear_model.LinearRegression(l2=open('/etc/passwd'))",
    "river.linear_model.LinearRegression.__class__",
    "river.utils.math.dot",
    "river.linear_model.LinearRegression(",
    "river.linear_model.NoSuchModel",
])
def test_a_spec_never_runs_anything_but_river_constructors(spec: str) -> None:
    with pytest.raises(SpecError):
        build(spec)


def test_unusable_specs_fail_when_configured_not_in_the_worker() -> None:
    with pytest.raises(ValueError, match="cannot learn task_estimate"):
        learner_factory("task_estimate", "river.preprocessing.StandardScaler"
                                         "|linear_model.LinearRegression")  # text features
    with pytest.raises(ValueError, match="contains ':'"):
        river_learner("river:x", PA, "task_estimate")
    with pytest.raises(KeyError, match="River spec"):
        learner_factory("task_estimate", "no_such_learner")


def test_one_line_of_configuration_runs_a_river_challenger_through_the_shadow() -> None:
    spec = AgentSpec("team-a", "task_estimate", "live", "running_median", ("knn_median", PA))
    sp = ShadowProjection({"team-a": spec})
    for i, (x, y) in enumerate(TASK_ROWS[:120]):
        req = new_event("decision.requested", {"request_id": f"r{i}", "kind": "task_estimate",
                                               "context": {"task_id": f"t{i}", **x}},
                        producer="team-a")
        preds = {e.payload["model"]: e.payload["prediction"]
                 for e in sp.apply([("a", 0, 2 * i, req)])}
        assert set(preds) == {"running_median", "knn_median", PA}
        done = new_event("task.completed", {"task_id": f"t{i}", "project": x["project"],
                                            "actual_points": y}, producer="tracker")
        sp.apply([("a", 0, 2 * i + 1, done)])
    assert sp.metrics("team-a")[PA]["n"] == 120
    # The worker's checkpoint and the snapshot the decision engine serves, bit for bit.
    data = sp.snapshot()
    again = ShadowProjection({"team-a": spec})
    again.restore(data)
    assert again.snapshot() == data
    served = new_learner("task_estimate", PA, sp.model_snapshot("team-a", PA))
    assert served.snapshot() == sp.model_snapshot("team-a", PA)
    x = TASK_ROWS[150][0]
    assert served.predict_one(x) == sp.agent_models("team-a")[PA].learner.predict_one(x)


# -------------------------------------------------------------- snapshots


@pytest.mark.parametrize("name", ["river_title_linear", "river_jit_offset"])
def test_every_single_byte_change_of_a_snapshot_is_refused(name: str) -> None:
    kind = "task_estimate" if name in TASK_LEARNERS else "review_risk"
    model = _trained(name, kind)
    data = model.snapshot()
    cls = type(model)
    step = max(len(data) // 400, 1)
    for pos in range(0, len(data), step):
        forged = bytearray(data)
        forged[pos] ^= 0x01
        with pytest.raises(ValueError):  # SnapshotTampered, or another learner's name
            cls.restore(bytes(forged))
    pos = data.index(b'"pickle":"') + 40  # inside the pickle itself
    forged = bytearray(data)
    forged[pos] = ord("A") if forged[pos] != ord("A") else ord("B")
    with pytest.raises(SnapshotTampered, match=f"learner '{name}'.*HMAC-SHA256 check failed"):
        cls.restore(bytes(forged))


def test_a_forged_pickle_is_never_unpickled(tmp_path: Path) -> None:
    trap = tmp_path / "pwned"
    cls: Any = TASK_LEARNERS["river_title_linear"]
    body = base64.b64encode(pickle.dumps(_Trap(trap))).decode()
    for mac in ("0" * 64, dumps_sealed(1, "learner 'river_title_linear'")["mac"]):
        forged = orjson.dumps({"learner": "river_title_linear", "mac": mac, "pickle": body})
        with pytest.raises(SnapshotTampered):
            cls.restore(forged)
    assert not trap.exists()
    other_key = orjson.dumps({"learner": "river_title_linear", **dumps_sealed(
        cls().model, "learner 'river_title_linear'", key=b"another deployment's key 32 bytes")})
    with pytest.raises(SnapshotTampered, match="another key"):
        cls.restore(other_key)


def test_restore_tells_another_learners_snapshot_from_a_forgery() -> None:
    title: Any = TASK_LEARNERS["river_title_linear"]
    jit: Any = TASK_LEARNERS["river_tfidf_pa"]
    with pytest.raises(ValueError, match="restore it with") as info:
        jit.restore(title().snapshot())
    assert not isinstance(info.value, SnapshotTampered)
    renamed = title().snapshot().replace(b"river_title_linear", b"river_tfidf_pa")
    with pytest.raises(SnapshotTampered):
        jit.restore(renamed)


def _shadow_with_checkpoint() -> tuple[bytes, dict[str, AgentSpec]]:
    spec = {"a": AgentSpec("a", "task_estimate", "live", "running_median", ("recency_median",))}
    sp = ShadowProjection(spec)
    for i, (x, y) in enumerate(TASK_ROWS[:30]):
        sp.apply([("t", 0, 2 * i, new_event(
            "decision.requested", {"request_id": f"r{i}", "kind": "task_estimate",
                                   "context": {"task_id": f"t{i}", **x}}, producer="a"))])
        sp.apply([("t", 0, 2 * i + 1, new_event(
            "task.completed", {"task_id": f"t{i}", "project": "p", "actual_points": y},
            producer="tracker"))])
    return sp.snapshot(), spec


def _restored(data: bytes, spec: dict[str, AgentSpec]) -> ShadowProjection:
    sp = ShadowProjection(spec)
    sp.restore(data)
    return sp


def test_a_tampered_drift_detector_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    data, spec = _shadow_with_checkpoint()
    assert _restored(data, spec).snapshot() == data
    raw = orjson.loads(data)
    raw["models"]["a"]["recency_median"]["detector"]["pickle"] = base64.b64encode(
        pickle.dumps(_Trap(tmp_path / "pwned"))).decode()
    with pytest.raises(SnapshotTampered, match="ADWIN drift detector of learner "
                                               "'recency_median'"):
        _restored(orjson.dumps(raw), spec)
    # A detector sealed for another model does not pass either.
    raw = orjson.loads(data)
    models = raw["models"]["a"]
    models["recency_median"]["detector"] = models["running_median"]["detector"]
    with pytest.raises(SnapshotTampered):
        _restored(orjson.dumps(raw), spec)
    assert not (tmp_path / "pwned").exists()


def test_an_unsealed_detector_from_an_old_checkpoint_is_dropped_unread(tmp_path: Path) -> None:
    data, spec = _shadow_with_checkpoint()
    raw = orjson.loads(data)
    old = base64.b64encode(pickle.dumps(_Trap(tmp_path / "pwned"))).decode()
    raw["models"]["a"]["recency_median"]["detector"] = old
    sp = _restored(orjson.dumps(raw), spec)
    assert sp.metrics("a")["recency_median"]["n"] == 30
    assert not (tmp_path / "pwned").exists()


def test_the_snapshot_key_comes_from_configuration(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SELFLEARN_SNAPSHOT_KEY", raising=False)
    monkeypatch.delenv("SELFLEARN_SNAPSHOT_KEY_FILE", raising=False)
    generated = snapshot_key(Settings(data_dir=tmp_path))
    key_file = tmp_path / "snapshot.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert snapshot_key(Settings(data_dir=tmp_path)) == generated
    with pytest.raises(ValueError, match="at least 32"):
        snapshot_key(Settings(data_dir=tmp_path, snapshot_key=SecretStr("short")))
    other = tmp_path / "elsewhere.key"
    other.write_text("z" * 40 + "\n")
    assert snapshot_key(Settings(data_dir=tmp_path, snapshot_key_file=other)) == b"z" * 40
    assert generated not in TASK_LEARNERS["river_title_linear"]().snapshot()


# --------------------------------------------------------- decision engine


def test_a_tampered_snapshot_is_refused_and_the_last_good_policy_keeps_serving(
        stack: Addresses, settings: Settings) -> None:
    prefix, agent = f"{settings.topic_prefix}-tamper", "estimator"
    store = PolicyStore(redis.Redis.from_url(stack.redis_url), prefix)
    name = "river_title_linear"

    def publish(version: int, revision: int, forge: bool = False) -> LivePolicy:
        ref = ModelRef(name, version, model_key(prefix, agent, ModelRef(name, version)))
        data = bytearray(_trained(name).snapshot())
        if forge:
            data[data.index(b'"pickle":"') + 100] ^= 0x01
        policy = LivePolicy(agent, "task_estimate", "live", ref, revision=revision)
        assert store.publish(policy, {ref: bytes(data)})
        return policy

    def until(done: Any, what: str) -> None:
        deadline = time.monotonic() + 15
        while not done():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    publish(1, 1)
    engine = DecisionEngine(agent, "task_estimate", redis_url=stack.redis_url, prefix=prefix,
                            refresh_s=0.05)
    until(lambda: engine.policy is not None, "the first policy was never loaded")
    ctx = {"task_id": "t", **TASK_ROWS[-1][0]}
    good = engine.decide(ctx, request_id="r1")
    assert (good.policy, good.model_version) == ("champion", f"{name}:1")

    publish(2, 2, forge=True)
    until(lambda: 2 in engine.refused, "the forged revision was never looked at")
    assert "SnapshotTampered" in engine.refused[2] and name in engine.refused[2]
    time.sleep(0.3)  # several refreshes: the forged revision stays refused
    after = engine.decide(ctx, request_id="r1")
    assert engine.policy is not None and engine.policy.revision == 1
    assert (after.policy, after.model_version, after.output) == (
        "champion", f"{name}:1", good.output)

    publish(3, 3)  # the next good policy is served again
    until(lambda: engine.policy is not None and engine.policy.revision == 3,
          "the next good policy was never loaded")
    assert engine.decide(ctx, request_id="r1").model_version == f"{name}:3"
    engine.close()


def test_a_forged_first_policy_leaves_the_baseline_serving() -> None:
    engine = DecisionEngine("x", "task_estimate", redis_url=None)
    ref = ModelRef("river_title_linear", 1)
    data = bytearray(_trained("river_title_linear").snapshot())
    data[-10] ^= 0x01
    engine.install(LivePolicy("x", "task_estimate", "live", ref, revision=1), {ref: bytes(data)},
                   {})
    d = engine.decide({"title": "Fix login"}, request_id="r")
    assert (d.policy, d.model_version) == ("baseline", "constant:0") and 1 in engine.refused
    engine.close()


# ------------------------------------------------------------ own estimators


@pytest.mark.parametrize("estimator", [JitLogScaler(), OffsetLogisticRegression()],
                         ids=["JitLogScaler", "OffsetLogisticRegression"])
def test_our_river_estimators_pass_river_check_estimator(estimator: Any) -> None:
    checks.check_estimator(estimator)


def test_every_registered_river_learner_passes_its_own_check() -> None:
    for kind, registry in (("task_estimate", TASK_LEARNERS), ("review_risk", REVIEW_LEARNERS)):
        for name, factory in registry.items():
            if name.startswith("river_"):
                cls: Any = factory
                assert check_river_learner(cls) is cls and cls().kind == kind
