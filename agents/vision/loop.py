"""The real-time vision loop: capture -> detect -> blur -> emit, one frame at a time.

Data flow (one process, at most ~1 core):

    FrameGrabber thread --(queue of 1-2, drop oldest when live)--> VisionPipeline.run
        -> FaceDetector.detect -> anonymize (in place) -> emit("frame.processed", payload)
        -> on_frame(blurred_frame, payload)

Only the blurred frame ever leaves the loop (``on_frame``); the emitted payload holds
numbers and boxes, never pixels; ``frame_no`` counts captured frames, so gaps show
where frames were dropped (``dropped`` is the running total). ``emit`` is
non-blocking by contract (the SDK queues); if it raises, the error is logged and
counted and the loop goes on.

>>> from ops.data import data_path
>>> events = []
>>> stats = run_vision(data_path("video/Megamind.avi"), lambda t, p: events.append((t, p)),
...                    target_fps=0, max_frames=5)
>>> stats.frames, events[0][0], sorted(events[0][1])[:3]
(5, 'frame.processed', ['boxes', 'camera_id', 'capture_latency_ms'])
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agents.vision.blur import Box, Frame, anonymize
from agents.vision.capture import (
    DirectReader,
    FrameGrabber,
    FrameSource,
    Source,
    is_live,
    open_source,
)
from agents.vision.detect import FaceDetector

log = logging.getLogger(__name__)

EVENT_TYPE = "frame.processed"
Emit = Callable[[str, dict[str, Any]], object]
OnFrame = Callable[[Frame, dict[str, Any]], None]


def frame_payload(*, camera_id: str, frame_no: int, fps: float, capture_latency_ms: float,
                  processing_latency_ms: float, boxes: list[Box], dropped: int) -> dict[str, Any]:
    """Build the ``frame.processed`` payload: plain numbers, strings and lists of ints only.

    >>> frame_payload(camera_id="cam0", frame_no=7, fps=29.97, capture_latency_ms=1.23456,
    ...               processing_latency_ms=8.0, boxes=[(1, 2, 3, 4)], dropped=0)["boxes"]
    [[1, 2, 3, 4]]
    """
    return {
        "camera_id": str(camera_id),
        "frame_no": int(frame_no),
        "fps": round(float(fps), 2),
        "capture_latency_ms": round(float(capture_latency_ms), 3),
        "processing_latency_ms": round(float(processing_latency_ms), 3),
        "faces": len(boxes),
        "boxes": [[int(v) for v in box] for box in boxes],
        "dropped": int(dropped),
    }


@dataclass
class VisionStats:
    """What one run did; ``frame_ms`` holds each frame's processing time for benchmarks."""

    frames: int = 0
    dropped: int = 0
    emit_errors: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    elapsed_s: float = 0.0
    frame_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def fps(self) -> float:
        """Processed frames per wall-clock second over the whole run."""
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """``q``-th percentile (0-100) of per-frame processing time in ms (0.0 if no frames)."""
        return float(np.percentile(self.frame_ms, q)) if self.frame_ms else 0.0


