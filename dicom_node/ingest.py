"""Durable ingest of one C-STORE data set: check, write, index, then answer.

The promise behind a Success (DESIGN.md section 4): the bytes are on disk (temp file,
fsync, rename, fsync of the directory) and indexed before 0x0000 goes back. The data set
is stored exactly as the peer encoded it, behind a File Meta Information header we write
(PS3.10 7.1); pixel data is never decoded here.

Temp files of both engines live in ``<data>/incoming`` until their rename, so that the
start-up (:meth:`Ingestor.recover_spool`) finds every store a crash interrupted: it
removes the unacknowledged ones and completes the one case the group commit's overlap
of directory fsync and index commit allows (commit.py): a row durable, its rename not.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from countyread.context import AppContext
from countyread.db import utcnow
from countyread.errors import StorageError
from countyread.store import fsync_dir, mkdirs_durable, write_durable
from countyread.uids import derive_uid, validate_uid
from dicom_node import status as st
from dicom_node.commit import GroupCommitter, move_synced_file, write_file_synced
from dicom_node.fastpath.spool import SPOOL_PREFIX, Spool
from dicom_node.header import InstanceHeader, read_header, read_header_head
from dicom_node.index import InstanceIndex, KnownInstance, PendingRow

logger = logging.getLogger(__name__)

#: PS3.7 D.3.3.2: our Implementation Class UID, derived so that it never changes.
IMPLEMENTATION_CLASS_UID = derive_uid("countyread", "implementation-class")
IMPLEMENTATION_VERSION = b"COUNTYREAD_01"


def _element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    """Encode one explicit VR little endian element (PS3.5 7.1.2)."""
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    tag = struct.pack("<HH", group_elem >> 16, group_elem & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def encode_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str | None
) -> bytes:
    """Preamble, 'DICM' and the group 0002 elements of PS3.10 Table 7.1-1."""
    body = b"".join([
        _element(0x00020001, b"OB", b"\x00\x01"),
        _element(0x00020002, b"UI", sop_class_uid.encode("ascii", "replace")),
        _element(0x00020003, b"UI", sop_instance_uid.encode("ascii", "replace")),
        _element(0x00020010, b"UI", transfer_syntax.encode("ascii")),
        _element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
        _element(0x00020013, b"SH", IMPLEMENTATION_VERSION),
        *([_element(0x00020016, b"AE", source_ae.encode("ascii", "replace")[:16])]
          if source_ae else []),
    ])
    group_length = _element(0x00020000, b"UL", b"")[:6] + struct.pack("<HI", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One received C-STORE: the data set bytes and what the request said about them."""

    data: bytes
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str | None = None
    node_id: int | None = None


@dataclass(frozen=True, slots=True)
class SpooledRequest:
    """One received C-STORE whose PS3.10 file (our meta + the data set) is in a spool."""

    spool: Spool
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str | None = None
    node_id: int | None = None


