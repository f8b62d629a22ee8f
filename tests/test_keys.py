"""Master keys and key stores: one contract per interface, run against every implementation."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from schemas.keys import (
    KeyStore,
    MasterKey,
    MemoryKeyStore,
    MemoryMasterKey,
    SubjectErased,
    TamperedField,
    UnknownKey,
)
from schemas.keystore_file import FileKeyStore, FileMasterKey


class MasterKeyContract:
    """What every KEK implementation (file, memory, a future KMS) must do."""

    @pytest.fixture
    def master(self, tmp_path: Path) -> MasterKey:
        raise NotImplementedError

    def test_wrap_unwrap_round_trip_and_wrapped_form_hides_the_key(self, master: MasterKey) -> None:
        dek = os.urandom(32)
        version, wrapped = master.wrap(dek)
        assert version == master.current_version
        assert dek not in wrapped and len(wrapped) == 40
        assert master.unwrap(version, wrapped) == dek

    def test_rotate_adds_a_version_and_old_wraps_still_unwrap(self, master: MasterKey) -> None:
        dek = os.urandom(32)
        old, wrapped = master.wrap(dek)
        new = master.rotate()
        assert new == old + 1 == master.current_version
        assert master.unwrap(old, wrapped) == dek
        assert master.rewrap(old, wrapped)[0] == new
        assert master.unwrap(*master.rewrap(old, wrapped)) == dek

    def test_honest_errors(self, master: MasterKey) -> None:
        version, wrapped = master.wrap(os.urandom(32))
        with pytest.raises(UnknownKey):
            master.unwrap(version + 5, wrapped)
        with pytest.raises(TamperedField):
            master.unwrap(version, bytes([wrapped[0] ^ 1]) + wrapped[1:])


class TestMemoryMasterKey(MasterKeyContract):
    @pytest.fixture
    def master(self, tmp_path: Path) -> MasterKey:
        return MemoryMasterKey()


class TestFileMasterKey(MasterKeyContract):
    @pytest.fixture
    def master(self, tmp_path: Path) -> MasterKey:
        return FileMasterKey(tmp_path / "keys" / "master.json")

    def test_another_instance_sees_rotations(self, tmp_path: Path) -> None:
        a = FileMasterKey(tmp_path / "m.json")
        b = FileMasterKey(tmp_path / "m.json")
        new = a.rotate()
        version, wrapped = a.wrap(b"k" * 32)
        assert version == new and b.unwrap(version, wrapped) == b"k" * 32  # b reloads on miss
        assert oct((tmp_path / "m.json").stat().st_mode & 0o777) == "0o600"


class KeyStoreContract:
    """What every DEK store must do: versions, erasure, master rotation."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> KeyStore:
        raise NotImplementedError

    def test_one_current_key_per_subject_created_on_first_use(self, store: KeyStore) -> None:
        a, b = store.data_key("a"), store.data_key("b")
        assert a.key != b.key and a.version == b.version == 1
        assert store.data_key("a") == a
        assert store.data_key_version("a", 1) == a
        assert "key=" not in repr(a) or a.key.hex() not in repr(a)

    def test_new_version_keeps_old_versions_readable(self, store: KeyStore) -> None:
        v1 = store.data_key("a")
        v2 = store.new_version("a")
        assert v2.version == 2 and store.data_key("a") == v2
        assert store.data_key_version("a", 1) == v1

    def test_erase_destroys_every_version_and_blocks_new_keys(self, store: KeyStore) -> None:
        store.data_key("a")
        store.new_version("a")
        store.data_key("b")
        assert store.erase("a") == 2
        assert store.is_erased("a") and not store.is_erased("b")
        assert store.data_key_version("a", 1) is None and store.data_key_version("a", 2) is None
        with pytest.raises(SubjectErased) as err:
            store.data_key("a")
        assert "'a'" in str(err.value)
        assert store.erase("a") == 0  # idempotent
        assert store.data_key_version("b", 1) is not None
        assert store.stats()["erased"] == 1

    def test_unknown_versions_are_not_reported_as_erased(self, store: KeyStore) -> None:
        store.data_key("a")
        with pytest.raises(UnknownKey):
            store.data_key_version("a", 9)
        with pytest.raises(UnknownKey):
            store.data_key_version("nobody", 1)

    def test_rotate_master_rewraps_every_key_and_keys_do_not_change(self, store: KeyStore) -> None:
        keys = [store.data_key(f"s{i}") for i in range(5)] + [store.new_version("s0")]
        before = store.stats()["kek_version"]
        rotation = store.rotate_master()
        assert rotation.kek_version == before + 1 and rotation.rewrapped == 6
        store.forget("s0")
        assert [store.data_key_version(k.subject_id, k.version) for k in keys] == keys
        assert store.rotate_master().rewrapped == 6


