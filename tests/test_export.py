"""k-anonymous exports: the command writes a file whose every class has >= k rows."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ops.cli.root import app
from projections.export import DATASETS, ExportError, anonymise, check

Key = tuple[str, ...]


def _classes(path: Path, qi: tuple[str, ...], outcome: str) -> tuple[Counter[Key],
                                                                     dict[Key, set[str]]]:
    """Independent of projections.export: csv module and a dict."""
    sizes: Counter[tuple[str, ...]] = Counter()
    outcomes: dict[tuple[str, ...], set[str]] = defaultdict(set)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            key = tuple(row[c] for c in qi)
            sizes[key] += 1
            outcomes[key].add(row[outcome])
    return sizes, outcomes


def test_export_changes_of_one_project_is_5_anonymous_and_2_diverse(tmp_path: Path) -> None:
    out = tmp_path / "changes.csv"
    result = CliRunner().invoke(app, ["export", "--k", "5", "--l", "2", "--dataset", "changes",
                                      "--project", "IVY", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    qi, outcome = DATASETS["changes"]
    sizes, outcomes = _classes(out, qi, outcome)
    assert min(sizes.values()) >= 5 and min(len(v) for v in outcomes.values()) >= 2
    assert report["classes"] == len(sizes) and report["rows_out"] == sum(sizes.values())
    assert report["rows_in"] == report["rows_out"] + report["suppressed"] == 2880
    header = out.read_text().splitlines()[0].split(",")
    assert header == [*qi, outcome]  # no commit id, no author, nothing else
    assert any(".." in key[1] for key in sizes)  # months really generalised to ranges


def test_export_storypoints_has_no_text_and_keeps_every_row(tmp_path: Path) -> None:
    out = tmp_path / "sp.csv"
    result = CliRunner().invoke(app, ["export", "--k", "5", "--project", "bamboo",
                                      "--project", "clover", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    qi, outcome = DATASETS["storypoints"]
    sizes, _ = _classes(out, qi, outcome)
    assert min(sizes.values()) >= 5 and report["suppression_rate"] == 0.0
    assert "BAM-" not in out.read_text() and "CLOV-" not in out.read_text()


def test_check_rejects_a_file_that_is_not_k_anonymous() -> None:
    rows = pd.DataFrame({"a": ["1", "1", "2"], "o": ["x", "y", "x"]})
    with pytest.raises(ExportError, match="1 rows < k=2"):
        check(rows, ["a"], "o", k=2)
    with pytest.raises(ExportError, match="distinct"):
        check(pd.DataFrame({"a": ["1", "1"], "o": ["x", "x"]}), ["a"], "o", k=2, l_div=2)


def test_too_few_rows_are_suppressed_not_exported() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "o": [0, 1, 0]})
    assert anonymise(df, ["a"], "o", k=5).empty


def test_unknown_dataset_is_an_error_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "--dataset", "faces", "--out",
                                      str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and "unknown dataset" in result.output
