"""Sealing in the SDK and opening in the readers, without servers (outbox-only clients)."""

from __future__ import annotations

from pathlib import Path

import orjson

from agents.client import AgentClient
from projections.shadow import ShadowProjection
from schemas import decode, new_event
from schemas.cipher import ERASED, FieldCipher
from schemas.keys import MemoryKeyStore
from schemas.keystore_file import FileKeyStore
from schemas.pii import PatternDetector
from schemas.protect import REDACTED, Protector, reveal

TEXT = "Crash in zqsecretword login; ask [~zqmention] or mail zq.person@example.org"


def _client(tmp_path: Path, keys: FileKeyStore) -> AgentClient:
    protector = Protector(keys, PatternDetector())
    return AgentClient("a1", bootstrap=None, outbox_path=tmp_path / "box.db",
                       protector=protector)


def test_outbox_holds_no_plaintext_and_named_persons_get_their_own_key(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path / "keys")
    client = _client(tmp_path, keys)
    ev = client.emit("task.estimated", {"task_id": "t1", "project": "p", "title": "short",
                                        "description": TEXT, "estimate": 2.0},
                     subject_id="r-1")
    client.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("box.db*"))
    assert b"zqsecretword" not in raw and b"zqmention" not in raw and b"zq.person" not in raw
    assert client.protector is not None and client.protector.named == 2

    keys = FileKeyStore(tmp_path / "keys")
    protector = Protector(keys)
    cipher = FieldCipher(keys)
    from agents.outbox import Outbox

    [(_, _, _, value)] = Outbox(tmp_path / "box.db").peek(10)
    stored = decode(value)
    assert stored.event_id == ev.event_id  # type: ignore[union-attr]
    assert reveal(stored, cipher).payload["description"] == TEXT
    assert reveal(stored, cipher, names=False).payload["description"] == (
        f"Crash in zqsecretword login; ask {REDACTED} or mail {REDACTED}")
    # Erasing the person mentioned leaves the reporter's text readable, their span erased.
    keys.erase(protector.person_subject("[~zqmention]"))
    assert reveal(stored, cipher).payload["description"] == (
        f"Crash in zqsecretword login; ask {ERASED} or mail zq.person@example.org")
    keys.erase("r-1")
    opened = reveal(stored, cipher)
    assert opened.payload["description"] == ERASED and opened.erased == ["title", "description"]


def test_a_rejected_attempt_withholds_personal_fields_in_the_dead_letter(tmp_path: Path) -> None:
    client = _client(tmp_path, FileKeyStore(tmp_path / "keys"))
    bad = client.emit("task.estimated", {"task_id": "t1", "title": "zqsecretword"})
    assert not bad
    client.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("box.db*"))
    assert b"[withheld]" in raw and b"zqsecretword" not in raw


def test_shadow_keeps_contexts_sealed_and_forgets_a_subject() -> None:
    keys = MemoryKeyStore()
    protector = Protector(keys, PatternDetector())
    shadow = ShadowProjection(cipher=FieldCipher(keys))
    for i, subject in enumerate(["r-1", "r-2", "r-1", "r-2"]):
        req = protector.protect(new_event("decision.requested", {
            "request_id": f"q{i}", "kind": "task_estimate",
            "context": {"task_id": f"t{i}", "project": "p",
                        "title": f"zqword{subject} crash {i}", "description": TEXT}},
            producer="task-estimator", subject_id=subject))
        shadow.apply([("a", 0, 2 * i, req)])
        if i < 2:  # the first two get their outcome (learned), the others stay pending
            done = new_event("task.completed", {"task_id": f"t{i}", "project": "p",
                                                "actual_points": 3.0}, producer="tracker")
            shadow.apply([("a", 0, 2 * i + 1, done)])
    snap = shadow.snapshot()
    # Pending contexts stay sealed, learners keep hashed tokens: no word in the state.
    assert b"zqwordr" not in snap and b"zqsecretword" not in snap and b"crash" not in snap
    knn = shadow.models["task-estimator"]["knn_median"].learner
    assert sum(bool(toks) for toks in knn.toks["p"]) == 2  # type: ignore[attr-defined]
    assert shadow.forget("r-1") == 2  # one pending prediction, one kNN example
    assert len(shadow.pending) == 1
    assert shadow.forget("r-1") == 0
    state = orjson.loads(shadow.model_snapshot("task-estimator", "knn_median"))["state"]
    assert state["owners"]["p"] == ["r-1", "r-2"] and state["toks"]["p"][0] == []
