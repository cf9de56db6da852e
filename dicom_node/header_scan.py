"""Scan the top-level elements of a data set header without building a pydicom Dataset.

The C-STORE fast path only needs about twenty top-level values and the declared length
of the pixel data (PS3.5 7.1: tag, VR, length, value; 7.5: sequences and items). This
scan accepts only the plain layout: ascending standard tags, known VRs, every value
before the pixel data complete in the bytes given, and pixel data of defined length as
the last element, ending exactly at the end of the data set. Anything else returns None
and the caller reads the data set with pydicom, so unusual input keeps the answers the
pydicom path gives.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD

#: PS3.5 Table 7.1-1: VRs whose explicit encoding has a 4-byte length after 2 reserved bytes.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS",
                    b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
                    b"US"}


_LE = (struct.Struct("<HH"), struct.Struct("<L"), struct.Struct("<H"))
_BE = (struct.Struct(">HH"), struct.Struct(">L"), struct.Struct(">H"))


class Elem(NamedTuple):
    """A top-level element as the header checks read it: raw value bytes and length.

    Empty values are None, as pydicom gives them."""

    value: bytes | None
    length: int


class _NotPlain(Exception):
    pass


class _Scanner:
    def __init__(self, buf: bytes, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.end = len(buf)
        self.implicit = implicit
        self.tag_fmt, self.long_fmt, self.short_fmt = _LE if little else _BE

    def header(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """(tag, VR, length, header size) of the element at ``pos``."""
        if pos + 8 > self.end:
            raise _NotPlain
        group, elem = self.tag_fmt.unpack_from(self.buf, pos)
        tag = group << 16 | elem
        if self.implicit or group == 0xFFFE:  # item tags never carry a VR (PS3.5 7.5)
            return tag, None, self.long_fmt.unpack_from(self.buf, pos + 4)[0], 8
        vr = self.buf[pos + 4:pos + 6]
        if vr not in _VRS:
            raise _NotPlain
        if vr in _LONG_VRS:
            if pos + 12 > self.end:
                raise _NotPlain
            return tag, vr, self.long_fmt.unpack_from(self.buf, pos + 8)[0], 12
        return tag, vr, self.short_fmt.unpack_from(self.buf, pos + 6)[0], 8

    def skip_sequence(self, pos: int) -> int:
        """Past an undefined-length sequence's items and its delimiter."""
        while True:
            tag, _, length, _ = self.header(pos)
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise _NotPlain
            pos = self.skip_item(pos) if length == _UNDEFINED else pos + length
            if pos > self.end:
                raise _NotPlain

    def skip_item(self, pos: int) -> int:
        """Past the elements of an undefined-length item and its delimiter."""
        while True:
            tag, vr, length, size = self.header(pos)
            if tag == _ITEM_END:
                return pos + 8
            pos = self.skip_undefined(pos + size, vr) if length == _UNDEFINED else (
                pos + size + length)
            if pos > self.end:
                raise _NotPlain

    def skip_undefined(self, pos: int, vr: bytes | None) -> int:
        if vr == b"SQ" or (self.implicit and vr is None):
            return self.skip_sequence(pos)
        raise _NotPlain  # e.g. UN of undefined length: implicit VR inside, leave to pydicom


def scan(buf: bytes, total: int, implicit: bool, little: bool) -> dict[int, Elem] | None:
    """Top-level elements of the first bytes ``buf`` of a data set of ``total`` bytes.

    Returns None unless the layout is the plain one described in the module docstring.
    """
    s = _Scanner(buf, implicit, little)
    out: dict[int, Elem] = {}
    pos, last = 0, -1
    try:
        while True:
            tag, vr, length, size = s.header(pos)
            if tag <= last or tag > PIXEL_DATA:
                return None
            last = tag
            start = pos + size
            if tag == PIXEL_DATA:
                if length in (0, _UNDEFINED) or start + length != total or not out:
                    return None
                out[tag] = Elem(b"", length)
                return out
            if length == _UNDEFINED:
                pos = s.skip_undefined(start, vr)
                out[tag] = Elem(None, 0)
                continue
            pos = start + length
            if pos > s.end:
                return None
            out[tag] = Elem(buf[start:pos] if length else None, length)
    except (_NotPlain, struct.error, RecursionError):
        return None
