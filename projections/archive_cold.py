"""Cold storage of archived events: one folder per UTC day, shaped like an object store.

Layout (the same keys work on S3/MinIO)::

    <root>/date=YYYY-MM-DD/part-0.ndjson.gz
    <root>/date=YYYY-MM-DD/part-1.ndjson.gz     # late events exported after the day

Each line is one event in its wire shape (:meth:`schemas.Envelope.as_dict`)
plus ``"_src": [topic, partition, offset]``; every part file is sorted by
``(occurred_at, event_id)``, so a day reads back in event-time order by
merging its parts. Files are written to a temporary name and renamed, so a
crash never leaves a half-written part behind.

Only ``file://`` is implemented. Production points ``root_url`` at
``s3://bucket/prefix`` (MinIO in docker/); that needs an S3 client, see
:class:`ColdStore`.

>>> import tempfile, datetime
>>> root = tempfile.mkdtemp()
>>> cold = ColdStore(f"file://{root}/events")
>>> day = datetime.date(2025, 1, 2)
>>> cold.write_day(day, 0, [{"event_id": "e1", "occurred_at": "2025-01-02T00:00:00Z"}])
1
>>> [r["event_id"] for r in cold.read_day(day)], cold.days()
(['e1'], [datetime.date(2025, 1, 2)])
"""

from __future__ import annotations

import gzip
import heapq
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

_DAY = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_PART = re.compile(r"^part-(\d+)\.ndjson\.gz$")


class ColdStore:
    """Day-partitioned NDJSON.gz files under a ``file://`` root.

    Parameters
    ----------
    root_url
        ``file:///abs/path`` (or a plain path). ``s3://bucket/prefix`` is the
        production form; it raises :class:`NotImplementedError` naming what
        to install, because the embedded stack has no object store.
    """

    def __init__(self, root_url: str | os.PathLike[str]) -> None:
        text = os.fspath(root_url)
        parsed = urlparse(text)
        if parsed.scheme in ("s3", "s3a", "minio"):
            raise NotImplementedError(
                f"cold storage at {text!r} needs an S3 client, which the embedded stack "
                "does not ship: install `boto3` (or `s3fs`) and add an S3 ColdStore with the "
                "same layout (date=YYYY-MM-DD/part-N.ndjson.gz, written as one PUT per part), "
                "or use a file:// root (a mounted bucket works too)"
            )
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"unsupported cold storage URL {text!r}: use file:///path")
        path = unquote(parsed.path) if parsed.scheme == "file" else text
        self.root = Path(path)
        self.url = self.root.resolve().as_uri()

    def _day_dir(self, day: date) -> Path:
        return self.root / f"date={day.isoformat()}"

    def days(self) -> list[date]:
        """Every day that has at least one part, ascending."""
        if not self.root.is_dir():
            return []
        out = []
        for child in self.root.iterdir():
            m = _DAY.match(child.name)
            if m and self.parts(date.fromisoformat(m.group(1))):
                out.append(date.fromisoformat(m.group(1)))
        return sorted(out)

    def parts(self, day: date) -> list[Path]:
        """The part files of one day, by part number."""
        folder = self._day_dir(day)
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _PART.match(p.name))]
        return [p for _, p in sorted(found)]

    def write_day(self, day: date, part: int, records: Iterable[dict[str, Any]]) -> int:
        """Write ``records`` (already sorted) as ``part`` of ``day``; returns lines written.

        Nothing is written when ``records`` is empty. The file appears
        atomically (temporary name, fsync, rename).
        """
        folder = self._day_dir(day)
        final = folder / f"part-{part}.ndjson.gz"
        tmp = folder / f".part-{part}.{uuid.uuid4().hex}.tmp"
        n = 0
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb",
                                                       compresslevel=6, mtime=0) as gz:
                for rec in records:
                    gz.write(orjson.dumps(rec) + b"\n")
                    n += 1
            if n:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return n

    def _read_part(self, path: Path) -> Iterator[dict[str, Any]]:
        with gzip.open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield orjson.loads(line)

    def read_day(self, day: date) -> Iterator[dict[str, Any]]:
        """Records of one day in ``(occurred_at, event_id)`` order, merged over its parts."""
        parts = [self._read_part(p) for p in self.parts(day)]
        yield from heapq.merge(*parts, key=sort_key)

    def ids(self, day: date) -> set[str]:
        """Event ids already in cold storage for ``day`` (to skip re-exports)."""
        return {rec["event_id"] for rec in self.read_day(day)}

    def next_part(self, day: date) -> int:
        parts = self.parts(day)
        return int(_PART.match(parts[-1].name).group(1)) + 1 if parts else 0  # type: ignore[union-attr]


def sort_key(rec: dict[str, Any]) -> tuple[str, str]:
    """Order of cold records: ISO UTC time strings sort like the times, ids like UUIDs."""
    return rec["occurred_at"], rec["event_id"]
