"""Benchmark: vision loop speed alone and while a learner is busy in another process.

``python -m ops.benches.vision`` prints one JSON object::

    fps_alone          median fps over runs, Megamind.avi native size, unpaced
    fps_under_load     same while ``python -m projections.learn_load`` runs
    fps_drop_pct       100 * (fps_alone - fps_under_load) / fps_alone
    p50_frame_ms       median per-frame processing time under load (median of runs)
    p99_frame_ms       99th percentile per-frame processing time under load (median of runs)
    p99_frame_ms_alone 99th percentile alone
    vision_cpu_cores   CPU seconds per wall second used by the vision process (<= ~1 wanted)
    load_cpu_cores     same for the learning process while measured (proves it was busy)
    load               which load ran: "projections.learn_load" or "inline-river"
    fps_under_niced_load, fps_drop_pct_niced, niced_load_cpu_cores
                       the same with the learner at ``nice 10`` (low priority)

Targets (2-core machine): fps_alone >= 60, fps_under_load >= 30, fps_drop_pct <= 5.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.vision import run_vision
from ops.data import data_path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOAD_MODULE = "projections.learn_load"
INLINE_LOAD = """
from river import datasets, linear_model, preprocessing, tree
models = [preprocessing.StandardScaler() | linear_model.LinearRegression(),
          tree.HoeffdingTreeRegressor()]
while True:
    for x, y in datasets.TrumpApproval():
        for m in models:
            m.predict_one(x)
            m.learn_one(x, y)
"""


def _measure(runs: int) -> dict[str, float]:
    """Run the clip ``runs`` times unpaced; return medians of fps, p50, p99 and CPU use."""
    video = data_path("video/Megamind.avi")
    fps, p50, p99, cores = [], [], [], []
    for _ in range(runs):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        stats = run_vision(video, lambda event_type, payload: None, target_fps=0)
        cores.append((time.process_time() - cpu0) / (time.perf_counter() - wall0))
        fps.append(stats.fps)
        p50.append(stats.percentile_ms(50))
        p99.append(stats.percentile_ms(99))
    return {"fps": statistics.median(fps), "p50": statistics.median(p50),
            "p99": statistics.median(p99), "cores": statistics.median(cores)}


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` from /proc (None where /proc is unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start_load(nice: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """Start the learning load in another process; inline River loop if the module is missing.

    ``nice`` > 0 lowers the learner's scheduling priority (POSIX only).
    """
    if importlib.util.find_spec(LOAD_MODULE) is not None:
        cmd, name = [sys.executable, "-m", LOAD_MODULE], LOAD_MODULE
    else:
        cmd, name = [sys.executable, "-c", INLINE_LOAD], "inline-river"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    stderr = tempfile.TemporaryFile()
    lower_priority = (lambda: os.nice(nice)) if nice > 0 and hasattr(os, "nice") else None
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=stderr, preexec_fn=lower_priority)
    time.sleep(3.0)  # imports (river, data) finish; the learner is now in its hot loop
    if proc.poll() is not None:
        stderr.seek(0)
        raise RuntimeError(f"learning load {name} exited with {proc.returncode}: "
                           f"{stderr.read().decode(errors='replace')[-2000:]}")
    return proc, name


def measure_under_load(runs: int, nice: int = 0) -> tuple[dict[str, float], float, str]:
    """Measure while the learning load runs; return (medians, load CPU cores, load name)."""
    proc, load_name = start_load(nice)
    try:
        cpu0, wall0 = _cpu_seconds(proc.pid), time.perf_counter()
        loaded = _measure(runs)
        cpu1, wall1 = _cpu_seconds(proc.pid), time.perf_counter()
        alive = proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
    if not alive:
        raise RuntimeError(f"learning load {load_name} died during the measurement")
    load_cores = (cpu1 - cpu0) / (wall1 - wall0) if cpu0 is not None and cpu1 is not None else -1
    return loaded, load_cores, load_name


def run(runs: int = 5, niced_load: int = 10) -> dict[str, Any]:
    """Measure the vision loop alone and under a learning load; return a flat dict.

    With ``niced_load`` > 0 a third measurement runs the same load at that niceness
    (``fps_under_niced_load``): what deploying learners at low priority would buy.
    """
    _measure(1)  # warm-up: cascade load, file cache, page faults
    alone = _measure(runs)
    loaded, load_cores, load_name = measure_under_load(runs)
    result: dict[str, Any] = {
        "fps_alone": round(alone["fps"], 1),
        "fps_under_load": round(loaded["fps"], 1),
        "fps_drop_pct": round(100.0 * (alone["fps"] - loaded["fps"]) / alone["fps"], 1),
        "p50_frame_ms": round(loaded["p50"], 2),
        "p99_frame_ms": round(loaded["p99"], 2),
        "p50_frame_ms_alone": round(alone["p50"], 2),
        "p99_frame_ms_alone": round(alone["p99"], 2),
        "vision_cpu_cores": round(alone["cores"], 2),
        "load_cpu_cores": round(load_cores, 2),
        "load": load_name,
        "runs": runs,
    }
    if niced_load > 0:
        niced, niced_cores, _ = measure_under_load(runs, nice=niced_load)
        result["fps_under_niced_load"] = round(niced["fps"], 1)
        result["fps_drop_pct_niced"] = round(
            100.0 * (alone["fps"] - niced["fps"]) / alone["fps"], 1)
        result["niced_load_cpu_cores"] = round(niced_cores, 2)
    return result


if __name__ == "__main__":
    print(json.dumps(run()))
