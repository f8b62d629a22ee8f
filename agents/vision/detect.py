"""Face detection that fits a 30 fps frame budget on one core.

Design (measured on Megamind.avi, 720x528, 2-core machine, one OpenCV thread):

* Full-resolution Haar (scaleFactor 1.1, minNeighbors 5) runs at 11-22 fps: too slow.
* **Detect on a downscaled image.** The scale is chosen from the smallest face we
  must find: Haar's window is 24 px, so ``scale = 24 / min_face_px``. With
  ``min_face_px=64`` (scale 0.375) a full-frame pass costs ~18 ms instead of ~90 ms.
  ``minNeighbors`` is lowered to 3 because downscaling removes evidence; extra
  boxes only cost a little extra blurring, a missed face is a privacy leak.
* **Global detection every k-th frame, boxes held in between.** With
  ``detect_every=2`` the cascade runs on every other frame; the frame between
  reuses the last boxes (a zero-order-hold tracker: at 24-30 fps a face moves a
  few pixels per frame, which the padding covers). Measured against the
  reference detector this *covers* reference faces better (mean 98 % of each
  reference box blurred) than re-running the cascade in a window around each
  previous box (94 %, and 5-9 ms per frame instead of ~0.2 ms).
* **Hold lost boxes.** A box that the next global pass does not confirm is kept
  for ``hold_passes`` more cascade passes, so one missed detection does not leave a face
  unblurred; the price is a little extra blurring after a face leaves.
* ``scaleFactor`` is 1.15 instead of 1.1: ~25 % faster at the same recall on
  the reference clip.
* Every returned box is grown by ``pad`` on each side: the blur covers hair line
  and chin that Haar's square tends to cut.

No worker thread: the loop stays on one core so a learner can use the other, and
the frame that is blurred is always the frame that was analysed (a detector
thread lagging behind would blur where the face *was*).

>>> import numpy as np
>>> det = FaceDetector()
>>> det.detect(np.zeros((120, 160, 3), dtype=np.uint8))
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from agents.vision.blur import Box, Frame, clip_box

HAAR_WINDOW_PX = 24
DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


def load_cascade(name: str = DEFAULT_CASCADE) -> cv2.CascadeClassifier:
    """Load a Haar cascade shipped with OpenCV (``cv2.data.haarcascades``).

    >>> load_cascade().empty()
    False
    """
    path = cv2.data.haarcascades + name  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(
            f"could not load Haar cascade {path!r}; install opencv-python-headless<5 "
            "(OpenCV 5 wheels no longer ship Haar cascades)"
        )
    return cascade


def to_gray(frame: Frame) -> Frame:
    """Return a single-channel uint8 view of ``frame`` (BGR, BGRA or already gray)."""
    if frame.ndim == 2:
        return frame
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return np.asarray(cv2.cvtColor(frame, code), dtype=np.uint8)


def detect_faces(gray: Frame, cascade: cv2.CascadeClassifier, *, scale: float = 1.0,
                 scale_factor: float = 1.1, min_neighbors: int = 3) -> list[Box]:
    """Run ``cascade`` on ``gray`` shrunk by ``scale``; return boxes in ``gray``'s pixels.

    Pure apart from the cascade (which OpenCV does not mutate between calls).

    >>> import numpy as np
    >>> detect_faces(np.zeros((60, 80), dtype=np.uint8), load_cascade(), scale=0.5)
    []
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    small: np.ndarray = gray
    if scale < 1.0:
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if min(small.shape[:2]) < HAAR_WINDOW_PX:
        return []
    found = cascade.detectMultiScale(small, scaleFactor=scale_factor, minNeighbors=min_neighbors)
    inv = 1.0 / scale
    return [
        (int(round(x * inv)), int(round(y * inv)), int(round(w * inv)), int(round(h * inv)))
        for (x, y, w, h) in np.asarray(found, dtype=np.int64).reshape(-1, 4)
    ]


def grow_box(box: Sequence[int], fraction: float) -> Box:
    """Grow ``(x, y, w, h)`` by ``fraction`` of its size on every side.

    >>> grow_box((10, 10, 100, 50), 0.1)
    (0, 5, 120, 60)
    """
    x, y, w, h = (int(v) for v in box)
    dx, dy = int(round(w * fraction)), int(round(h * fraction))
    return (x - dx, y - dy, w + 2 * dx, h + 2 * dy)


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area (1.0 when one contains the other)."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return (ix * iy) / smaller if smaller > 0 else 0.0


def merge_boxes(boxes: Sequence[Box], threshold: float = 0.6) -> list[Box]:
    """Drop boxes that lie mostly (``threshold``) inside a larger one; keep the larger.

    >>> merge_boxes([(0, 0, 100, 100), (10, 10, 50, 50), (200, 0, 10, 10)])
    [(0, 0, 100, 100), (200, 0, 10, 10)]
    """
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b[2] * b[3], reverse=True):
        if all(_overlap(box, k) < threshold for k in kept):
            kept.append(box)
    return kept


@dataclass
class _Track:
    box: Box  # unpadded detector box, full-resolution pixels
    missed: int = 0


@dataclass
class FaceDetector:
    """Stateful face detector: a cascade pass every ``detect_every`` frames, boxes held between.

    Parameters
    ----------
    min_face_px
        Smallest face (in full-resolution pixels) that must be found; sets the downscale.
    detect_every
        ``k``: a full-frame pass runs on frames 0, k, 2k, ...; 1 = every frame.
    hold_passes
        Cascade passes a box survives without being confirmed (1 = ``detect_every``
        extra frames).
    pad
        Fraction by which returned boxes are grown on every side (blur coverage).
    """

    min_face_px: int = 64
    detect_every: int = 2
    scale_factor: float = 1.15
    min_neighbors: int = 3
    hold_passes: int = 1
    pad: float = 0.15
    cascade: cv2.CascadeClassifier = field(default_factory=load_cascade, repr=False)
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _frame_no: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.min_face_px < HAAR_WINDOW_PX:
            raise ValueError(f"min_face_px must be >= {HAAR_WINDOW_PX}, got {self.min_face_px}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")

    @property
    def scale(self) -> float:
        """Downscale factor applied before running the cascade."""
        return HAAR_WINDOW_PX / self.min_face_px

    def reset(self) -> None:
        """Forget all tracks (e.g. after a scene cut or a source change)."""
        self._tracks = []
        self._frame_no = 0

    def detect(self, frame: Frame) -> list[Box]:
        """Return padded face boxes ``(x, y, w, h)`` for ``frame``, clipped to the frame."""
        height, width = frame.shape[:2]
        if self._frame_no % self.detect_every == 0:
            gray = to_gray(frame)
            found = detect_faces(gray, self.cascade, scale=self.scale,
                                 scale_factor=self.scale_factor,
                                 min_neighbors=self.min_neighbors)
            self._update(found)
        self._frame_no += 1
        out = (clip_box(grow_box(t.box, self.pad), width, height) for t in self._tracks)
        return [b for b in out if b is not None]

    def _update(self, found: list[Box]) -> None:
        """Replace tracks by fresh boxes; keep unconfirmed tracks for ``hold_passes`` passes."""
        fresh = [_Track(b) for b in merge_boxes(found)]
        for track in self._tracks:
            if any(_overlap(track.box, f.box) > 0.3 for f in fresh):
                continue
            track.missed += 1
            if track.missed <= self.hold_passes:
                fresh.append(track)
        self._tracks = fresh
