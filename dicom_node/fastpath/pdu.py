"""Upper-layer PDUs (PS3.8 section 9.3): parse the A-ASSOCIATE-RQ, encode our answers.

Only what an association acceptor needs: the request is decoded into a frozen
:class:`AssociateRequest`; A-ASSOCIATE-AC/RJ, A-RELEASE-RP, A-ABORT and P-DATA-TF are
encoded as bytes. P-DATA-TF bodies are never parsed here; :mod:`.reader` walks them in
place so data set fragments are not copied.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# PDU types, PS3.8 Table 9-1 (and 9.3.1).
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

#: PS3.7 Annex A.2.1: the one DICOM application context name.
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# A-ASSOCIATE-RJ fields, PS3.8 9.3.4: result, source, reason/diag.
RJ_PERMANENT = 0x01
RJ_TRANSIENT = 0x02
RJ_SOURCE_USER = 0x01
RJ_SOURCE_ACSE = 0x02
RJ_SOURCE_PRESENTATION = 0x03
RJ_USER_NO_REASON = 0x01
RJ_USER_APP_CONTEXT = 0x02
RJ_USER_CALLING_AE = 0x03
RJ_ACSE_PROTOCOL_VERSION = 0x02
RJ_PRESENTATION_LOCAL_LIMIT = 0x02

# Presentation context results, PS3.8 9.3.3.2.
PC_ACCEPTANCE = 0
PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# A-ABORT source and reason, PS3.8 9.3.8.
ABORT_SOURCE_USER = 0x00
ABORT_SOURCE_PROVIDER = 0x02
ABORT_NOT_SPECIFIED = 0x00
ABORT_UNRECOGNIZED_PDU = 0x01
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06

#: Bytes before a P-DATA-TF's first PDV value: PDU header (6) + PDV item header (6).
PDATA_OVERHEAD = 12

_HEADER = struct.Struct(">BBL")
_ITEM = struct.Struct(">BBH")


class PduError(Exception):
    """A PDU that does not follow PS3.8: the association is aborted."""


@dataclass(frozen=True, slots=True)
class ProposedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AssociateRequest:
    """The parts of an A-ASSOCIATE-RQ (PS3.8 9.3.2) an acceptor decides on."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    called_raw: bytes  # echoed verbatim in the AC (PS3.8 9.3.3: "identical to the RQ")
    calling_raw: bytes
    application_context: str
    contexts: tuple[ProposedContext, ...]
    max_pdu: int  # 0: no limit (PS3.8 D.1)
    implementation_class_uid: str
    implementation_version: str


@dataclass(frozen=True, slots=True)
class ContextResult:
    """Our answer for one proposed context; ``transfer_syntax`` is the accepted one."""

    context_id: int
    result: int
    abstract_syntax: str
    transfer_syntax: str


def _uid(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace").strip("\x00 ")


def _items(body: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset < end:
        if end - offset < 4:
            raise PduError("truncated item header")
        kind, _, length = _ITEM.unpack_from(body, offset)
        offset += 4
        if offset + length > end:
            raise PduError(f"item 0x{kind:02X} overruns its PDU")
        yield kind, body[offset:offset + length]
        offset += length


def parse_associate_rq(body: bytes) -> AssociateRequest:
    """Decode an A-ASSOCIATE-RQ body (the bytes after its 6-byte PDU header)."""
    if len(body) < 68:
        raise PduError("A-ASSOCIATE-RQ shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    called_raw, calling_raw = body[4:20], body[20:36]
    app_context = ""
    contexts: list[ProposedContext] = []
    max_pdu, impl_uid, impl_version = 0, "", ""
    for kind, value in _items(body, 68, len(body)):
        if kind == 0x10:
            app_context = _uid(value)
        elif kind == 0x20:
            if len(value) < 4:
                raise PduError("presentation context item too short")
            abstract, syntaxes = "", []
            for sub, sval in _items(value, 4, len(value)):
                if sub == 0x30:
                    abstract = _uid(sval)
                elif sub == 0x40:
                    syntaxes.append(_uid(sval))
            contexts.append(ProposedContext(value[0], abstract, tuple(syntaxes)))
        elif kind == 0x50:
            # PS3.7 D.3.3: max length (0x51), implementation class / version (0x52, 0x55);
            # async window, role selection, extended negotiation and user identity are
            # left unanswered, which PS3.7 D.3.3.3 / D.3.3.4 / D.3.3.7 read as defaults.
            for sub, sval in _items(value, 0, len(value)):
                if sub == 0x51 and len(sval) == 4:
                    (max_pdu,) = struct.unpack(">L", sval)
                elif sub == 0x52:
                    impl_uid = _uid(sval)
                elif sub == 0x55:
                    impl_version = sval.decode("ascii", errors="replace").strip()
    return AssociateRequest(
        protocol_version=version,
        called_ae=called_raw.decode("ascii", errors="replace").strip(),
        calling_ae=calling_raw.decode("ascii", errors="replace").strip(),
        called_raw=called_raw, calling_raw=calling_raw,
        application_context=app_context, contexts=tuple(contexts), max_pdu=max_pdu,
        implementation_class_uid=impl_uid, implementation_version=impl_version,
    )


def _item(kind: int, value: bytes) -> bytes:
    return _ITEM.pack(kind, 0, len(value)) + value


def _pdu(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(kind, 0, len(body)) + body


def encode_associate_ac(
    rq: AssociateRequest, results: list[ContextResult], impl_uid: str, impl_version: bytes,
    max_pdu: int = 0,
) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 9.3.3); ``max_pdu`` 0 announces no limit."""
    items = [_item(0x10, APPLICATION_CONTEXT.encode("ascii"))]
    for r in results:
        ts = _item(0x40, r.transfer_syntax.encode("ascii"))
        items.append(_item(0x21, bytes([r.context_id, 0, r.result, 0]) + ts))
    user = (_item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, impl_uid.encode("ascii"))
            + _item(0x55, impl_version))
    items.append(_item(0x50, user))
    fixed = struct.pack(">HH", 1, 0) + rq.called_raw + rq.calling_raw + b"\x00" * 32
    return _pdu(A_ASSOCIATE_AC, fixed + b"".join(items))


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    return _pdu(A_ASSOCIATE_RJ, bytes([0, result, source, reason]))


def encode_release_rp() -> bytes:
    return _pdu(A_RELEASE_RP, b"\x00" * 4)


def encode_abort(source: int = ABORT_SOURCE_PROVIDER, reason: int = ABORT_NOT_SPECIFIED) -> bytes:
    return _pdu(A_ABORT, bytes([0, 0, source, reason]))


def encode_pdata(context_id: int, payload: bytes, *, command: bool, max_pdu: int) -> bytes:
    """P-DATA-TF PDUs carrying ``payload`` as one message's command or data set.

    Fragments respect the peer's maximum PDU length (PS3.8 9.3.5: it bounds the whole
    P-DATA-TF, headers of the PDU excluded, PDV headers included).
    """
    limit = max_pdu - 6 if max_pdu else len(payload) or 1
    limit = max(limit, 1)
    out = []
    offset = 0
    while True:
        chunk = payload[offset:offset + limit]
        offset += len(chunk)
        last = offset >= len(payload)
        mch = (0x01 if command else 0x00) | (0x02 if last else 0x00)
        pdv = struct.pack(">LBB", len(chunk) + 2, context_id, mch) + chunk
        out.append(_pdu(P_DATA_TF, pdv))
        if last:
            return b"".join(out)
