"""``selflearn bench crypto``: what per-subject field encryption costs.

``encrypt_mean_us`` / ``decrypt_mean_us``: mean over 20 000 calls of one 300-byte field with
AES-256-GCM under a subject's data key, keys already cached (the steady state
of an agent or a reader), on the file-backed key store. ``new_subject_mean_ms``:
first encryption for a new subject (a data key made, wrapped and committed to
SQLite with fsync). ``rotate_s`` / ``rotate_keys``: re-wrapping every data key
under a new master-key version. ``erase_ms``: destroying one subject's keys.
Medians over ``RUNS`` runs.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from schemas.cipher import FieldCipher
from schemas.keystore_file import FileKeyStore

SUBJECTS = 2_000
FIELDS = 20_000
RUNS = 3
TEXT = ("Studio fails to build when the workspace path has a space; reported by a customer on "
        "Windows 10 with SDK 5.1.0 while packaging for the store. Steps: create a project, add "
        "a module, run a build; the CLI prints ENOENT for the build log and stops. x" * 2)[:300]


def _one_run(folder: Path) -> dict[str, float]:
    keys = FileKeyStore(folder)
    cipher = FieldCipher(keys)
    t0 = time.perf_counter()
    for i in range(SUBJECTS):
        cipher.encrypt(TEXT, subject_id=f"s{i}", event_id="e", field="title")
    new_subject_ms = (time.perf_counter() - t0) / SUBJECTS * 1e3
    tokens = []
    t0 = time.perf_counter()
    for i in range(FIELDS):
        tokens.append(cipher.encrypt(TEXT, subject_id=f"s{i % SUBJECTS}", event_id=f"e{i}",
                                     field="description"))
    enc_us = (time.perf_counter() - t0) / FIELDS * 1e6
    t0 = time.perf_counter()
    for i, token in enumerate(tokens):
        cipher.decrypt(token, event_id=f"e{i}", field="description")
    dec_us = (time.perf_counter() - t0) / FIELDS * 1e6
    t0 = time.perf_counter()
    rotation = keys.rotate_master()
    rotate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    keys.erase("s1")
    erase_ms = (time.perf_counter() - t0) * 1e3
    keys.close()
    return {"encrypt_mean_us": enc_us, "decrypt_mean_us": dec_us,
            "new_subject_mean_ms": new_subject_ms, "rotate_s": rotate_s,
            "rotate_keys": rotation.rewrapped, "erase_ms": erase_ms}


def run(runs: int = RUNS) -> dict[str, Any]:
    """Medians over ``runs`` fresh key folders."""
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="selflearn-bench-crypto-") as tmp:
            results.append(_one_run(Path(tmp) / "keys"))
    out: dict[str, Any] = {"runs": runs, "subjects": SUBJECTS, "fields": FIELDS, "field_bytes": 300}
    for key in results[0]:
        out[key] = round(statistics.median(r[key] for r in results), 3)
    return out


if __name__ == "__main__":
    print(json.dumps(run()))
