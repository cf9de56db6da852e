"""Durable local file store: ``<root>/<study>/<series>/<sop>.dcm``.

A file is written to a temporary name in its final directory, fsynced, renamed into
place, and the directory is fsynced, so that after a crash the file either exists whole
or not at all (POSIX rename atomicity).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from countyread.errors import StorageError
from countyread.uids import validate_uid


def fsync_dir(path: Path) -> None:
    """Make a directory entry change (create, rename) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdirs_durable(path: Path) -> None:
    """Create missing directories, each made durable in its parent."""
    missing = []
    p = path
    while not p.is_dir():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue
        fsync_dir(d.parent)


def write_durable(path: Path, data: bytes | Iterable[bytes], *, fsync: bool = True) -> int:
    """Atomically write ``data`` to ``path``; return the number of bytes written."""
    path = Path(path)
    try:
        mkdirs_durable(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    except OSError as exc:
        raise StorageError(f"could not create {path.parent.name}: {exc.strerror or exc}") from exc
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise StorageError(f"could not write {path.name}: {exc.strerror or exc}") from exc
    return size


class FileStore:
    """Maps validated UIDs to paths under one root and writes durably."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return (
            self.root
            / validate_uid(study_uid, "StudyInstanceUID")
            / validate_uid(series_uid, "SeriesInstanceUID")
            / f"{validate_uid(sop_uid, 'SOPInstanceUID')}.dcm"
        )

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    def absolute(self, relative: str) -> Path:
        p = (self.root / relative).resolve()
        if self.root.resolve() not in p.parents:
            raise StorageError("path escapes the store")
        return p

    def write(self, path: Path, data: bytes | Iterable[bytes]) -> int:
        return write_durable(path, data, fsync=self.fsync)
