"""PII detection quality: every detector mode against the hand-labelled texts.

``evaluate pii`` scores every detector mode on the hand-labelled issue texts
(``ops/data/pii/labels.jsonl``): ``scanner`` (the SDK's scrubber today,
``agents.privacy``), ``pattern`` (:class:`schemas.pii.PatternDetector`),
``presidio`` (Presidio, no NLP model) and ``ner`` (Presidio + spaCy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.pii import Detector, Finding

MODES = ("scanner", "pattern", "presidio", "ner")
SPLITS = ("test", "dev", "all")
# The SDK scrubber's kinds -> the labelled types.
_SCANNER_TYPES = {"URL_CREDENTIALS": "KEY", "IP": "HOST"}


class ScannerDetector:
    """Today's SDK scrubber (``agents.privacy``) seen through the Detector interface."""

    mode = "scanner"

    def analyze(self, text: str) -> list[Finding]:
        from agents.privacy import findings

        found = [Finding(_SCANNER_TYPES.get(kind, kind), start, end)
                 for kind, start, end in findings(text)]
        return sorted(found, key=lambda f: (f.start, f.end, f.type))


def detector(mode: str) -> Detector:
    """A detector for ``mode`` (one of :data:`MODES`)."""
    if mode == "scanner":
        return ScannerDetector()
    if mode == "pattern":
        from schemas.pii import PatternDetector

        return PatternDetector()
    from schemas.pii_presidio import PresidioDetector

    return PresidioDetector(ner=mode == "ner")


class _Memo:
    """Analyse each text once: the splits overlap (``all`` is ``dev`` + ``test``)."""

    def __init__(self, inner: Detector) -> None:
        self.inner, self.mode = inner, inner.mode
        self._seen: dict[str, list[Finding]] = {}

    def analyze(self, text: str) -> list[Finding]:
        if text not in self._seen:
            self._seen[text] = self.inner.analyze(text)
        return self._seen[text]


def evaluate_pii(modes: tuple[str, ...] = MODES, labels: Path | None = None) -> dict[str, Any]:
    """Per mode and split: per-type precision/recall and the micro average of labelled types."""
    from ops.data import data_path
    from projections.pii_eval import LABELLED, load_labels, micro, score

    path = labels or data_path("pii") / "labels.jsonl"
    samples = load_labels(path)
    result: dict[str, Any] = {
        "labels": str(path), "texts": len(samples),
        "texts_with_pii": sum(1 for s in samples if s.spans), "iou": 0.5,
        "labelled_types": list(LABELLED), "modes": {},
    }
    for mode in modes:
        found = _Memo(detector(mode))
        per_split = {}
        for split in SPLITS:
            chosen = [s for s in samples if split == "all" or s.split == split]
            report = score(found, chosen)
            per_split[split] = {"texts": len(chosen), "micro": micro(report), "types": report}
        result["modes"][mode] = per_split
    return result
