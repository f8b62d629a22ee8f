"""Model registry: every snapshot that enters canary (or becomes champion) goes to MLflow.

One registered model per agent (``selflearn-<agent_id>``); each snapshot is a
model version whose run holds the prequential metrics, the learner's
parameters, the event offsets it learned from (``lineage.json``) and the
snapshot bytes (``snapshot.json``). MLflow aliases ``champion`` and
``challenger`` point at the versions the live policy serves.

The registry must never block learning or decisions: :meth:`ModelRegistry.register_async`
queues the work for one background thread (bounded queue, retries with
backoff) and returns at once; failures are counted and logged, never raised.
``mlflow`` is imported lazily, in that thread (importing it takes seconds).

>>> reg = ModelRegistry("sqlite:////dev/null/no/mlflow.db", retries=1)
>>> reg.register_async("a", ModelRef("m", 1), b"{}")  # returns at once, even if broken
True
>>> reg.flush(60), reg.failed
(True, 1)
>>> reg.close()
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from projections.promotion import Transition
from schemas.policy import ModelRef

log = logging.getLogger(__name__)
ALIASES = ("champion", "challenger")


def registered_name(agent_id: str) -> str:
    """The MLflow registered-model name of an agent's models."""
    return f"selflearn-{agent_id}"


def _artifact_root(tracking_uri: str) -> str | None:
    """Artifacts next to a SQLite tracking file (else the server's default)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


class ModelRegistry:
    """MLflow model registry for snapshots, with a non-blocking, retrying writer.

    Parameters
    ----------
    tracking_uri
        MLflow tracking/registry URI, e.g. ``sqlite:///…/mlflow.db`` (embedded default).
    retries
        Attempts per registration before it is counted as failed.
    backoff_s
        First retry delay, doubled each attempt.
    max_queue
        Pending registrations kept; beyond, new ones are dropped (counted as failed).
    """

    def __init__(self, tracking_uri: str, *, retries: int = 3, backoff_s: float = 0.5,
                 max_queue: int = 1000) -> None:
        self.tracking_uri = tracking_uri
        self.retries, self.backoff_s = retries, backoff_s
        self.registered = 0
        self.failed = 0
        self._q: queue.Queue[tuple[str, tuple[Any, ...], dict[str, Any]] | None] = queue.Queue(
            max_queue)
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------- synchronous

    def client(self) -> Any:
        """The ``MlflowClient`` (created on first use)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri,
                                        registry_uri=self.tracking_uri)
        return self._client

    def register(self, agent_id: str, ref: ModelRef, snapshot: bytes, *,
                 alias: str | None = "challenger", metrics: Mapping[str, float] | None = None,
                 params: Mapping[str, Any] | None = None,
                 offsets: Mapping[str, int] | None = None) -> str:
        """Register one snapshot now (raises on failure); returns the MLflow version."""
        from mlflow.exceptions import MlflowException

        c = self.client()
        exp_name = f"selflearn/{agent_id}"
        exp = c.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp else c.create_experiment(
            exp_name, artifact_location=_artifact_root(self.tracking_uri))
        run = c.create_run(exp_id, run_name=f"{ref.name}:v{ref.version}",
                           tags={"agent_id": agent_id, "learner": ref.name})
        rid = run.info.run_id
        for key, value in sorted((params or {}).items()):
            c.log_param(rid, key, str(value)[:500])
        c.log_param(rid, "learner", ref.name)
        c.log_param(rid, "selflearn_version", ref.version)
        for key, value in sorted((metrics or {}).items()):
            c.log_metric(rid, key, float(value))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "snapshot.json").write_bytes(snapshot)
            (Path(tmp) / "lineage.json").write_bytes(orjson.dumps(
                {"agent_id": agent_id, "model": ref.name, "version": ref.version,
                 "snapshot_key": ref.snapshot_key, "offsets": dict(offsets or {})}))
            c.log_artifacts(rid, tmp, artifact_path="model")
        c.set_terminated(rid)
        name = registered_name(agent_id)
        try:
            c.create_registered_model(name)
        except MlflowException:
            pass  # already exists
        mv = c.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=rid,
            tags={"learner": ref.name, "selflearn_version": str(ref.version)})
        if alias is not None:
            c.set_registered_model_alias(name, alias, mv.version)
        return str(mv.version)

    def aliased(self, agent_id: str, alias: str) -> dict[str, str] | None:
        """Tags of the version behind ``alias`` (``learner``, ``selflearn_version``), or None."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client().get_model_version_by_alias(registered_name(agent_id), alias)
        except MlflowException:
            return None
        return {**mv.tags, "mlflow_version": str(mv.version)}

    def _transition(self, t: Transition, metrics: Mapping[str, Mapping[str, float]],
                    offsets: Mapping[str, int]) -> None:
        pol = t.policy
        for ref, data in t.snapshots.items():
            alias = "champion" if ref == pol.champion else "challenger"
            self.register(pol.agent_id, ref, data, alias=alias,
                          metrics=metrics.get(ref.name, {}), offsets=offsets)
        if pol.challenger is None:
            from mlflow.exceptions import MlflowException

            try:
                self.client().delete_registered_model_alias(registered_name(pol.agent_id),
                                                            "challenger")
            except MlflowException:
                pass  # no challenger alias yet

    # --------------------------------------------------------- asynchronous

    def register_async(self, agent_id: str, ref: ModelRef, snapshot: bytes,
                       **kw: Any) -> bool:
        """Queue :meth:`register`; returns at once (False if the queue is full)."""
        return self._submit("register", (agent_id, ref, snapshot), kw)

    def on_transition_async(self, transition: Transition,
                            metrics: Mapping[str, Mapping[str, float]] | None = None,
                            offsets: Mapping[str, int] | None = None) -> bool:
        """Queue registration of a transition's new snapshots and alias updates."""
        return self._submit("_transition", (transition, metrics or {}, offsets or {}), {})

    def _submit(self, method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="mlflow-registry",
                                                daemon=True)
                self._thread.start()
        try:
            self._q.put_nowait((method, args, kw))
        except queue.Full:
            self.failed += 1
            log.warning("registry queue full; registration of %s dropped", args[:2])
            return False
        return True

    def _work(self) -> None:
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                self._run(*job)
            finally:
                self._q.task_done()

    def _run(self, method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        for attempt in range(self.retries):
            try:
                getattr(self, method)(*args, **kw)
                self.registered += 1
                return
            except Exception as exc:  # noqa: BLE001 - an outage must never escape
                log.warning("registry attempt %d/%d failed: %s", attempt + 1, self.retries, exc)
                self._client = None
                if attempt + 1 < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
        self.failed += 1
        log.error("registration %s%s failed after %d attempts", method, args[:2], self.retries)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until queued registrations are done (or ``timeout``); True if drained."""
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._q.unfinished_tasks

    def close(self) -> None:
        """Stop the background thread after the queued work."""
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=60)
