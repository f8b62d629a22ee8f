"""Field encryption: the Cipher contract, run over each key store."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.cipher import ERASED, Cipher, EncryptedField, FieldCipher, is_encrypted
from schemas.keys import KeyStore, MalformedField, MemoryKeyStore, SubjectErased, TamperedField
from schemas.keystore_file import FileKeyStore

SECRET = "Mario Juric <mjuric@lsst.org>"


class CipherContract:
    """Every Cipher: round trip, binding to (subject, event, field), erasure, rotation."""

    @pytest.fixture
    def keys(self, tmp_path: Path) -> KeyStore:
        raise NotImplementedError

    @pytest.fixture
    def cipher(self, keys: KeyStore) -> Cipher:
        return FieldCipher(keys)

    def _enc(self, cipher: Cipher, text: str = SECRET, subject: str = "s1", event: str = "e1",
             field: str = "title") -> str:
        return cipher.encrypt(text, subject_id=subject, event_id=event, field=field)

    def test_round_trip_and_the_wire_form_holds_no_plaintext_or_key(
            self, cipher: Cipher, keys: KeyStore) -> None:
        token = self._enc(cipher)
        assert is_encrypted(token) and "Mario" not in token and "mjuric" not in token
        parsed = EncryptedField.from_wire(token)
        assert (parsed.key_id, parsed.version, len(parsed.nonce)) == ("s1", 1, 12)
        assert keys.data_key("s1").key not in token.encode()
        assert cipher.decrypt(token, event_id="e1", field="title") == SECRET
        assert cipher.decrypt(token, event_id="e1", field="title", subject_id="s1") == SECRET
        assert self._enc(cipher) != token  # a fresh nonce every time
        for text in ("", "é ü ✓ 🙂", "x" * 100_000):
            assert cipher.decrypt(self._enc(cipher, text), event_id="e1", field="title") == text

    @pytest.mark.parametrize("moved", [
        {"event_id": "e2", "field": "title"},
        {"event_id": "e1", "field": "description"},
        {"event_id": "e1", "field": "title", "subject_id": "s2"},
    ])
    def test_a_ciphertext_cannot_move_to_another_event_field_or_subject(
            self, cipher: Cipher, moved: dict[str, str]) -> None:
        token = self._enc(cipher)
        with pytest.raises(TamperedField) as err:
            cipher.decrypt(token, **moved)
        assert "Mario" not in str(err.value)

    def test_swapping_the_key_id_or_flipping_a_bit_fails_authentication(
            self, cipher: Cipher) -> None:
        token = self._enc(cipher)
        self._enc(cipher, "other", subject="s2")
        enc = EncryptedField.from_wire(token)
        swapped = EncryptedField("s2", enc.version, enc.nonce, enc.ciphertext).to_wire()
        flipped = EncryptedField(enc.key_id, enc.version, enc.nonce,
                                 bytes([enc.ciphertext[0] ^ 1]) + enc.ciphertext[1:]).to_wire()
        for bad in (swapped, flipped):
            with pytest.raises(TamperedField):
                cipher.decrypt(bad, event_id="e1", field="title")

    def test_erased_subject_reads_as_placeholder_and_others_still_decrypt(
            self, cipher: Cipher, keys: KeyStore) -> None:
        mine = [self._enc(cipher, f"{SECRET} {i}", event=f"e{i}") for i in range(3)]
        keys.new_version("s1")
        mine.append(self._enc(cipher, "after new version", event="e9"))
        theirs = self._enc(cipher, "Jeff Kantor", subject="s2")
        assert keys.erase("s1") == 2
        assert [cipher.decrypt(t, event_id=f"e{i}" if i < 3 else "e9", field="title")
                for i, t in enumerate(mine)] == [ERASED] * 4
        assert cipher.decrypt(theirs, event_id="e1", field="title") == "Jeff Kantor"
        with pytest.raises(SubjectErased):
            self._enc(cipher)

    def test_master_rotation_keeps_old_data_readable(self, cipher: Cipher, keys: KeyStore) -> None:
        before = self._enc(cipher)
        keys.rotate_master()
        keys.forget("s1")
        after = self._enc(cipher, "new", event="e2")
        assert cipher.decrypt(before, event_id="e1", field="title") == SECRET
        assert cipher.decrypt(after, event_id="e2", field="title") == "new"

    @pytest.mark.parametrize("junk", ["", "plain text", "enc1.", "enc1.czE.1.AAAA.BBBB",
                                      "enc1.czE.0.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA",
                                      "enc1.!!.1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"])
    def test_malformed_input_is_an_honest_error(self, cipher: Cipher, junk: str) -> None:
        with pytest.raises(MalformedField):
            cipher.decrypt(junk, event_id="e1", field="title")


class TestFieldCipherOverMemoryKeys(CipherContract):
    @pytest.fixture
    def keys(self, tmp_path: Path) -> KeyStore:
        return MemoryKeyStore()


class TestFieldCipherOverFileKeys(CipherContract):
    @pytest.fixture
    def keys(self, tmp_path: Path) -> KeyStore:
        return FileKeyStore(tmp_path / "keys")

    def test_a_fresh_process_reads_what_another_wrote(self, tmp_path: Path) -> None:
        token = FieldCipher(FileKeyStore(tmp_path / "k")).encrypt(
            SECRET, subject_id="s1", event_id="e1", field="title")
        assert FieldCipher(FileKeyStore(tmp_path / "k")).decrypt(
            token, event_id="e1", field="title") == SECRET
