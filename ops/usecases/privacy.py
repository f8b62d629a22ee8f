"""PII detection quality: every detector mode against the hand-labelled texts.

``evaluate pii`` scores every detector mode on the hand-labelled issue texts
(``ops/data/pii/labels.jsonl``): ``scanner`` (the SDK's scrubber today,
``agents.privacy``), ``pattern`` (:class:`schemas.pii.PatternDetector`),
``presidio`` (Presidio, no NLP model) and ``ner`` (Presidio + spaCy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.pii import Detector, Finding

MODES = ("scanner", "pattern", "presidio", "ner")
SPLITS = ("test", "dev", "all")
# The SDK scrubber's kinds -> the labelled types.
_SCANNER_TYPES = {"URL_CREDENTIALS": "KEY", "IP": "HOST"}


class ScannerDetector:
    """Today's SDK scrubber (``agents.privacy``) seen through the Detector interface."""

    mode = "scanner"

    def analyze(self, text: str) -> list[Finding]:
        from agents.privacy import findings

        found = [Finding(_SCANNER_TYPES.get(kind, kind), start, end)
                 for kind, start, end in findings(text)]
        return sorted(found, key=lambda f: (f.start, f.end, f.type))


def detector(mode: str) -> Detector:
    """A detector for ``mode`` (one of :data:`MODES`)."""
    if mode == "scanner":
        return ScannerDetector()
    if mode == "pattern":
        from schemas.pii import PatternDetector

        return PatternDetector()
    from schemas.pii_presidio import PresidioDetector

    return PresidioDetector(ner=mode == "ner")


class _Memo:
    """Analyse each text once: the splits overlap (``all`` is ``dev`` + ``test``)."""

    def __init__(self, inner: Detector) -> None:
        self.inner, self.mode = inner, inner.mode
        self._seen: dict[str, list[Finding]] = {}

    def analyze(self, text: str) -> list[Finding]:
        if text not in self._seen:
            self._seen[text] = self.inner.analyze(text)
        return self._seen[text]


def evaluate_pii(modes: tuple[str, ...] = MODES, labels: Path | None = None) -> dict[str, Any]:
    """Per mode and split: per-type precision/recall and the micro average of labelled types."""
    from ops.data import data_path
    from projections.pii_eval import LABELLED, load_labels, micro, score

    path = labels or data_path("pii") / "labels.jsonl"
    samples = load_labels(path)
    result: dict[str, Any] = {
        "labels": str(path), "texts": len(samples),
        "texts_with_pii": sum(1 for s in samples if s.spans), "iou": 0.5,
        "labelled_types": list(LABELLED), "modes": {},
    }
    for mode in modes:
        found = _Memo(detector(mode))
        per_split = {}
        for split in SPLITS:
            chosen = [s for s in samples if split == "all" or s.split == split]
            report = score(found, chosen)
            per_split[split] = {"texts": len(chosen), "micro": micro(report), "types": report}
        result["modes"][mode] = per_split
    return result


async def send_to_every_partition(settings: Any, bootstrap: str, topic: str, key: bytes,
                                  value: bytes) -> int:
    """One copy of a control record in every partition of ``topic``; returns how many.

    Learning state is sharded by partition across workers: a ``subject.erased``
    must reach every shard, so every worker forgets (copies share the event id).
    """
    from aiokafka import AIOKafkaProducer

    from streams.topics import ensure_topics, kafka_tls

    tls = settings.kafka_ssl_context()
    await ensure_topics(bootstrap, [topic], settings.partitions, tls)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                request_timeout_ms=10_000, **kafka_tls(tls))
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        for p in partitions:
            await producer.send_and_wait(topic, value, key=key, partition=p)
    finally:
        await producer.stop()
    return len(partitions)


def erase(settings: Any, subject_id: str, reason: str, wait_s: float = 30.0) -> dict[str, Any]:
    """Crypto-shred a data subject, announce it, wait for the worker's forget report.

    Destroys every data-key version of ``subject_id`` (their personal fields
    read ``[erased]`` everywhere from now on), appends the subject to the erased
    list agent processes follow (:mod:`projections.erasures`), emits
    ``subject.erased`` on the control topic (every partition), and waits up to
    ``wait_s`` for a worker to record what each projection forgot (``forgot``
    is ``None`` if none did: the keys are destroyed all the same; a worker
    forgets when it catches up).
    Raises :class:`schemas.addresses.StackNotRunning` when no broker is known.
    """
    import asyncio
    import time

    import redis

    from ops.usecases.common import redis_client
    from projections.erasures import announce
    from schemas import encode, new_event
    from schemas.addresses import resolve
    from schemas.catalog import topic_name
    from schemas.protect import key_store

    addresses = resolve(settings)
    keys = key_store(settings)
    try:
        versions = keys.erase(subject_id)
    finally:
        getattr(keys, "close", lambda: None)()
    r = redis_client(addresses.redis_url)
    try:  # agent processes drop their cached keys of the subject (agents.erasure)
        announce(r, settings.topic_prefix, subject_id)
        agents_told = True
    except redis.RedisError:  # the workers append it too when they handle the event
        agents_told = False
    event = new_event("subject.erased", {"reason": reason}, producer="operator",
                      subject_id=subject_id)
    copies = asyncio.run(send_to_every_partition(
        settings, addresses.kafka_bootstrap, topic_name(settings.topic_prefix, "control"),
        subject_id.encode(), encode(event)))
    forgot = None
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        raw = {k.decode(): int(v) for k, v in
               r.hgetall(f"{settings.topic_prefix}:erasure:{subject_id}").items()}
        if raw.get("copies", 0) >= copies:  # every partition's copy was handled
            raw.pop("copies")
            forgot = raw
            break
        time.sleep(0.2)
    return {"subject": subject_id, "key_versions_destroyed": versions,
            "event": str(event.event_id), "partitions": copies, "forgot": forgot,
            "agents_notified": agents_told}


def rotate_keys(settings: Any) -> dict[str, Any]:
    """New master-key version, every data key re-wrapped (no event rewritten), ``key.rotated``.

    Safe while agents and workers run: the key store serialises the rotation
    and processes that wrapped under the old version reload the new one.
    """
    import asyncio

    from ops.usecases.operator_commands import send_keyed
    from schemas import encode, new_event
    from schemas.addresses import resolve
    from schemas.catalog import topic_name
    from schemas.protect import key_store

    addresses = resolve(settings)
    keys = key_store(settings)
    try:
        rotation = keys.rotate_master()
        stats = keys.stats()
    finally:
        getattr(keys, "close", lambda: None)()
    event = new_event("key.rotated", {"key_id": f"kek-v{rotation.kek_version}", "scope": "master"},
                      producer="operator")
    asyncio.run(send_keyed(settings, addresses.kafka_bootstrap,
                           topic_name(settings.topic_prefix, "control"), b"keys", encode(event)))
    return {"kek_version": rotation.kek_version, "rewrapped": rotation.rewrapped,
            "event": str(event.event_id), **{f"store_{k}": v for k, v in stats.items()}}
