"""``selflearn evaluate pii`` and ``selflearn export``: PII detection quality, anonymous exports.

``evaluate pii`` scores every detector mode on the hand-labelled issue texts
(``ops/data/pii/labels.jsonl``): ``scanner`` (the SDK's scrubber today,
``agents.privacy``), ``pattern`` (:class:`schemas.pii.PatternDetector`),
``presidio`` (Presidio, no NLP model) and ``ner`` (Presidio + spaCy).
``export`` writes a k-anonymous CSV (:mod:`projections.export`) and checks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.cli import AsJson, app, fail
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


def print_pii(result: dict[str, Any], split: str = "test") -> None:
    """Precision/recall per type and mode for one split, as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"PII detection on {split} ({result['texts']} labelled texts in all)")
    table.add_column("type")
    modes = list(result["modes"])
    for mode in modes:
        table.add_column(f"{mode} P / R", justify="right")
    types = [*result["labelled_types"], "PHONE", "CARD"]

    def cell(d: dict[str, Any]) -> str:
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f}"
        return f"{f(d['precision'])} / {f(d['recall'])}"

    for kind in types:
        table.add_row(kind, *[cell(result["modes"][m][split]["types"][kind]) for m in modes])
    table.add_row("micro", *[cell(result["modes"][m][split]["micro"]) for m in modes])
    Console().print(table)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    k: Annotated[int, typer.Option("--k", help="Every quasi-identifier class has >= k rows.")]
    = 5,
    l_div: Annotated[int | None, typer.Option(
        "--l", help="Also >= l distinct outcomes per class (distinct l-diversity).")] = None,
    dataset: Annotated[str, typer.Option(
        "--dataset", help="storypoints (per task) | changes (per change; slow: ~4 min)")]
    = "storypoints",
    project: Annotated[list[str] | None, typer.Option(
        "--project", help="Only these projects (repeatable).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of CSVs (default: shipped).")]
    = None,
    as_json: AsJson = False,
) -> None:
    """Write a k-anonymous CSV of the learning data, re-read it and verify k (and l)."""
    from projections.export import ExportError, export

    try:
        report = export(dataset, out, k=k, l_div=l_div, folder=data, projects=project)
    except (ExportError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    typer.echo(f"wrote {out}: {report.rows_out} of {report.rows_in} rows in {report.classes} "
               f"classes (smallest {report.min_class}, k={k}"
               + (f", l={l_div}, min distinct outcomes {report.min_distinct_outcomes}"
                  if l_div else "")
               + f"); suppressed {report.suppressed} ({report.suppression_rate:.2%}); "
               f"{report.seconds} s")
