"""PII detectors: one contract for every mode, the labelled sample, and `evaluate pii`."""

from __future__ import annotations

import json
import logging
import re

import pytest
from typer.testing import CliRunner

from ops.cli.root import app
from ops.data import data_path
from ops.usecases.privacy import ScannerDetector
from projections.datasets import iter_storypoints
from projections.pii_eval import LABELLED, load_labels, story_common_words
from schemas.pii import TYPES, Detector, PatternDetector, redact
from schemas.pii_presidio import COMMON_WORDS, PresidioDetector

LABELS = data_path("pii") / "labels.jsonl"
EXAMPLE = ("Thanks Mario Juric! Ask [~jbosch] or mjuric@lsst.org; log at /Users/tom/x.log, "
           "proxy http://bob:hunter2@10.20.30.40:8080 and --password=s3cr3tpw "
           "on dev@clrinfoport09:~")
EXPECTED = {("USER", "[~jbosch]"), ("EMAIL", "mjuric@lsst.org"), ("HOME", "tom"),
            ("KEY", "bob:hunter2"), ("KEY", "s3cr3tpw"), ("HOST", "clrinfoport09")}


@pytest.fixture(scope="module")
def ner() -> PresidioDetector:
    return PresidioDetector(ner=True)


class DetectorContract:
    """Spans are in range, sorted, typed; plain text gives nothing; the example is found."""

    expected: set[tuple[str, str]] = EXPECTED

    @pytest.fixture
    def detector(self, ner: PresidioDetector) -> Detector:
        raise NotImplementedError

    def test_finds_the_example(self, detector: Detector) -> None:
        found = {(f.type, EXAMPLE[f.start:f.end]) for f in detector.analyze(EXAMPLE)}
        assert self.expected <= found, self.expected - found

    def test_spans_are_valid_and_sorted(self, detector: Detector) -> None:
        found = detector.analyze(EXAMPLE)
        assert found == sorted(found, key=lambda f: (f.start, f.end, f.type))
        assert all(0 <= f.start < f.end <= len(EXAMPLE) and f.type in TYPES for f in found)
        clean = redact(EXAMPLE, found)
        assert "mjuric@" not in clean and "jbosch" not in clean and "hunter2" not in clean

    @pytest.mark.parametrize("text", ["", "   ", "Studio crashes when the build log is empty."])
    def test_nothing_in_plain_text(self, detector: Detector, text: str) -> None:
        assert detector.analyze(text) == []


class TestScanner(DetectorContract):
    """Today's SDK scrubber: no HOST names, no named secrets."""

    expected = {("USER", "[~jbosch]"), ("EMAIL", "mjuric@lsst.org"), ("HOME", "tom")}

    @pytest.fixture
    def detector(self, ner: PresidioDetector) -> Detector:
        return ScannerDetector()


class TestPattern(DetectorContract):
    @pytest.fixture
    def detector(self, ner: PresidioDetector) -> Detector:
        return PatternDetector()

    def test_annotations_and_image_names_are_not_people(self, detector: Detector) -> None:
        text = "Add @XmlRootElement and @Override; icon@2x.png; git@github.com:org/repo.git"
        assert detector.analyze(text) == []


class TestPresidio(DetectorContract):
    @pytest.fixture
    def detector(self, ner: PresidioDetector) -> Detector:
        return PresidioDetector(ner=False)


class TestNer(DetectorContract):
    expected = EXPECTED | {("PERSON", "Mario Juric")}

    @pytest.fixture
    def detector(self, ner: PresidioDetector) -> Detector:
        return ner

    def test_a_presidio_failure_degrades_to_patterns_and_logs_no_text(
            self, ner: PresidioDetector, caplog: pytest.LogCaptureFixture,
            monkeypatch: pytest.MonkeyPatch) -> None:
        def boom(text: str, **kw: object) -> None:
            raise RuntimeError(f"cannot parse {text}")

        monkeypatch.setattr(ner._engine, "analyze", boom)  # noqa: SLF001
        with caplog.at_level(logging.WARNING):
            found = ner.analyze(EXAMPLE)
        assert ("EMAIL", "mjuric@lsst.org") in {(f.type, EXAMPLE[f.start:f.end]) for f in found}
        assert ner.failures == 1 and "RuntimeError" in caplog.text and "mjuric" not in caplog.text


def test_labels_are_real_issue_texts_with_consistent_spans() -> None:
    samples = load_labels(LABELS)
    shipped = {r.issuekey: f"{r.title}\n{r.description}"
               for r in iter_storypoints(data_path("storypoints"))}
    assert len(samples) >= 200 and len({s.id for s in samples}) == len(samples)
    assert sum(1 for s in samples if s.spans) >= 100
    assert {s.split for s in samples} == {"dev", "test"}
    for line in LABELS.read_text().splitlines():
        rec = json.loads(line)
        assert shipped[rec["id"]] == rec["text"]
        for span in rec["spans"]:
            assert span["type"] in LABELLED
            assert rec["text"][span["start"]:span["end"]] == span["text"] != ""
    kinds = {sp.type for s in samples for sp in s.spans}
    assert kinds == set(LABELLED)


def test_shipped_common_words_are_current() -> None:
    fresh = story_common_words(data_path("storypoints"), LABELS)
    assert COMMON_WORDS.read_text().split() == fresh
    held_out_names = {"mario", "juric", "kantor", "galewsky"}
    assert not held_out_names & set(fresh)


def test_evaluate_pii_json_reports_every_mode_and_ner_finds_names() -> None:
    result = CliRunner().invoke(app, ["evaluate", "pii", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["modes"]) == {"scanner", "pattern", "presidio", "ner"}
    test = {m: report["modes"][m]["test"] for m in report["modes"]}
    assert test["ner"]["types"]["PERSON"]["recall"] > 0.3
    assert test["pattern"]["types"]["PERSON"]["tp"] == 0
    # The recognisers beyond today's scanner pay off on held-out texts.
    assert test["pattern"]["micro"]["recall"] > test["scanner"]["micro"]["recall"]
    assert test["pattern"]["micro"]["precision"] > 0.8
    for split in ("dev", "test", "all"):
        for kind in LABELLED:
            c = report["modes"]["ner"][split]["types"][kind]
            assert c["tp"] + c["fn"] == sum(
                1 for s in load_labels(LABELS, split) for sp in s.spans if sp.type == kind)
    assert re.search(r"labels\.jsonl$", report["labels"])
