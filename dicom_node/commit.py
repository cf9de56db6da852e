"""Group commit: make directory entries and index rows durable for many handlers at once.

Each association thread writes and fsyncs its own file and renames it into place; what
remains before it may answer Success is an fsync of the directory (the rename) and the
index commit (one log flush). Those two are shared: whoever arrives while another
thread is flushing waits, then one of the waiters flushes everything that queued up
meanwhile. Four scanners share one directory fsync per directory and one commit per
batch. Nobody is answered before their own rows are committed (DESIGN.md section 4), so
batching does not weaken the promise.

The directory fsync and the index commit run at the same time (two device flushes in
parallel cost about one; measured in benchmarks/README.md). Both have finished before
anyone is answered. In between, after a power cut, the index may hold a row whose rename
was not yet durable: the file's bytes are durable (fsynced before the rename), its spool
copy is still in ``incoming/``, and the node's start-up (:func:`complete_interrupted`)
puts it in place. A kill -9 cannot leave that state: the rename is done in the kernel
before the commit starts. Only never-acknowledged instances can be in it either way.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from countyread.db import utcnow
from countyread.errors import StorageError
from countyread.store import fsync_dir, mkdirs_durable
from dicom_node import status as st
from dicom_node.fastpath.spool import SPOOL_PREFIX
from dicom_node.index import IndexResult, InstanceIndex, PendingRow

logger = logging.getLogger(__name__)


def write_file_synced(path: Path, chunks: Iterable[bytes], *,
                      tmp_dir: Path | None = None) -> int:
    """Temp file, write, fsync, rename; the directory is NOT fsynced here (the group
    commit does it before anyone is answered). The temp file is made in ``tmp_dir``
    (the node's spool directory, which its start-up examines) or, when that is None or
    on another file system, in the target directory."""
    mkdirs_durable(path.parent)
    if tmp_dir is not None:
        mkdirs_durable(tmp_dir)
        chunks = list(chunks)  # a second pass may be needed (other file system)
        try:
            return _write_synced(path, chunks, tmp_dir, SPOOL_PREFIX)
        except _CrossDevice:
            pass
    return _write_synced(path, chunks, path.parent, ".tmp-")


class _CrossDevice(Exception):
    pass


def _write_synced(path: Path, chunks: Iterable[bytes], tmp_dir: Path, prefix: str) -> int:
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".dcm", dir=tmp_dir)
    size = 0
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    size += n
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.errno == errno.EXDEV:
            raise _CrossDevice from exc
        raise StorageError(f"could not write {path.name}: {exc.strerror or exc}") from exc
    return size


def move_synced_file(src: Path, path: Path) -> None:
    """Rename an fsynced temp file to ``path``; as :func:`write_file_synced`, the
    directory is left to the group commit. Across file systems (a store mounted apart
    from the spool) the bytes are copied through :func:`write_file_synced` instead."""
    try:
        mkdirs_durable(path.parent)
        os.replace(src, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise StorageError(f"could not store {path.name}: {exc.strerror or exc}") from exc
        write_file_synced(path, [src.read_bytes()])
        # The spool copy goes now, so the start-up could not complete this rename after
        # a power cut: make it durable here, before the index commit (rare set-up).
        fsync_dir(path.parent)
        src.unlink()


@dataclass(slots=True)
class _Ticket:
    row: PendingRow
    directory: Path
    done: bool = False
    result: IndexResult | st.DimseFailure | None = None
    error: Exception | None = None


class GroupCommitter:
    """``commit(row, directory)`` returns once the row and the directory are durable."""

    def __init__(self, index: InstanceIndex, max_batch: int = 256) -> None:
        self.index = index
        self.max_batch = max_batch
        self._queue: list[_Ticket] = []
        self._queue_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # One thread is enough: flushes are serialised by _flush_lock.
        self._dir_syncer = ThreadPoolExecutor(1, thread_name_prefix="dir-fsync")

    def commit(self, row: PendingRow, directory: Path) -> IndexResult:
        ticket = _Ticket(row, directory)
        with self._queue_lock:
            self._queue.append(ticket)
        while not ticket.done:
            with self._flush_lock:
                if ticket.done:  # a flush that ran while we waited covered us
                    break
                with self._queue_lock:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                self._flush(batch)
        if ticket.error is not None:
            raise ticket.error
        if isinstance(ticket.result, st.DimseFailure):
            raise ticket.result
        assert ticket.result is not None
        return ticket.result

    def _flush(self, batch: list[_Ticket]) -> None:
        dirs = list(dict.fromkeys(t.directory for t in batch))
        synced: Future[None] = self._dir_syncer.submit(_fsync_dirs, dirs)
        try:
            try:
                results = self.index.add_many([t.row for t in batch], utcnow())
            finally:
                dir_error = synced.exception()  # waits: nobody is answered before both
            if dir_error is not None:
                # The rows are committed but the renames may not be durable: take the
                # rows back, so that a failure status never leaves an index claim.
                self._forget([t.row for t, r in zip(batch, results, strict=True)
                              if isinstance(r, IndexResult) and r.inserted])
                raise dir_error
            for t, res in zip(batch, results, strict=True):
                t.result = res
        except Exception as exc:
            logger.error("group commit failed", extra={"batch": len(batch),
                                                        "error": type(exc).__name__})
            err = exc if isinstance(exc, StorageError | OSError) else StorageError(
                f"index write failed: {type(exc).__name__}")
            for t in batch:
                t.error = err
        finally:
            for t in batch:
                t.done = True
        if len(batch) > 1:
            logger.debug("group commit", extra={"batch": len(batch)})

    def _forget(self, rows: list[PendingRow]) -> None:
        try:
            self.index.remove_instances([r.header.sop_instance_uid for r in rows])
        except Exception:
            logger.exception("could not take back index rows after a directory fsync error")


def _fsync_dirs(dirs: list[Path]) -> None:
    for directory in dirs:
        fsync_dir(directory)
