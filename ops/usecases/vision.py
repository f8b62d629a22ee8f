"""Run the vision agent on a video file or camera, with its Prometheus metrics."""

from __future__ import annotations

from typing import Any

DEFAULT_VIDEO = "video/Megamind.avi"  # shipped in ops/data


def video_source(source: str) -> str | int:
    """A camera index for digits, else a file; empty: the shipped video.

    >>> video_source("0"), video_source("clip.mp4")
    (0, 'clip.mp4')
    >>> str(video_source("")).endswith("Megamind.avi")
    True
    """
    from ops.data import data_path

    src: str | int = source or str(data_path(DEFAULT_VIDEO))
    if isinstance(src, str) and src.isdigit():
        src = int(src)
    return src


def run_camera(settings: Any, source: str, *, fps: float = 30.0, loop: bool = False,
               duration: float = 0.0, camera_id: str = "camera-1") -> dict[str, Any]:
    """Detect and blur faces, emit ``frame.processed`` events; returns the frame statistics.

    Raises :class:`schemas.addresses.StackNotRunning` when the broker is not known.
    """
    from agents.client import AgentClient
    from agents.vision import run_vision
    from ops.metrics import observe_frame, start_metrics_server

    src = video_source(source)
    client = AgentClient.from_settings(camera_id, settings)
    max_frames = int(duration * fps) if duration and fps else None
    start_metrics_server()

    def observe(_frame: object, payload: dict[str, Any]) -> None:
        observe_frame(camera_id, payload["fps"], payload["processing_latency_ms"] / 1000)

    try:
        stats = run_vision(src, client.emit, target_fps=fps, loop=loop, max_frames=max_frames,
                           camera_id=camera_id, on_frame=observe)
    finally:
        client.close(timeout=5)
    return {"frames": stats.frames, "dropped": stats.dropped, "fps": stats.fps,
            "p99_frame_ms": stats.percentile_ms(99), "faces": stats.faces}
