"""DIMSE command sets (PS3.7 section 9.3 and 10.3), always implicit VR little endian.

A command set is a short group-0000 data set (PS3.7 6.3.1). We read the few elements the
acceptor acts on and encode responses element by element in ascending tag order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Command Field values, PS3.7 E.1-1.
C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
N_SET_RQ = 0x0120
N_ACTION_RQ = 0x0130
N_CREATE_RQ = 0x0140
C_CANCEL_RQ = 0x0FFF
RESPONSE_BIT = 0x8000

#: CommandDataSetType (0000,0800) meaning "no data set" (PS3.7 E.1-1).
NO_DATASET = 0x0101

#: PS3.7 C.4.? general status "unrecognized operation" for requests we do not serve.
UNRECOGNIZED_OPERATION = 0x0211

_TAG_LEN = struct.Struct("<HHL")

# Element tags (element number within group 0000) and their encodings.
_AFFECTED_SOP_CLASS = 0x0002
_REQUESTED_SOP_CLASS = 0x0003
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_RESPONDING_TO = 0x0120
_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
_ERROR_ID = 0x0903
_AFFECTED_SOP_INSTANCE = 0x1000
_REQUESTED_SOP_INSTANCE = 0x1001
_ACTION_TYPE_ID = 0x1008


class CommandError(Exception):
    """A command set that cannot be read: the association is aborted."""


@dataclass(frozen=True, slots=True)
class Command:
    """One request's command set, as far as the acceptor needs it."""

    command_field: int
    message_id: int
    has_dataset: bool
    affected_sop_class: str
    affected_sop_instance: str
    requested_sop_class: str
    requested_sop_instance: str
    action_type_id: int | None = None


def _text(value: bytes) -> str:
    return value.decode("ascii", errors="replace").strip("\x00 ")


def _us(value: bytes, what: str) -> int:
    if len(value) != 2:
        raise CommandError(f"{what} is not a 2-byte US")
    return int(struct.unpack("<H", value)[0])


def parse_command(data: bytes | bytearray) -> Command:
    """Decode a command set; unknown elements are skipped."""
    elems: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise CommandError("truncated command element")
        group, elem, length = _TAG_LEN.unpack_from(data, offset)
        offset += 8
        if group != 0 or offset + length > end:
            raise CommandError("command element outside group 0000 or overrunning")
        elems[elem] = bytes(data[offset:offset + length])
        offset += length
    if _COMMAND_FIELD not in elems or _MESSAGE_ID not in elems:
        raise CommandError("CommandField or MessageID missing")
    dataset_type = _us(elems.get(_DATASET_TYPE, b"\x01\x01"), "CommandDataSetType")
    return Command(
        command_field=_us(elems[_COMMAND_FIELD], "CommandField"),
        message_id=_us(elems[_MESSAGE_ID], "MessageID"),
        has_dataset=dataset_type != NO_DATASET,
        affected_sop_class=_text(elems.get(_AFFECTED_SOP_CLASS, b"")),
        affected_sop_instance=_text(elems.get(_AFFECTED_SOP_INSTANCE, b"")),
        requested_sop_class=_text(elems.get(_REQUESTED_SOP_CLASS, b"")),
        requested_sop_instance=_text(elems.get(_REQUESTED_SOP_INSTANCE, b"")),
        action_type_id=(_us(elems[_ACTION_TYPE_ID], "ActionTypeID")
                        if _ACTION_TYPE_ID in elems else None),
    )


def _elem(elem: int, value: bytes, pad: bytes = b"\x00") -> bytes:
    if len(value) % 2:
        value += pad
    return _TAG_LEN.pack(0, elem, len(value)) + value


def _us_elem(elem: int, value: int) -> bytes:
    return _elem(elem, struct.pack("<H", value))


def encode_response(
    request: Command, *, status: int, sop_class: str, sop_instance: str | None = None,
    error_comment: str | None = None, error_id: int | None = None, has_dataset: bool = False,
) -> bytes:
    """The response command set to ``request`` (PS3.7 9.3 / 10.3 response tables)."""
    body = [_elem(_AFFECTED_SOP_CLASS, sop_class.encode("ascii", errors="replace")),
            _us_elem(_COMMAND_FIELD, request.command_field | RESPONSE_BIT),
            _us_elem(_RESPONDING_TO, request.message_id),
            _us_elem(_DATASET_TYPE, 0x0000 if has_dataset else NO_DATASET),
            _us_elem(_STATUS, status)]
    if error_comment:
        # PS3.7 C.4: ErrorComment is LO, at most 64 characters.
        body.append(_elem(_ERROR_COMMENT, error_comment[:64].encode("ascii", errors="replace"),
                          b" "))
    if error_id is not None:
        body.append(_us_elem(_ERROR_ID, error_id))
    if sop_instance:
        body.append(_elem(_AFFECTED_SOP_INSTANCE, sop_instance.encode("ascii", errors="replace")))
    payload = b"".join(body)
    return _TAG_LEN.pack(0, 0, 4) + struct.pack("<L", len(payload)) + payload
