"""Agent processes react to an erasure: cached keys and cached text of the subject go.

The SDK seals personal text with data keys it caches in memory. When another
process (``selflearn erase``) destroys a subject's keys, a client that follows
the erased list in Redis drops its cached key, so the next event of that
subject is written ``[erased]``; a client that does not follow it (no Redis)
would go on sealing under the destroyed key it still holds — the hazard this
guards against, kept here as the control. Real broker and Redis.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from agents.client import AgentClient
from ops.usecases.privacy import erase
from projections.learners.base import _tokens, tokens
from schemas import decode
from schemas.addresses import Addresses
from schemas.catalog import CATALOG, topic_name
from schemas.cipher import ERASED, FieldCipher, is_encrypted
from schemas.keystore_file import FileKeyStore
from schemas.protect import reveal
from schemas.settings import Settings
from tests.kafka_util import read_topic

GONE, KEPT = "r-gone", "r-kept"


@pytest.fixture
def own(settings: Settings, stack: Addresses, tmp_path: Path) -> Settings:
    return settings.model_copy(update={
        "topic_prefix": f"{settings.topic_prefix}-{uuid.uuid4().hex[:6]}", "data_dir": tmp_path,
        "kafka_bootstrap": stack.kafka_bootstrap, "database_url": stack.database_url,
        "redis_url": stack.redis_url, "mlflow_uri": stack.mlflow_uri, "pii_detector": "pattern"})


def _task(client: AgentClient, subject: str, title: str) -> None:
    client.emit("task.estimated", {"task_id": title, "project": "mule", "title": title,
                                   "description": "d", "estimate": 3.0}, subject_id=subject)


def test_a_following_client_drops_an_erased_subjects_keys_and_text(
        own: Settings, stack: Addresses) -> None:
    follower = AgentClient.from_settings("est-follow", own, decision_kind="task_estimate",
                                         erasure_poll_s=0.1)
    control = AgentClient.from_settings("est-control", own, redis_url=None)
    assert follower.erasures is not None and control.erasures is None
    for client in (follower, control):
        _task(client, GONE, f"{client.agent_id} before zq{uuid.uuid4().hex[:8]}")
        _task(client, KEPT, f"{client.agent_id} kept before")
    follower.decide({"task_id": "t", "project": "mule", "title": "Crash in login page",
                     "description": "x"}, subject_id=GONE)
    # What a text learner of the engine does on decide (the baseline served here does not).
    tokens({"title": "Crash in login page", "description": "x"})
    assert follower.flush(30) and control.flush(30)
    assert _tokens.cache_info().currsize > 0

    report = erase(own, GONE, "test", wait_s=0)  # another process: keys gone, list appended
    assert report["key_versions_destroyed"] == 1 and report["agents_notified"]
    deadline = time.monotonic() + 15
    while follower.erasures.forgotten < 1:
        assert time.monotonic() < deadline, "the client never saw the erasure"
        time.sleep(0.05)
    assert _tokens.cache_info().currsize == 0

    for client in (follower, control):
        _task(client, GONE, f"{client.agent_id} after")
        _task(client, KEPT, f"{client.agent_id} kept after")
    assert follower.flush(30) and control.flush(30)
    follower.close()
    control.close()

    topic = topic_name(own.topic_prefix, CATALOG["task.estimated"].stream)
    events = [decode(v) for _, _, v in read_topic(stack.kafka_bootstrap, topic, expect=8,
                                                  timeout=30) if v]
    after = {(e.producer, e.subject_id): e for e in events
             if e.type == "task.estimated" and "after" in e.payload["task_id"]}
    # The follower wrote nothing decryptable for the erased subject, not even in its memory.
    assert after[("est-follow", GONE)].payload["title"] == ERASED
    # Without following, the destroyed key was still used from the cache (unreadable to
    # everyone else, but the key lived on in that process): what the follower prevents.
    assert is_encrypted(after[("est-control", GONE)].payload["title"])
    cipher = FieldCipher(FileKeyStore(own.key_folder()))
    for producer in ("est-follow", "est-control"):
        assert reveal(after[(producer, KEPT)], cipher).payload["title"] == \
            f"{producer} kept after"
        assert "title" in reveal(after[(producer, GONE)], cipher).erased
