"""Precision and recall of a PII detector against hand-labelled issue texts.

The labels (``ops/data/pii/labels.jsonl``, guidelines in its README) are
spans of real story-point issue texts, each marked ``dev`` or ``test``: the
recognisers were tuned looking at ``dev`` errors only, so ``test`` is the
honest figure. A predicted span counts as found when it has the gold span's
type and an intersection-over-union of at least ``iou`` (0.5, as in
presidio-evaluator's span evaluator); each gold span matches at most once.

>>> from schemas.pii import Finding
>>> s = Sample("X-1", "dev", "mail bob@x.org", (Span(5, 14, "EMAIL"),))
>>> class Fixed:
...     mode = "fixed"
...     def analyze(self, text):
...         return [Finding("EMAIL", 5, 14), Finding("PERSON", 0, 4)]
>>> r = score(Fixed(), [s])
>>> r["EMAIL"]["precision"], r["EMAIL"]["recall"], r["PERSON"]["fp"]
(1.0, 1.0, 1)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.pii import TYPES, Detector, Finding

LABELLED = ("PERSON", "EMAIL", "USER", "HOME", "HOST", "KEY")


@dataclass(frozen=True, slots=True)
class Span:
    """One gold span ``text[start:end]`` of type ``type``."""

    start: int
    end: int
    type: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled issue text."""

    id: str
    split: str
    text: str
    spans: tuple[Span, ...]


def load_labels(path: str | Path, split: str = "all") -> list[Sample]:
    """Samples of ``split`` (``dev``, ``test`` or ``all``) from a labels JSONL file.

    >>> from ops.data import data_path
    >>> all_ = load_labels(data_path("pii") / "labels.jsonl")
    >>> len(all_) >= 200, sum(1 for s in all_ if s.spans) >= 100
    (True, True)
    """
    samples = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if split != "all" and rec["split"] != split:
            continue
        spans = tuple(Span(s["start"], s["end"], s["type"]) for s in rec["spans"])
        samples.append(Sample(rec["id"], rec["split"], rec["text"], spans))
    return samples


def _iou(a: Finding | Span, b: Span) -> float:
    inter = min(a.end, b.end) - max(a.start, b.start)
    if inter <= 0:
        return 0.0
    return inter / (max(a.end, b.end) - min(a.start, b.start))


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 3) if den else None


def score(detector: Detector, samples: Iterable[Sample], iou: float = 0.5,
          types: Sequence[str] = TYPES) -> dict[str, dict[str, Any]]:
    """Per type: ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` (None if undefined)."""
    counts = {t: {"tp": 0, "fp": 0, "fn": 0} for t in types}
    for sample in samples:
        predicted = detector.analyze(sample.text)
        for kind in types:
            gold = [s for s in sample.spans if s.type == kind]
            pred = [f for f in predicted if f.type == kind]
            used: set[int] = set()
            for f in pred:
                best = max(((i, _iou(f, g)) for i, g in enumerate(gold) if i not in used),
                           key=lambda pair: pair[1], default=(-1, 0.0))
                if best[1] >= iou:
                    used.add(best[0])
                    counts[kind]["tp"] += 1
                else:
                    counts[kind]["fp"] += 1
            counts[kind]["fn"] += len(gold) - len(used)
    report: dict[str, dict[str, Any]] = {}
    for kind, c in counts.items():
        p = _ratio(c["tp"], c["tp"] + c["fp"])
        r = _ratio(c["tp"], c["tp"] + c["fn"])
        f1 = round(2 * p * r / (p + r), 3) if p and r else None
        report[kind] = {**c, "precision": p, "recall": r, "f1": f1}
    return report


def micro(report: dict[str, dict[str, Any]], types: Sequence[str] = LABELLED) -> dict[str, Any]:
    """Micro-averaged precision/recall over ``types`` (the labelled ones by default)."""
    tp = sum(report[t]["tp"] for t in types)
    fp = sum(report[t]["fp"] for t in types)
    fn = sum(report[t]["fn"] for t in types)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn)}


def errors(detector: Detector, samples: Iterable[Sample], iou: float = 0.5
           ) -> list[tuple[str, str, str, str]]:
    """``(sample id, "FP"|"FN", type, span text)`` for looking at mistakes (dev split)."""
    out = []
    for s in samples:
        pred = detector.analyze(s.text)
        for f in pred:
            if not any(g.type == f.type and _iou(f, g) >= iou for g in s.spans):
                out.append((s.id, "FP", f.type, s.text[f.start:f.end]))
        for g in s.spans:
            if not any(f.type == g.type and _iou(f, g) >= iou for f in pred):
                out.append((s.id, "FN", g.type, s.text[g.start:g.end]))
    return out


_LOWER_WORD = re.compile(r"(?<![\w.'’-])[a-z]{2,}(?![\w'’-])")


def common_words(texts: Iterable[str], min_docs: int = 5) -> list[str]:
    """Words written in lower case in at least ``min_docs`` of ``texts``, sorted.

    Product and code words of the domain ("studio", "qserv", "schema") are
    written in lower case often; personal names almost never are. The NER mode
    drops a PERSON span whose every word is in this list
    (``schemas/pii_common_words.txt``: :func:`story_common_words` of the shipped
    story-point texts less the labelled ones; a test checks it is current).

    >>> common_words(["the Studio", "the studio", "studio crashed", "Mario said"], 2)
    ['studio', 'the']
    """
    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(_LOWER_WORD.findall(text)))
    return sorted(w for w, n in df.items() if n >= min_docs)


def story_common_words(storypoints: str | Path, labels: str | Path) -> list[str]:
    """:func:`common_words` of the story-point texts that are not in ``labels``."""
    from projections.datasets import iter_storypoints

    held_out = {s.id for s in load_labels(labels)}
    return common_words(f"{r.title}\n{r.description}" for r in iter_storypoints(storypoints)
                        if r.issuekey not in held_out)
