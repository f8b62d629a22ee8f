"""Vision agent: real-time face blurring on a camera or a replayed video file.

Capture (:mod:`agents.vision.capture`), detection (:mod:`agents.vision.detect`,
which documents the speed/recall design), blurring (:mod:`agents.vision.blur`)
and the loop that emits ``frame.processed`` events (:mod:`agents.vision.loop`).

>>> from ops.data import data_path
>>> stats = run_vision(data_path("video/Megamind.avi"), lambda t, p: None,
...                    target_fps=0, max_frames=3)
>>> stats.frames
3
"""

from agents.vision.blur import Box, anonymize, clip_box, pixelate_region
from agents.vision.capture import CapturedFrame, FrameGrabber, FrameSource, open_source
from agents.vision.centerface import CenterFace
from agents.vision.detect import (
    CenterFaceFinder,
    FaceDetector,
    HaarFinder,
    detect_faces,
    load_cascade,
)
from agents.vision.loop import (
    EVENT_TYPE,
    VisionPipeline,
    VisionStats,
    frame_payload,
    run_vision,
)

__all__ = [
    "EVENT_TYPE",
    "Box",
    "CapturedFrame",
    "CenterFace",
    "CenterFaceFinder",
    "FaceDetector",
    "FrameGrabber",
    "FrameSource",
    "HaarFinder",
    "VisionPipeline",
    "VisionStats",
    "anonymize",
    "clip_box",
    "detect_faces",
    "frame_payload",
    "load_cascade",
    "open_source",
    "pixelate_region",
    "run_vision",
]