class TestMemoryKeyStore(KeyStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> KeyStore:
        return MemoryKeyStore()


class TestFileKeyStore(KeyStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> KeyStore:
        return FileKeyStore(tmp_path / "keys")

    def test_erased_key_bytes_are_in_no_file(self, tmp_path: Path) -> None:
        import sqlite3

        folder = tmp_path / "keys"
        store = FileKeyStore(folder)
        for i in range(50):
            store.data_key(f"s{i}")
        store.new_version("s7")
        db = sqlite3.connect(folder / "deks.sqlite")
        blobs = [b for (b,) in db.execute("SELECT wrapped FROM deks WHERE subject = 's7'")]
        other = db.execute("SELECT wrapped FROM deks WHERE subject = 's8'").fetchone()[0]
        db.close()
        raw = b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())
        assert len(blobs) == 2 and all(b in raw for b in blobs)  # the scan can find them
        assert store.erase("s7") == 2
        raw = b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())
        assert not any(b in raw for b in blobs) and other in raw
        assert FileKeyStore(folder).data_key_version("s7", 1) is None  # a fresh process agrees

    def test_two_stores_on_one_folder_share_keys_rotations_and_erasures(
            self, tmp_path: Path) -> None:
        a, b = FileKeyStore(tmp_path / "k"), FileKeyStore(tmp_path / "k")
        ka = a.data_key("x")
        assert b.data_key("x") == ka
        b.rotate_master()
        kb = a.data_key("y")  # a missed the rotation: must wrap under the new KEK
        assert b.data_key_version("y", 1) == kb
        assert b.rotate_master().rewrapped == 2
        a.erase("x")
        b.forget("x")  # what the subject.erased handler does in every other process
        assert b.data_key_version("x", 1) is None

    def test_rotation_while_other_threads_and_a_process_create_and_read_keys(
            self, tmp_path: Path) -> None:
        folder = tmp_path / "k"
        store = FileKeyStore(folder)
        made: list[tuple[str, bytes]] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def traffic(tag: str) -> None:
            own = FileKeyStore(folder)  # a separate connection and KEK object
            i = 0
            try:
                while not stop.is_set() or i < 50:
                    k = own.data_key(f"{tag}-{i}")
                    made.append((k.subject_id, k.key))
                    assert own.data_key_version(k.subject_id, 1) == k
                    i += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failures.append(exc)

        threads = [threading.Thread(target=traffic, args=(t,)) for t in ("t1", "t2")]
        for t in threads:
            t.start()
        script = ("import sys; from schemas.keystore_file import FileKeyStore as F;"
                  " s = F(sys.argv[1]); [s.data_key(f'p-{i}') for i in range(200)]")
        proc = subprocess.Popen([sys.executable, "-c", script, str(folder)],
                                env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        rotations = [store.rotate_master() for _ in range(3)]
        assert proc.wait(60) == 0
        stop.set()
        for t in threads:
            t.join(60)
        assert failures == []
        assert [r.kek_version for r in rotations] == [2, 3, 4]
        fresh = FileKeyStore(folder)
        assert fresh.rotate_master().rewrapped == fresh.stats()["data_keys"] == len(made) + 200
        assert all(fresh.data_key_version(s, 1).key == k for s, k in made)  # type: ignore[union-attr]
