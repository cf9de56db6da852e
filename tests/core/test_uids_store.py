import os
from pathlib import Path

import pytest

from countyread.errors import InvalidInputError, StorageError
from countyread.store import FileStore, write_durable
from countyread.uids import derive_uid, is_valid_uid, validate_uid


@pytest.mark.parametrize(
    "bad",
    ["", "1.2.abc", "../../etc/passwd", "1.2/3", "1." * 40 + "1", "1.2.3 ", "1..2", None],
)
def test_invalid_uids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        validate_uid(bad)


def test_valid_uid_passes() -> None:
    assert validate_uid("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    assert is_valid_uid("1.2.3") and not is_valid_uid("1.02.3")


def test_derived_uids_are_deterministic_valid_and_distinct() -> None:
    a = derive_uid("1.2.3", "sr", "1.0.0", 1)
    assert a == derive_uid("1.2.3", "sr", "1.0.0", 1)
    assert a != derive_uid("1.2.3", "sr", "1.0.0", 2)
    assert is_valid_uid(a) and a.startswith("2.25.")


def test_store_layout_and_atomic_write(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    p = store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert p == tmp_path / "store" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    n = store.write(p, [b"DICM", b"x" * 10])
    assert n == 14 and p.read_bytes() == b"DICMxxxxxxxxxx"
    # No temporary file is left behind.
    assert [f.name for f in p.parent.iterdir()] == [p.name]
    assert store.relative(p) == "1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def test_store_refuses_path_escape(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    with pytest.raises(InvalidInputError):
        store.instance_path("1.2", "..", "1.3")
    with pytest.raises(Exception, match="escapes"):
        store.absolute("../../outside")


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.dcm"

    def chunks():
        yield b"first"
        raise OSError(28, "No space left on device")

    with pytest.raises(StorageError, match="No space left"):
        write_durable(target, chunks())
    assert not target.exists()
    assert os.listdir(tmp_path / "a") == []


def test_a_file_where_a_directory_should_be_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_bytes(b"not a directory")
    with pytest.raises(StorageError, match="could not create"):
        write_durable(tmp_path / "blocked" / "sub" / "x.dcm", b"data")
