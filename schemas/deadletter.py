"""Dead-letter records: the rejected bytes, kept whole, with why and where they came from.

>>> rec = dead_letter(b"{oops", reason="malformed", error="not valid JSON", source="sdk")
>>> parse_dead_letter(rec)["raw"]
'{oops'
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson


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
    try:
        text, encoding = raw.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode(), "base64"
    return orjson.dumps({
        "reason": reason, "error": error, "source": source, "topic": topic,
        "partition": partition, "offset": offset, "producer": producer,
        "raw": text, "raw_encoding": encoding,
        "dead_at": datetime.now(UTC).isoformat(timespec="microseconds"),
    })


def parse_dead_letter(data: bytes) -> dict[str, Any]:
    """Decode a dead-letter record (the original bytes are in ``raw``)."""
    record: dict[str, Any] = orjson.loads(data)
    return record


def original_bytes(record: dict[str, Any]) -> bytes:
    """The exact bytes that were rejected, for inspection or re-drive."""
    if record["raw_encoding"] == "base64":
        return base64.b64decode(record["raw"])
    return str(record["raw"]).encode()