class VisionPipeline:
    """Capture, detect faces, blur them, emit one ``frame.processed`` event per frame.

    Parameters
    ----------
    source
        Camera index, video file path, or an opened :class:`FrameSource`.
    emit
        ``emit(event_type, payload)``; must not block (the SDK's emitter queues).
    camera_id
        Identifies the stream in events; default ``camera<N>`` or the file's stem.
    target_fps
        Replay a file at this rate; ``None``/``0`` means no pacing (as fast as possible).
        Ignored for cameras, which deliver at their own rate.
    loop
        Replay a file forever (stop with ``max_frames`` or :meth:`stop`).
    drop_when_behind
        See :class:`FrameGrabber`; default: drop when live or paced, wait otherwise.
    detector
        A configured :class:`FaceDetector` (default settings when omitted).
    cells
        Pixelation blocks across a face (fewer = stronger anonymisation).
    opencv_threads
        ``cv2.setNumThreads`` value, process-wide; 1 keeps the loop on one core.
    threaded
        Read on a :class:`FrameGrabber` thread. Default: only when paced or dropping;
        an unpaced lossless run reads in the loop's thread (:class:`DirectReader`).
    """

    def __init__(self, source: Source, emit: Emit, *, camera_id: str | None = None,
                 target_fps: float | None = 30.0, loop: bool = False,
                 drop_when_behind: bool | None = None, queue_size: int = 2,
                 detector: FaceDetector | None = None, cells: int = 8,
                 opencv_threads: int = 1, threaded: bool | None = None) -> None:
        if opencv_threads > 0:
            cv2.setNumThreads(opencv_threads)
        self.source = source
        self.emit = emit
        self.camera_id = camera_id or _default_camera_id(source)
        self.target_fps = target_fps
        self.loop = loop
        self.drop_when_behind = (True if is_live(source) and drop_when_behind is None
                                 else drop_when_behind)
        self.queue_size = queue_size
        self.threaded = threaded
        self.detector = detector or FaceDetector()
        self.cells = cells
        self._grabber: FrameGrabber | DirectReader | None = None
        self._stopping = False

    def process(self, frame: Frame) -> tuple[Frame, list[Box]]:
        """Detect and blur one frame in place; return ``(blurred_frame, boxes)``."""
        boxes = self.detector.detect(frame)
        return anonymize(frame, boxes, cells=self.cells, inplace=True), boxes

    def stop(self) -> None:
        """Ask a running :meth:`run` to return after the current frame (thread-safe)."""
        self._stopping = True

    def run(self, max_frames: int | None = None, on_frame: OnFrame | None = None) -> VisionStats:
        """Process frames until the source ends, ``max_frames`` are done, or :meth:`stop`."""
        opened: FrameSource = (self.source if isinstance(self.source, FrameSource)
                               else open_source(self.source))
        # A camera delivers at its own rate (read() blocks): pacing it would only let
        # frames pile up in the driver, so only files are paced.
        pace = None if is_live(self.source) else self.target_fps
        grabber: FrameGrabber | DirectReader
        if self.threaded if self.threaded is not None else bool(pace or self.drop_when_behind):
            grabber = FrameGrabber(opened, target_fps=pace, loop=self.loop,
                                   drop_when_behind=self.drop_when_behind,
                                   queue_size=self.queue_size)
        else:  # unpaced and lossless: reading on this thread keeps the run on one core
            grabber = DirectReader(opened, loop=self.loop)
        self._grabber, self._stopping = grabber, False
        stats = VisionStats()
        recent: deque[float] = deque(maxlen=30)
        started = time.perf_counter()
        grabber.start()
        try:
            while not self._stopping and (max_frames is None or stats.frames < max_frames):
                item = grabber.get()
                if item is None:
                    break
                t0 = time.perf_counter()
                blurred, boxes = self.process(item.frame)
                recent.append(t0)
                fps = (len(recent) - 1) / (t0 - recent[0]) if t0 > recent[0] else 0.0
                payload = frame_payload(
                    camera_id=self.camera_id, frame_no=item.frame_no, fps=fps,
                    capture_latency_ms=(t0 - item.grabbed_at) * 1e3,
                    processing_latency_ms=(time.perf_counter() - t0) * 1e3,
                    boxes=boxes, dropped=grabber.dropped)
                self._emit(payload, stats)
                stats.frame_ms.append((time.perf_counter() - t0) * 1e3)
                stats.frames += 1
                stats.faces += len(boxes)
                stats.frames_with_faces += bool(boxes)
                if on_frame is not None:
                    on_frame(blurred, payload)
        finally:
            stats.elapsed_s = time.perf_counter() - started
            grabber.stop()
            stats.dropped = grabber.dropped
            self._grabber = None
        if grabber.error is not None:
            raise RuntimeError(f"capture from {self.camera_id!r} failed") from grabber.error
        return stats

    def _emit(self, payload: dict[str, Any], stats: VisionStats) -> None:
        try:
            self.emit(EVENT_TYPE, payload)
        except Exception:
            stats.emit_errors += 1
            if stats.emit_errors == 1:
                log.exception("emit(%r) raised; counting and going on", EVENT_TYPE)
            elif stats.emit_errors % 1000 == 0:
                log.warning("emit(%r) has raised %d times", EVENT_TYPE, stats.emit_errors)


def _default_camera_id(source: Source) -> str:
    if is_live(source):
        return f"camera{source}"
    if isinstance(source, str | Path):
        return Path(source).stem
    return type(source).__name__


def run_vision(source: Source, emit: Emit, *, target_fps: float | None = 30.0,
               max_frames: int | None = None, loop: bool = False,
               on_frame: OnFrame | None = None, **options: Any) -> VisionStats:
    """Run :class:`VisionPipeline` on ``source`` and return its :class:`VisionStats`.

    ``options`` go to :class:`VisionPipeline` (``camera_id``, ``detector``, ...).
    """
    pipeline = VisionPipeline(source, emit, target_fps=target_fps, loop=loop, **options)
    return pipeline.run(max_frames=max_frames, on_frame=on_frame)