class Ingestor:
    """Turns C-STORE requests into durable, indexed instances or quarantined failures."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.spool_dir = ctx.settings.data_dir / "incoming"
        self.index = InstanceIndex(ctx.db)
        self.committer = GroupCommitter(self.index)
        # Striped locks: two associations sending the same SOP Instance UID at once must
        # not both write the file ("keep the first" needs one writer per UID).
        self._uid_locks = [threading.Lock() for _ in range(64)]

    def ingest(self, req: StoreRequest) -> st.DimseOutcome:
        """Store one instance; never raises (PS3.7 9.1.1: every request gets a status)."""
        t0 = time.perf_counter()
        try:
            header = read_header(
                req.data, req.transfer_syntax, req.sop_class_uid, req.sop_instance_uid
            )
            lock = self._uid_locks[hash(header.sop_instance_uid) % len(self._uid_locks)]
            with lock:
                outcome = self._store(req, header)
        except st.DimseFailure as exc:
            return self._reject(req, exc.status, exc.comment)
        except (StorageError, OSError) as exc:
            # Disk full, read-only, a directory blocked: PS3.4 B.2.3 "out of resources".
            logger.error("store failed", extra={"error": str(exc)})
            return self._reject(req, st.OUT_OF_RESOURCES, "storage unavailable", keep=False)
        except Exception:
            # An unforeseen bug must cost one instance a failure status, not the association.
            logger.exception("ingest failed", extra={"sop_instance_uid": _safe(req)})
            return self._reject(req, st.PROCESSING_FAILURE, "internal error while storing")
        logger.debug("stored", extra={"sop_instance_uid": header.sop_instance_uid,
                                      "duration_ms": round((time.perf_counter() - t0) * 1e3, 2)})
        return outcome

    def ingest_spooled(self, req: SpooledRequest) -> st.DimseOutcome:
        """As :meth:`ingest`, for a data set the SCP already wrote to a spool file.

        The spool file becomes the stored file (fsync, rename), so the data set is never
        copied again; only its first bytes are parsed. The caller discards the spool.
        """
        t0 = time.perf_counter()
        spool = req.spool
        try:
            if spool.error is not None:
                raise StorageError(f"spool write failed: {spool.error.strerror or spool.error}")
            header = read_header_head(
                bytes(spool.head), spool.data_len, req.transfer_syntax, req.sop_class_uid,
                req.sop_instance_uid, spool.read_data,
            )
            lock = self._uid_locks[hash(header.sop_instance_uid) % len(self._uid_locks)]
            with lock:
                outcome = self._store_spooled(req, header)
        except st.DimseFailure as exc:
            return self._refuse(req, exc.status, exc.comment, self._quarantine_spool(spool))
        except (StorageError, OSError) as exc:
            logger.error("store failed", extra={"error": str(exc)})
            return self._refuse(req, st.OUT_OF_RESOURCES, "storage unavailable", None)
        except Exception:
            logger.exception("ingest failed", extra={"sop_instance_uid": _safe(req)})
            return self._refuse(req, st.PROCESSING_FAILURE, "internal error while storing",
                                self._quarantine_spool(spool))
        logger.debug("stored", extra={"sop_instance_uid": header.sop_instance_uid,
                                      "duration_ms": round((time.perf_counter() - t0) * 1e3, 2)})
        return outcome

    def _store_spooled(self, req: SpooledRequest, h: InstanceHeader) -> st.DimseOutcome:
        known = self.index.precheck(h)
        if known is not None and self._present(known):
            self._compare_duplicate(known.path, req.spool.read_data(), h)
            return st.DimseOutcome(st.SUCCESS)
        spool = req.spool
        assert spool.path is not None
        path = self.ctx.store.instance_path(h.study_uid, h.series_uid, h.sop_instance_uid)
        spool_path = spool.path
        spool.sync()
        move_synced_file(spool_path, path)
        spool.claimed()
        if known is not None:
            return self._restored(h, path, spool.meta_len + spool.data_len)

        def give_back(stored: Path) -> None:
            # A refused instance keeps its bytes in quarantine, as on the classic path.
            os.replace(stored, spool_path)
            spool.path = spool_path

        return self._index(h, path, spool.meta_len + spool.data_len, req.calling_ae,
                           req.node_id, on_refused=give_back)

    def _store(self, req: StoreRequest, h: InstanceHeader) -> st.DimseOutcome:
        meta = encode_file_meta(h.sop_class_uid, h.sop_instance_uid, h.transfer_syntax_uid,
                                req.calling_ae)
        known = self.index.precheck(h)
        if known is not None and self._present(known):
            self._compare_duplicate(known.path, req.data, h)
            return st.DimseOutcome(st.SUCCESS)
        path = self.ctx.store.instance_path(h.study_uid, h.series_uid, h.sop_instance_uid)
        # store.write() would fsync the directory per file; splitting the steps lets
        # concurrent associations share that fsync and the index commit (commit.py).
        size = write_file_synced(path, [meta, req.data], tmp_dir=self.spool_dir)
        if known is not None:
            return self._restored(h, path, size)
        return self._index(h, path, size, req.calling_ae, req.node_id)

    def _present(self, known: KnownInstance) -> bool:
        """Is the indexed copy of a re-sent instance on disk? Only a power cut between
        the index commit and the durability of the rename of a never-acknowledged
        instance can make it absent (commit.py), and then the start-up has normally
        put it back already; a re-send must then store it, not be deduplicated."""
        return self.ctx.store.absolute(known.path).is_file()

    def _restored(self, h: InstanceHeader, path: Path, size: int) -> st.DimseOutcome:
        """An indexed instance whose file was missing is stored again (file fsynced and
        renamed by the caller): make the rename durable, then point the row at it."""
        fsync_dir(path.parent)
        self.index.replace_path(h.sop_instance_uid, self.ctx.store.relative(path), size)
        logger.warning("stored again an indexed instance whose file was missing",
                       extra={"sop_instance_uid": h.sop_instance_uid})
        return st.DimseOutcome(st.SUCCESS)

    def recover_spool(self) -> tuple[int, int]:
        """At start-up, before serving: (completed, removed) interrupted stores.

        A temp file whose instance is indexed while the stored file is missing had its
        row committed, hence its bytes fsynced (the commit starts after the file fsync,
        commit.py), only its rename was lost: it is renamed into place. Every other temp
        file belongs to an instance that was never acknowledged and is removed.
        """
        completed = removed = 0
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for tmp in sorted(self.spool_dir.glob(SPOOL_PREFIX + "*")):
            try:
                if self._complete(tmp):
                    completed += 1
                    continue
            except Exception:  # a damaged leftover must not stop the node from starting
                logger.exception("could not examine a leftover spool file")
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
        return completed, removed

    def _complete(self, tmp: Path) -> bool:
        try:
            uid = str(read_file_meta_info(tmp).MediaStorageSOPInstanceUID)
            validate_uid(uid, "SOP Instance UID")
        except Exception:  # no readable meta: nothing was indexed from it
            return False
        known = self.index.find_instance(uid)
        if known is None:
            return False
        dest = self.ctx.store.absolute(known.path)
        if dest.exists() or tmp.stat().st_size != known.size_bytes:
            return False
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # already durable when it was indexed; cheap, and states it here
        finally:
            os.close(fd)
        mkdirs_durable(dest.parent)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        logger.warning("completed a store interrupted after its index commit",
                       extra={"sop_instance_uid": uid})
        return True

    def _index(self, h: InstanceHeader, path: Path, size: int, calling_ae: str | None,
               node_id: int | None, *,
               on_refused: Callable[[Path], None] | None = None) -> st.DimseOutcome:
        """Index a file that is durable under ``path``; the group commit fsyncs its
        directory first. Answers Success only once both are durable."""
        row = PendingRow(h, self.ctx.store.relative(path), size, calling_ae, node_id)
        try:
            result = self.committer.commit(row, path.parent)
        except Exception as exc:
            # Not indexed means not received: do not leave an orphan file behind.
            if isinstance(exc, st.DimseFailure) and on_refused is not None:
                on_refused(path)
            else:
                path.unlink(missing_ok=True)
            if isinstance(exc, st.DimseFailure):
                raise
            raise StorageError(f"index write failed: {type(exc).__name__}") from exc
        if result.new_series:
            logger.info("series receiving", extra={"study_uid": h.study_uid,
                                                    "series_uid": h.series_uid,
                                                    "modality": h.modality,
                                                    "source_ae": calling_ae})
        if result.reopened:
            logger.info("late instance re-opened series", extra={"series_uid": h.series_uid})
        return st.DimseOutcome(st.SUCCESS)

    def _compare_duplicate(self, rel_path: str, data: bytes,
                           h: InstanceHeader) -> None:
        """PS3.4 B.2.2: a re-sent instance is answered Success; the first copy is kept."""
        try:
            on_disk = self.ctx.store.absolute(rel_path).read_bytes()
        except OSError:
            on_disk = b""
        same = _dataset_part(on_disk) == data
        if same:
            logger.debug("duplicate instance", extra={"sop_instance_uid": h.sop_instance_uid})
        else:
            logger.warning("re-sent instance differs from the stored one; kept the first",
                           extra={"sop_instance_uid": h.sop_instance_uid,
                                  "sha256_new": hashlib.sha256(data).hexdigest()[:16]})

    def _reject(self, req: StoreRequest, status: int, comment: str, *,
                keep: bool = True) -> st.DimseOutcome:
        rel: str | None = None
        qdir = self.ctx.settings.quarantine_dir
        if keep and req.data:
            name = _quarantine_name()
            try:
                meta = encode_file_meta(req.sop_class_uid, req.sop_instance_uid,
                                        req.transfer_syntax, req.calling_ae)
                write_durable(qdir / name, [meta, req.data])
                rel = name
            except Exception:
                logger.exception("could not keep quarantined bytes")
        return self._refuse(req, status, comment, rel)

    def _quarantine_spool(self, spool: Spool) -> str | None:
        """Keep a refused data set: its spool file (same bytes as :meth:`_reject` writes)
        is fsynced and renamed into the quarantine directory, which is then fsynced."""
        if not spool.data_len or spool.error is not None or spool.path is None:
            return None
        qdir = self.ctx.settings.quarantine_dir
        name = _quarantine_name()
        try:
            spool.sync()
            move_synced_file(spool.path, qdir / name)
            spool.claimed()
            fsync_dir(qdir)
        except Exception:
            logger.exception("could not keep quarantined bytes")
            return None
        return name

    def _refuse(self, req: StoreRequest | SpooledRequest, status: int, comment: str,
                rel: str | None) -> st.DimseOutcome:
        try:
            self.index.add_quarantine(rel_path=rel, reason=comment, status_code=status,
                                      source_ae=req.calling_ae,
                                      sop_instance_uid=req.sop_instance_uid, now=utcnow())
        except Exception:
            logger.exception("could not record quarantine row")
        logger.warning("C-STORE refused", extra={"status": f"0x{status:04X}", "reason": comment,
                                                  "source_ae": req.calling_ae,
                                                  "sop_instance_uid": _safe(req),
                                                  "quarantine": rel})
        return st.DimseOutcome(status, comment)


def _dataset_part(file_bytes: bytes) -> bytes:
    """The data set after a PS3.10 header: skip preamble, prefix and group 0002."""
    if len(file_bytes) < 144 or file_bytes[128:132] != b"DICM":
        return b""
    (group_length,) = struct.unpack_from("<I", file_bytes, 140)
    return file_bytes[144 + group_length:]


def _quarantine_name() -> str:
    return f"{utcnow().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.dcm"


def _safe(req: StoreRequest | SpooledRequest) -> str:
    """A request UID fit for a log line (it is untrusted input)."""
    uid = req.sop_instance_uid or ""
    return uid[:64] if all(c.isdigit() or c == "." for c in uid) else "<invalid>"
