"""Frame capture: a camera index or a video file, read on its own thread into a bounded queue.

A file is replayed at ``target_fps`` (default 30) to stand in for a camera, optionally
looping; ``target_fps=None`` or ``0`` reads as fast as the consumer takes frames.

Back-pressure policy (``drop_when_behind``):

* **live** (a camera, or a paced file): the queue holds at most ``queue_size``
  frames; when it is full the *oldest* frame is discarded and counted in
  ``dropped``. The consumer always gets the freshest frame and memory never grows.
* **unpaced file** (benchmarks, offline runs): the reader blocks until the
  consumer has room, so every frame is processed and none is dropped. The loop
  uses :class:`DirectReader` here by default (reads in the loop's own thread),
  which keeps the whole run on one core.

>>> import numpy as np
>>> class Three:
...     n = 0
...     def read(self):
...         self.n += 1
...         return (self.n <= 3, np.zeros((4, 4, 3), np.uint8) if self.n <= 3 else None)
...     def release(self): pass
>>> grabber = FrameGrabber(Three(), target_fps=None)
>>> grabber.start()
>>> [f.frame_no for f in iter(grabber.get, None)]
[0, 1, 2]
>>> grabber.stop(); grabber.dropped
0
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from agents.vision.blur import Frame

log = logging.getLogger(__name__)


@runtime_checkable
class FrameSource(Protocol):
    """What the grabber needs from a source: ``cv2.VideoCapture`` satisfies it."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """Return ``(ok, frame)``; ``ok`` is False at the end of the source."""
        ...

    def release(self) -> None:
        """Free the device or file."""
        ...


Source = str | int | Path | FrameSource


def open_source(source: str | int | Path) -> cv2.VideoCapture:
    """Open a camera index (``0``, or ``"0"``) or a video file with OpenCV.

    >>> from ops.data import data_path
    >>> open_source(data_path("video/Megamind.avi")).isOpened()
    True
    """
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    if isinstance(source, int):
        cap = cv2.VideoCapture(source)
        what = f"camera {source}"
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"video file {str(path)!r} does not exist")
        cap = cv2.VideoCapture(str(path))
        what = f"video file {str(path)!r}"
    if not cap.isOpened():
        raise OSError(f"OpenCV could not open {what}; check the device index or the codec")
    return cap


def is_live(source: Source) -> bool:
    """True for a camera (an ``int`` or a digit string): it cannot be paused or rewound."""
    return isinstance(source, int) or (isinstance(source, str) and source.isdigit())


@dataclass(frozen=True)
class CapturedFrame:
    """One frame as read from the source, before any processing."""

    frame_no: int
    frame: Frame
    grabbed_at: float  # time.perf_counter() just before the read started


def read_next(source: FrameSource, frame_no: int, *, loop: bool = False) -> CapturedFrame | None:
    """Read one frame (rewinding a file once when ``loop``); ``None`` at the end of the source."""
    grabbed_at = time.perf_counter()
    ok, frame = source.read()
    if (not ok or frame is None) and loop and hasattr(source, "set"):
        source.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, frame = source.read()  # failing right after a rewind: the source is dead
    if not ok or frame is None:
        return None
    return CapturedFrame(frame_no, np.asarray(frame, dtype=np.uint8), grabbed_at)


class DirectReader:
    """Reads on demand in the consumer's thread: for unpaced runs where nothing may be dropped.

    Same interface as :class:`FrameGrabber`. Without a reader thread, decoding and
    processing share one core, so an offline or benchmark run stays within one core
    instead of overlapping decode with processing on a second one.
    """

    def __init__(self, source: FrameSource, *, loop: bool = False) -> None:
        self.source = source
        self.loop = loop
        self.dropped = 0
        self.captured = 0
        self.max_queued = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        """Nothing to start (present for interface parity with :class:`FrameGrabber`)."""

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """Read and return the next frame, or ``None`` at the end of the source."""
        item = read_next(self.source, self.captured, loop=self.loop)
        self.captured += item is not None
        return item

    def stop(self) -> None:
        """Release the source."""
        self.source.release()


class FrameGrabber(threading.Thread):
    """Read frames on a daemon thread into a bounded queue; ``get()`` returns ``None`` at the end.

    Parameters
    ----------
    source
        An opened :class:`FrameSource` (e.g. from :func:`open_source`).
    target_fps
        Pace reads to this rate; ``None``/``0`` reads as fast as allowed.
    loop
        When the source ends, rewind it (``CAP_PROP_POS_FRAMES = 0``) and go on.
    drop_when_behind
        Discard the oldest queued frame instead of waiting when the queue is full.
        Defaults to ``True`` when paced, ``False`` when unpaced.
    queue_size
        Capacity of the queue (1-2 keeps latency at most two frames).
    """

    def __init__(self, source: FrameSource, *, target_fps: float | None = 30.0,
                 loop: bool = False, drop_when_behind: bool | None = None,
                 queue_size: int = 2) -> None:
        super().__init__(name="vision-capture", daemon=True)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self.period = 1.0 / target_fps if target_fps else 0.0
        self.loop = loop
        self.drop_when_behind = bool(self.period) if drop_when_behind is None else drop_when_behind
        self.queue: queue.Queue[CapturedFrame | None] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.captured = 0
        self.max_queued = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """Next frame, or ``None`` when the source has ended (raises ``queue.Empty`` on timeout)."""
        return self.queue.get(timeout=timeout)

    def stop(self) -> None:
        """Ask the thread to finish, wait for it, and release the source."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5.0)
        self.source.release()

    def run(self) -> None:
        try:
            self._read_loop()
        except BaseException as exc:  # surfaced to the consumer via .error
            log.exception("vision capture failed")
            self.error = exc
        finally:
            self._put_blocking(None)

    def _read_loop(self) -> None:
        next_due = time.perf_counter()
        while not self._halt.is_set():
            if self.period:
                delay = next_due - time.perf_counter()
                if delay > 0:
                    self._halt.wait(delay)
                elif delay < -self.period:  # fell behind: do not burst to catch up
                    next_due = time.perf_counter()
                next_due += self.period
            item = read_next(self.source, self.captured, loop=self.loop)
            if item is None:
                return
            self.captured += 1
            if self.drop_when_behind:
                self._put_dropping_oldest(item)
            else:
                self._put_blocking(item)
            self.max_queued = max(self.max_queued, self.queue.qsize())

    def _put_dropping_oldest(self, item: CapturedFrame) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:  # consumer took it meanwhile
                    pass

    def _put_blocking(self, item: CapturedFrame | None) -> None:
        while True:
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._halt.is_set():
                    return
