"""The node's handlers as the fast engine calls them (:class:`fastpath.association.Services`).

Same decisions as the pynetdicom event handlers in :mod:`dicom_node.scp`: the AE
allow-list, durable ingest, MPPS. Only the plumbing differs: C-STORE data sets arrive as
spool files, MPPS data sets as bytes decoded here with pydicom.
"""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from dicom_node import status as st
from dicom_node.commitment import STORAGE_COMMITMENT_SOP_CLASS
from dicom_node.fastpath import dimse
from dicom_node.fastpath.association import Admission, Peer, Reply
from dicom_node.fastpath.pdu import AssociateRequest
from dicom_node.fastpath.spool import Spool
from dicom_node.ingest import SpooledRequest, StoreRequest, encode_file_meta
from dicom_node.sop import (
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MPPS_SOP_CLASS,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
)

if TYPE_CHECKING:
    from dicom_node.scp import DicomNode


def supported_contexts() -> dict[str, frozenset[str]]:
    """Abstract syntax -> transfer syntaxes, as the pynetdicom engine registers them."""
    out = {sop: frozenset(TRANSFER_SYNTAXES) for sop in STORAGE_SOP_CLASSES}
    out[VERIFICATION_SOP_CLASS] = frozenset({EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE})
    out[MPPS_SOP_CLASS] = frozenset({EXPLICIT_VR_LE, IMPLICIT_VR_LE})
    out[STORAGE_COMMITMENT_SOP_CLASS] = frozenset({EXPLICIT_VR_LE, IMPLICIT_VR_LE})
    return out


def _decode(data: bytes, transfer_syntax: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dataset(BytesIO(data), transfer_syntax == IMPLICIT_VR_LE,
                            transfer_syntax != EXPLICIT_VR_BE)


def _encode(ds: Dataset, transfer_syntax: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax != EXPLICIT_VR_BE
    fp.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LE
    write_dataset(fp, ds)
    return fp.getvalue()


def _reply(status: Dataset | int, attrs: Dataset | None, transfer_syntax: str) -> Reply:
    if isinstance(status, int):
        code, comment, error_id = status, None, None
    else:
        code = int(status.Status)
        comment = str(status.get("ErrorComment", "") or "") or None
        error_id = int(status.ErrorID) if "ErrorID" in status else None
    data = _encode(attrs, transfer_syntax) if attrs is not None and code == st.SUCCESS else None
    return Reply(code, comment, error_id, data)


def _status_reply(status: Dataset | int) -> Reply:
    if isinstance(status, int):
        return Reply(status)
    return Reply(int(status.Status), str(status.get("ErrorComment", "") or "") or None)


class NodeServices:
    """Adapter from the fast engine to one :class:`~dicom_node.scp.DicomNode`."""

    def __init__(self, node: DicomNode) -> None:
        self.node = node
        self.spool_dir: Path = node.ingestor.spool_dir
        self.supported = supported_contexts()

    def admit(self, rq: AssociateRequest, address: str) -> Admission:
        accepted, node_id = self.node.admit(rq.calling_ae, address)
        return Admission(accepted, node_id)

    def file_meta(self, peer: Peer, cmd: dimse.Command, transfer_syntax: str) -> bytes:
        return encode_file_meta(cmd.affected_sop_class, cmd.affected_sop_instance,
                                transfer_syntax, peer.calling_ae or None)

    def store(self, peer: Peer, cmd: dimse.Command, transfer_syntax: str,
              spool: Spool | None) -> Reply:
        ingestor = self.node.ingestor
        if spool is None:  # a C-STORE-RQ announcing no data set
            outcome = ingestor.ingest(StoreRequest(
                b"", transfer_syntax, cmd.affected_sop_class, cmd.affected_sop_instance,
                peer.calling_ae or None, peer.node_id))
        else:
            outcome = ingestor.ingest_spooled(SpooledRequest(
                spool, transfer_syntax, cmd.affected_sop_class, cmd.affected_sop_instance,
                peer.calling_ae or None, peer.node_id))
        return Reply(outcome.status, outcome.comment)

    def n_request(self, peer: Peer, cmd: dimse.Command, transfer_syntax: str,
                  data: bytes) -> Reply:
        sop_class = (cmd.affected_sop_class if cmd.command_field == dimse.N_CREATE_RQ
                     else cmd.requested_sop_class)
        if cmd.command_field == dimse.N_ACTION_RQ:
            return self._action(peer, cmd, transaction_syntax=transfer_syntax, data=data)
        if sop_class != MPPS_SOP_CLASS:
            return Reply(st.SOP_CLASS_NOT_SUPPORTED, "SOP class not supported")
        try:
            ds = _decode(data, transfer_syntax) if data else Dataset()
        except Exception:  # pydicom raises many types on corrupt input
            return Reply(st.PROCESSING_FAILURE, "data set could not be parsed")
        event: Any = SimpleNamespace(
            request=SimpleNamespace(AffectedSOPInstanceUID=cmd.affected_sop_instance,
                                    RequestedSOPInstanceUID=cmd.requested_sop_instance),
            attribute_list=ds, modification_list=ds)
        mpps = self.node.mpps
        status, attrs = (mpps.on_create(event) if cmd.command_field == dimse.N_CREATE_RQ
                         else mpps.on_set(event))
        return _reply(status, attrs, transfer_syntax)

    def _action(self, peer: Peer, cmd: dimse.Command, *, transaction_syntax: str,
                data: bytes) -> Reply:
        """N-ACTION: Storage Commitment requests (dicom_node/commitment.py)."""
        if cmd.requested_sop_class != STORAGE_COMMITMENT_SOP_CLASS:
            return Reply(st.SOP_CLASS_NOT_SUPPORTED, "SOP class not supported")
        try:
            ds = _decode(data, transaction_syntax) if data else None
        except Exception:  # pydicom raises many types on corrupt input
            return Reply(st.PROCESSING_FAILURE, "data set could not be parsed")
        status, _ = self.node.commitment.on_action(peer.calling_ae or "", peer.node_id,
                                                   cmd.action_type_id, ds)
        return _status_reply(status)

