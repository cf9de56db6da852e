"""Decode text values with the data set's Specific Character Set (PS3.5 6.1, PS3.3 C.12.1.1.2).

pydicom decodes most character sets; one it gets wrong is ISO 2022 IR 58 (GB2312 with
code extension, common on Chinese scanners): Python's ``gb2312`` codec does not strip the
``ESC $ ) A`` designation, so names came back with stray escape characters. GB2312 is
designated to G1 and encoded with the high bit set (PS3.5 K.2), i.e. it is EUC-CN, so
removing the escape sequences and decoding with GB18030 (an EUC-CN superset) is exact.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

from pydicom.charset import convert_encodings, decode_bytes

logger = logging.getLogger(__name__)

PN_DELIMITERS = {0x5E, 0x3D}  # '^' and '=' reset the code extension state (PS3.5 6.1.2.5.3)
TEXT_DELIMITERS = {0x5C}

_IR58_ESCAPES = (b"\x1b$)A", b"\x1b$A", b"\x1b(B", b"\x1b-A")
_OTHER_ESCAPE_STARTS = (b"\x1b$B", b"\x1b$(D", b"\x1b$)C", b"\x1b(J", b"\x1b)I")


def parse_charsets(raw: bytes | str | Sequence[str] | None) -> list[str]:
    """Turn a (0008,0005) value into a list of defined terms; [] means the default."""
    if raw is None:
        return []
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    values = raw.split("\\") if isinstance(raw, str) else list(raw)
    out = [v.strip() for v in values]
    return [] if not any(out) else out


def decode_text(raw: bytes, charsets: Sequence[str], *, person_name: bool = False) -> str:
    """Decode one text element value; never raises (undecodable bytes become U+FFFD)."""
    raw = raw.rstrip(b"\x00 ")
    if not raw:
        return ""
    terms = list(charsets) or ["ISO_IR 6"]
    if b"\x1b" in raw and "ISO 2022 IR 58" in terms and not any(
        s in raw for s in _OTHER_ESCAPE_STARTS
    ):
        for esc in _IR58_ESCAPES:
            raw = raw.replace(esc, b"")
        return raw.decode("gb18030", errors="replace")
    delimiters = PN_DELIMITERS if person_name else TEXT_DELIMITERS
    with warnings.catch_warnings():
        # pydicom warns on unknown terms and falls back; the fallback is what we want.
        warnings.simplefilter("ignore")
        try:
            encodings = convert_encodings(terms)
            return decode_bytes(raw, encodings, delimiters)
        except (LookupError, UnicodeError, ValueError):
            return raw.decode("utf-8", errors="replace")
