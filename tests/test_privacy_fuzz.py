"""Fuzz: detectors, the decryptor and the export never crash, and errors never carry plaintext."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from projections.export import ExportError, anonymise, check
from schemas.cipher import ERASED, EncryptedField, FieldCipher
from schemas.keys import CryptoError, MemoryKeyStore
from schemas.pii import TYPES, PatternDetector, redact
from schemas.pii_presidio import PresidioDetector

# Text that looks like issue text: PII-shaped fragments among arbitrary unicode.
FRAGMENTS = st.sampled_from([
    "[~", "]", "@", "a.b@c.org", "/Users/", "/home/", "C:\\Users\\", "password=", "token: ",
    "://u:p@", "10.0.0.", "192.168.1.1", "Mario Juric", "Hi ", "\n", " ", "{code}", "AKIA",
    "eyJhbGciOi.", "4111 1111 1111 1111", "+1 (415) 555-0100", "@2x.png", "git@github.com:",
])
TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=20)), max_size=30).map("".join)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid(text: str, found: list) -> None:  # type: ignore[type-arg]
    for f in found:
        assert 0 <= f.start < f.end <= len(text) and f.type in TYPES
    redact(text, found)


@FUZZ
@given(TEXT)
def test_pattern_detector_never_crashes(text: str) -> None:
    _valid(text, PatternDetector().analyze(text))


@pytest.fixture(scope="module")
def detectors() -> dict[str, PresidioDetector]:
    return {"presidio": PresidioDetector(ner=False), "ner": PresidioDetector(ner=True)}


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=TEXT, mode=st.sampled_from(["presidio", "ner"]))
def test_presidio_detectors_never_crash_nor_fall_back(
        detectors: dict[str, PresidioDetector], text: str, mode: str) -> None:
    detector = detectors[mode]
    _valid(text, detector.analyze(text))
    assert detector.failures == 0  # Presidio itself handled the input


PLAIN = st.text(min_size=1, max_size=200).map(lambda s: "PII:" + s)
IDS = st.text(min_size=1, max_size=12)


@FUZZ
@given(plain=PLAIN, subject=IDS, event=IDS, field=IDS, other=IDS,
       cut=st.integers(0, 400), flip=st.integers(0, 10_000), junk=st.text(max_size=60))
def test_decryptor_never_crashes_and_errors_hold_no_plaintext(
        plain: str, subject: str, event: str, field: str, other: str, cut: int, flip: int,
        junk: str) -> None:
    keys = MemoryKeyStore()
    cipher = FieldCipher(keys)
    token = cipher.encrypt(plain, subject_id=subject, event_id=event, field=field)
    assert plain not in token
    enc = EncryptedField.from_wire(token)
    flipped = bytearray(enc.ciphertext)
    flipped[flip % len(flipped)] ^= 1 + flip % 255
    attempts = [
        (token, event, field, None), (token, other, field, None), (token, event, other, None),
        (token, event, field, other), (token[:cut], event, field, None), (junk, event, field, None),
        (token + junk, event, field, None),
        (EncryptedField(enc.key_id, enc.version, enc.nonce, bytes(flipped)).to_wire(),
         event, field, None),
        (EncryptedField(other, enc.version, enc.nonce, enc.ciphertext).to_wire(),
         event, field, None),
    ]
    for wire, ev, fd, sub in attempts:
        try:
            out = cipher.decrypt(wire, event_id=ev, field=fd, subject_id=sub)
        except CryptoError as exc:
            assert plain not in str(exc) and plain not in repr(exc)
        else:
            assert out == plain  # only an untouched token (or an identical context) decrypts
    keys.erase(subject)
    assert cipher.decrypt(token, event_id=event, field=field) == ERASED
    with pytest.raises(CryptoError) as err:
        cipher.encrypt(plain, subject_id=subject, event_id=event, field=field)
    assert plain not in str(err.value)


ROWS = st.lists(st.tuples(st.sampled_from(["v:a", "v:b", "v:ü,x", "v:"]),
                          st.integers(-5, 10_000), st.integers(0, 3)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, k=st.integers(-1, 8), l_div=st.one_of(st.none(), st.integers(0, 4)))
def test_export_never_crashes_and_what_it_returns_is_k_anonymous(
        rows: list[tuple[str, int, int]], k: int, l_div: int | None) -> None:
    df = pd.DataFrame(rows, columns=["project", "size", "outcome"])
    assume(all(v != "" for v in df["project"]))
    try:
        out = anonymise(df, ["project", "size"], "outcome", k=k, l_div=l_div)
    except ExportError as exc:
        assert not any(v in str(exc) for v in df["project"] if len(v) > 2)
        return
    if len(df) < k:
        assert out.empty
        return
    assert len(out) == len(df)
    check(out, ["project", "size"], "outcome", k=k, l_div=l_div)
