"""C-STORE SCU: send files or data sets to a DICOM node over one association.

Used by ``countyread send`` and by the results outbox. Each file is offered in its own
transfer syntax and in explicit/implicit little endian (PS3.4 B.3.1: the SCU proposes, the
SCP picks). When the file's own syntax is accepted its bytes go out as stored, without
decoding; otherwise the data set is decoded and sent little endian.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import build_context

from dicom_node.sop import EXPLICIT_VR_LE, IMPLICIT_VR_LE

logger = logging.getLogger(__name__)

# Send a file's data set straight from disk (no decode) when its transfer syntax was
# accepted as is; this flag is read by pynetdicom only for sends given a file path,
# and only this module sends by path.
_config.STORE_SEND_CHUNKED_DATASET = True

_LE = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255


@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of one instance: ``status`` is the DIMSE status, None when not sent."""

    path: str | None
    sop_instance_uid: str | None
    status: int | None
    error_comment: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0x0000

    @property
    def warning(self) -> bool:
        return self.status is not None and 0xB000 <= self.status <= 0xBFFF


@dataclass(frozen=True, slots=True)
class _Item:
    path: Path | None
    dataset: Dataset | None
    sop_class: str
    sop_instance: str
    transfer_syntax: str


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories walked recursively (sorted, hidden files skipped)."""
    return collect_files(paths)[0]


def _has_dicm_preamble(path: Path) -> bool:
    # PS3.10 7.1: a DICOM file starts with a 128-byte preamble and the magic "DICM".
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def collect_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Files to send, and files skipped while walking directories.

    A file named explicitly is always sent (and fails loudly if it is not DICOM); inside a
    walked directory, files without the PS3.10 preamble (reports, truth.json, DICOMDIR
    side files) are skipped, since a study folder from a CD or a scanner export holds them.
    """
    out: list[Path] = []
    skipped: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or f.name.startswith("."):
                    continue
                (out if _has_dicm_preamble(f) else skipped).append(f)
        else:
            out.append(p)
    return out, skipped


def _item_from_path(path: Path) -> _Item | SendResult:
    try:
        meta = read_file_meta_info(path)
        return _Item(path, None, str(meta.MediaStorageSOPClassUID),
                     str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID))
    except Exception:
        return SendResult(str(path), None, None, "not a DICOM file with file meta (PS3.10)")


def _item_from_dataset(ds: Dataset) -> _Item:
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or EXPLICIT_VR_LE)
    return _Item(None, ds, str(ds.SOPClassUID), str(ds.SOPInstanceUID), ts)


def _contexts(items: Sequence[_Item]) -> list[Any]:
    wanted: list[tuple[str, tuple[str, ...]]] = []
    for it in items:
        combos: list[tuple[str, tuple[str, ...]]] = [(it.sop_class, _LE)]
        if it.transfer_syntax not in _LE:
            combos.insert(0, (it.sop_class, (it.transfer_syntax,)))
        for combo in combos:
            if combo not in wanted:
                wanted.append(combo)
    return [build_context(sop, list(ts)) for sop, ts in wanted]


def _batches(items: list[_Item]) -> Iterator[list[_Item]]:
    """Split so that one association never proposes more than 128 contexts."""
    batch: list[_Item] = []
    for it in items:
        if len(_contexts([*batch, it])) > _MAX_CONTEXTS:
            yield batch
            batch = []
        batch.append(it)
    if batch:
        yield batch


