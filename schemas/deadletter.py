"""Dead-letter records: the rejected bytes, kept whole, with why and where they came from.

>>> rec = dead_letter(b"{oops", reason="malformed", error="not valid JSON", source="sdk")
>>> parse_dead_letter(rec)["raw"]
'{oops'
>>> big = parse_dead_letter(dead_letter(b"x" * 100_000, reason="too_large", error="",
...                                     source="worker"))
>>> len(original_bytes(big)), big["raw_bytes"], big["raw_truncated"]
(65536, 100000, True)
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

# Rejected bytes kept whole up to this size; beyond it the record keeps the
# first MAX_RAW_BYTES with the full size and SHA-256, so a dead letter always
# fits in a broker record (an oversized event once could not be dead-lettered).
MAX_RAW_BYTES = 64 * 1024


def dead_letter(
    raw: bytes | None,
    *,
    reason: str,
    error: str,
    source: str,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    producer: str | None = None,
) -> bytes:
    """Encode a dead-letter record; non-UTF-8 bytes are kept base64-encoded."""
    raw = raw or b""
    size, digest = len(raw), hashlib.sha256(raw).hexdigest()
    kept = raw[:MAX_RAW_BYTES]
    try:
        text, encoding = kept.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    return orjson.dumps({
        "reason": reason, "error": error, "source": source, "topic": topic,
        "partition": partition, "offset": offset, "producer": producer,
        "raw": text, "raw_encoding": encoding, "raw_bytes": size, "raw_sha256": digest,
        "raw_truncated": size > MAX_RAW_BYTES,
        "dead_at": datetime.now(UTC).isoformat(timespec="microseconds"),
    })


def parse_dead_letter(data: bytes) -> dict[str, Any]:
    """Decode a dead-letter record (the original bytes are in ``raw``)."""
    record: dict[str, Any] = orjson.loads(data)
    return record


def original_bytes(record: dict[str, Any]) -> bytes:
    """The bytes that were rejected, for inspection or re-drive.

    Only their first ``MAX_RAW_BYTES`` when ``raw_truncated`` (``raw_bytes``
    and ``raw_sha256`` describe the whole).
    """
    if record["raw_encoding"] == "base64":
        return base64.b64decode(record["raw"])
    return str(record["raw"]).encode()
