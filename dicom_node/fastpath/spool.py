"""A C-STORE data set written to a temp file as its fragments arrive.

The file starts with the PS3.10 header built from the request (the SCP knows SOP class,
instance and transfer syntax before the first data byte), so a received instance needs
no second copy: the ingest fsyncs the spool file and renames it into the store. The
first bytes of the data set are also kept in memory for the header parse, which never
needs the pixel data.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

#: Data set bytes kept in memory for the header parse; a CT header is 1-3 KB, an SR or
#: an enhanced multi-frame header can be larger and is then read back from the file.
HEAD_KEEP = 64 * 1024

#: Temp files of both engines start with this (the start-up examines them).
SPOOL_PREFIX = ".spool-"


class Spool:
    """Temp file ``<meta><data set>``; a write error is remembered, not raised, so the
    association keeps reading the message and can answer "out of resources"."""

    def __init__(self, directory: Path, meta: bytes) -> None:
        self.meta_len = len(meta)
        self.data_len = 0
        self.head = bytearray()
        self.error: OSError | None = None
        self._fd: int | None = None
        self.path: Path | None = None
        try:
            fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".dcm", dir=directory)
        except OSError as exc:
            self.error = exc
            return
        self._fd, self.path = fd, Path(name)
        self._write_all(meta)

    def _write_all(self, view: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            return
        try:
            mv = memoryview(view)
            while mv:
                n = os.write(self._fd, mv)
                mv = mv[n:]
        except OSError as exc:
            self.error = exc
            self._close()

    def write(self, view: memoryview) -> None:
        """Append data set bytes (a fragment's value, straight from the receive buffer)."""
        n = len(view)
        if len(self.head) < HEAD_KEEP:
            self.head += view[: HEAD_KEEP - len(self.head)]
        self.data_len += n
        self._write_all(view)

    def read_data(self) -> bytes:
        """The whole data set, read back from the file (rare paths only)."""
        if self.path is None:
            return b""
        with self.path.open("rb") as fh:
            fh.seek(self.meta_len)
            return fh.read()

    def sync(self) -> None:
        """fsync and close the file; raises OSError when the bytes are not on disk."""
        if self.error is not None:
            raise self.error
        if self._fd is None:  # synced and closed already
            return
        try:
            os.fsync(self._fd)
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self) -> None:
        """Close and remove the temp file (after a rename this is a no-op)."""
        self._close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None

    def claimed(self) -> None:
        """The file was renamed into place: nothing left to remove."""
        self._close()
        self.path = None