def _nodelay(event: Any) -> None:
    with contextlib.suppress(AttributeError, OSError):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send_one(assoc: Any, it: _Item) -> SendResult:
    path = str(it.path) if it.path else None
    exact = [cx for cx in assoc.accepted_contexts
             if cx.abstract_syntax == it.sop_class and cx.transfer_syntax[0] == it.transfer_syntax]
    le = [cx for cx in assoc.accepted_contexts
          if cx.abstract_syntax == it.sop_class and cx.transfer_syntax[0] in _LE]
    payload: Any
    if exact and it.path is not None:
        payload = it.path  # raw bytes from disk, no decode
    elif exact or le:
        ds = it.dataset if it.dataset is not None else dcmread(it.path)  # type: ignore[arg-type]
        if not exact and not UID(it.transfer_syntax).is_transfer_syntax:
            return SendResult(path, it.sop_instance, None, "unknown transfer syntax")
        if not exact and UID(it.transfer_syntax).is_compressed:
            ds.decompress()  # peer takes only little endian: decode with pylibjpeg
        payload = ds
    else:
        return SendResult(path, it.sop_instance, None, "peer accepted no presentation context")
    rsp = assoc.send_c_store(payload)
    if rsp is None or "Status" not in rsp:
        return SendResult(path, it.sop_instance, None, "no response (timeout or abort)")
    comment = rsp.get("ErrorComment")
    return SendResult(path, it.sop_instance, int(rsp.Status), str(comment) if comment else None)


def _send(
    host: str, port: int, called_ae: str, items: list[_Item], calling_ae: str,
    tls: ssl.SSLContext | None, timeout_s: float,
    on_result: Callable[[SendResult], None] | None,
) -> list[SendResult]:
    results: list[SendResult] = []
    for batch in _batches(items):
        ae = AE(ae_title=calling_ae)
        ae.requested_contexts = _contexts(batch)
        ae.maximum_pdu_size = 0
        ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = timeout_s
        kwargs: dict[str, Any] = {"evt_handlers": [(evt.EVT_CONN_OPEN, _nodelay)]}
        if tls is not None:
            kwargs["tls_args"] = (tls, None)
        assoc = ae.associate(host, port, ae_title=called_ae, **kwargs)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "association failed"
            for it in batch:
                results.append(SendResult(str(it.path) if it.path else None,
                                          it.sop_instance, None, why))
            logger.warning("send failed", extra={"host": host, "port": port, "reason": why})
            continue
        try:
            for it in batch:
                if not assoc.is_established:
                    res = SendResult(str(it.path) if it.path else None, it.sop_instance, None,
                                     "association ended")
                else:
                    try:
                        res = _send_one(assoc, it)
                    except (OSError, ValueError, AttributeError, RuntimeError) as exc:
                        res = SendResult(str(it.path) if it.path else None, it.sop_instance,
                                         None, f"{type(exc).__name__}: {exc}"[:120])
                results.append(res)
                if on_result is not None:
                    on_result(res)
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()
    return results


def send_paths(
    host: str, port: int, called_ae: str, paths: Iterable[str | Path], *,
    calling_ae: str = "COUNTYREAD", tls: ssl.SSLContext | None = None,
    timeout_s: float = 60.0, on_result: Callable[[SendResult], None] | None = None,
) -> list[SendResult]:
    """C-STORE every file (directories walked); one result per file, in input order."""
    slots: list[SendResult | _Item] = []
    for p in expand_paths(paths):
        got = _item_from_path(p)
        slots.append(got)
        if isinstance(got, SendResult) and on_result is not None:
            on_result(got)
    items = [s for s in slots if isinstance(s, _Item)]
    sent = iter(_send(host, port, called_ae, items, calling_ae, tls, timeout_s, on_result)
                if items else [])
    return [s if isinstance(s, SendResult) else next(sent) for s in slots]


def send_datasets(
    host: str, port: int, called_ae: str, datasets: Iterable[Dataset], *,
    calling_ae: str = "COUNTYREAD", tls: ssl.SSLContext | None = None,
    timeout_s: float = 60.0, on_result: Callable[[SendResult], None] | None = None,
) -> list[SendResult]:
    """C-STORE in-memory data sets (e.g. results built by highdicom)."""
    items = [_item_from_dataset(ds) for ds in datasets]
    if not items:
        return []
    return _send(host, port, called_ae, items, calling_ae, tls, timeout_s, on_result)


def client_tls(ca: Path | None = None, cert: Path | None = None,
               key: Path | None = None) -> ssl.SSLContext:
    """A TLS client context: verify the server against ``ca``, present ``cert`` if given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    ctx.check_hostname = False  # DICOM peers are addressed by IP; trust comes from the CA
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx
