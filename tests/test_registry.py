"""MLflow registry: snapshots with metrics, lineage and aliases; outages never reach callers."""

from __future__ import annotations

import json
from pathlib import Path

from projections.promotion import PromotionProjection
from projections.registry import ModelRegistry, registered_name
from projections.shadow import ShadowProjection
from schemas.policy import ModelRef
from tests.test_promotion import spec, stream


def test_canary_and_champion_snapshots_are_registered_with_aliases(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    agent = "task-estimator"
    shadow = ShadowProjection({agent: spec(agent)})
    for offset, ev in enumerate(stream(agent, 0, 50, offset_by=0.0)):
        shadow.apply([("x", 0, offset, ev)])
    assert shadow.seq[agent] == 50
    promotion = PromotionProjection({agent: spec(agent)}, snapshot_of=shadow.model_snapshot)
    reg = ModelRegistry(uri)
    try:
        canary = promotion.promote(agent, operator="alice", challenger="oracle")
        assert reg.on_transition_async(canary, shadow.metrics(agent), shadow.offsets())
        assert reg.flush(120) and (reg.registered, reg.failed) == (1, 0)
        assert reg.aliased(agent, "challenger")["learner"] == "oracle"
        for _ in range(3):
            last = promotion.promote(agent, operator="alice")
        reg.on_transition_async(last, shadow.metrics(agent), shadow.offsets())
        assert reg.flush(120) and (reg.registered, reg.failed) == (2, 0)
    finally:
        reg.close()
    champion = reg.aliased(agent, "champion")
    assert champion["learner"] == "oracle"
    assert champion["selflearn_version"] == str(last.policy.champion.version)
    assert reg.aliased(agent, "challenger") is None  # no canary any more

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias(registered_name(agent), "champion")
    run = client.get_run(mv.run_id)
    assert run.data.metrics["mae"] == shadow.metrics(agent)["oracle"]["mae"]
    assert run.data.params["learner"] == "oracle"
    local = Path(client.download_artifacts(mv.run_id, "model", str(tmp_path / "dl")))
    assert (local / "snapshot.json").read_bytes() == last.snapshots[last.policy.champion]
    lineage = json.loads((local / "lineage.json").read_text())
    assert lineage["offsets"] == shadow.offsets() and lineage["offsets"]


def test_a_broken_tracking_uri_never_raises_into_the_caller(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    reg = ModelRegistry(f"sqlite:///{blocker / 'mlflow.db'}", retries=2, backoff_s=0.01)
    try:
        for version in (1, 2, 3):
            assert reg.register_async("a", ModelRef("m", version), b"{}", metrics={"mae": 1.0})
        assert reg.flush(120)
    finally:
        reg.close()
    assert (reg.registered, reg.failed) == (0, 3)


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("")
    reg = ModelRegistry(f"sqlite:///{blocker / 'x.db'}", retries=1, max_queue=1)
    results = [reg.register_async("a", ModelRef("m", v), b"{}") for v in range(50)]
    reg.flush(120)
    reg.close()
    assert False in results and reg.failed == 50 and reg.registered == 0
