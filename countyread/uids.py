"""DICOM UID validation and deterministic UID derivation (PS3.5 section 9)."""

from __future__ import annotations

import hashlib
import re

from countyread.errors import InvalidInputError

# PS3.5 9.1: components of digits separated by dots, no leading zero in a multi-digit
# component, at most 64 characters.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

#: UID root for objects CountyRead creates. A "2.25." UUID-derived UID needs no
#: registered root (PS3.5 B.2), which suits a product installed at many sites.
UID_ROOT = "2.25."


def is_valid_uid(value: object) -> bool:
    """Return True when ``value`` is a syntactically valid DICOM UID."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID_RE.match(value))


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` unchanged when it is a valid UID, else raise InvalidInputError.

    Lenient on one real-world quirk only: leading zeros in a component are seen from old
    scanners and are harmless in a path, so they are accepted; anything that is not digits
    and dots is refused because UIDs become file names.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} is missing")
    if len(value) > 64:
        raise InvalidInputError(f"{what} is longer than 64 characters")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", value):
        raise InvalidInputError(f"{what} contains characters other than digits and dots")
    return value


def derive_uid(*parts: str | int) -> str:
    """Derive a deterministic UID from its inputs (same inputs, same UID).

    The SHA-256 of the joined parts is truncated to 128 bits and written as a decimal
    integer under the 2.25 root, as PS3.5 B.2 describes for UUID-derived UIDs.
    """
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    number = int.from_bytes(digest[:16], "big")
    return f"{UID_ROOT}{number}"
