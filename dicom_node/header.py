"""Read and check the header of a received data set without touching its pixel data.

The C-STORE handler gets the data set bytes as the peer encoded them. We parse the
elements once (pixel data stays a raw byte slice, never decoded), pull out the fields
the index needs and check what would make the stored object unusable. Every problem
raises :class:`~dicom_node.status.DimseFailure` with the status PS3.4 B.2.3 prescribes.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from itertools import pairwise
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from countyread.errors import InvalidInputError
from countyread.uids import validate_uid
from dicom_node import status as st
from dicom_node.charset import decode_text, parse_charsets
from dicom_node.header_scan import Elem, scan
from dicom_node.sop import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    UNCOMPRESSED_SYNTAXES,
)

_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_UNDEFINED = 0xFFFFFFFF
#: Syntaxes whose data set bytes can be judged without reading the pixel data.
_NATIVE = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE)


@dataclass(frozen=True, slots=True)
class StudyFields:
    """Study-level attributes, PHI included; they go to ``studies`` and nowhere else."""

    patient_name: str | None
    patient_id: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    accession_number: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part: str | None
    frame_of_reference_uid: str | None
    instance_number: int | None
    study: StudyFields


#: A parsed header: a pydicom Dataset, or the fast path's scan of top-level elements.
Header = Dataset | dict[int, Elem]


def _item(ds: Header, tag: int) -> Any:
    return ds[tag] if isinstance(ds, dict) else ds.get_item(tag)


def _raw(ds: Header, tag: int) -> Any:
    """The element value as read (bytes for a raw element), None when absent."""
    if tag not in ds:
        return None
    return getattr(_item(ds, tag), "value", None)


def _ascii(ds: Header, tag: int, limit: int | None = None) -> str | None:
    """ASCII text clipped to ``limit``: the index column width (PS3.5 6.2 caps the VRs, but
    scanners overrun them and the file keeps the full value anyway). UIDs are never
    clipped: a long one must fail validation, not be shortened into a different UID."""
    value = _raw(ds, tag)
    if value is None:
        return None
    text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else str(value)
    text = text.strip("\x00 ")[:limit].rstrip(" ")
    return text or None


def _int(ds: Header, tag: int, what: str, *, us_fmt: str | None = None) -> int | None:
    value = _raw(ds, tag)
    if value is None:
        return None
    try:
        if us_fmt is not None and isinstance(value, bytes):
            # US is binary; its byte order follows the transfer syntax.
            if len(value) != 2:
                raise ValueError
            return int(struct.unpack(us_fmt, value)[0])
        if isinstance(value, bytes):
            value = value.decode("ascii").strip("\x00 ")
        if value in ("", None):
            return None
        return int(str(value).split("\\")[0])
    except (ValueError, UnicodeDecodeError, struct.error):
        raise st.DimseFailure(
            st.INVALID_IMAGE_ATTRIBUTE, f"{what} is not a valid integer"
        ) from None


def _text(
    ds: Header, tag: int, charsets: list[str], *, pn: bool = False, limit: int | None = None
) -> str | None:
    value = _raw(ds, tag)
    if value is None:
        return None
    text = (decode_text(value, charsets, person_name=pn) if isinstance(value, bytes)
            else str(value))
    return text.strip()[:limit].rstrip() or None


def parse(data: bytes, transfer_syntax: str) -> Dataset:
    """Parse data set bytes (no file meta) encoded in ``transfer_syntax``."""
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise st.DimseFailure(st.UNSUPPORTED_TRANSFER_SYNTAX, "transfer syntax not supported")
    if not data:
        raise st.DimseFailure(st.UNREADABLE_DATASET, "data set is empty")
    implicit = transfer_syntax == IMPLICIT_VR_LE
    little = transfer_syntax != EXPLICIT_VR_BE
    try:
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
            # PS3.5 A.5: raw deflate (RFC 1951), no zlib header.
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dataset(BytesIO(data), implicit, little)
    except Exception:  # pydicom raises many types on corrupt input; all mean "unreadable"
        raise st.DimseFailure(st.UNREADABLE_DATASET, "data set could not be parsed") from None
    if len(ds) == 0:
        raise st.DimseFailure(st.UNREADABLE_DATASET, "data set has no elements")
    _check_structure(ds)
    return ds


def _check_structure(ds: Dataset) -> None:
    """Catch what pydicom reads leniently: short last value, tags out of order.

    PS3.5 7.1 requires ascending tags; random bytes break that at once. A stream that
    ends early leaves its last value shorter than its declared length.
    """
    tags = list(ds._dict.keys())
    if any(b <= a for a, b in pairwise(tags)):
        raise st.DimseFailure(st.UNREADABLE_DATASET, "data elements out of order")
    last = ds._dict[tags[-1]]
    length = getattr(last, "length", None)
    value = getattr(last, "value", None)
    if isinstance(value, bytes) and length not in (None, _UNDEFINED) and len(value) != length:
        raise st.DimseFailure(st.UNREADABLE_DATASET, "data set truncated")


def _uid(ds: Header, tag: int, what: str) -> str:
    value = _ascii(ds, tag)
    if value is None:
        raise st.DimseFailure(st.MISSING_TYPE1_ATTRIBUTE, f"{what} missing")
    try:
        return validate_uid(value, what)
    except InvalidInputError as exc:
        raise st.DimseFailure(st.INVALID_UID, str(exc)) from None


def _check_pixels(ds: Header, transfer_syntax: str) -> None:
    """PS3.3 C.7.6.3: the image must be describable and its pixel data complete."""
    us = ">H" if transfer_syntax == EXPLICIT_VR_BE else "<H"
    rows = _int(ds, 0x00280010, "Rows", us_fmt=us)
    cols = _int(ds, 0x00280011, "Columns", us_fmt=us)
    bits = _int(ds, 0x00280100, "BitsAllocated", us_fmt=us)
    for name, value in (("Rows", rows), ("Columns", cols), ("BitsAllocated", bits)):
        if value is None:
            raise st.DimseFailure(st.MISSING_TYPE1_ATTRIBUTE, f"{name} missing")
    assert rows is not None and cols is not None and bits is not None
    if rows == 0 or cols == 0:
        raise st.DimseFailure(st.INVALID_IMAGE_ATTRIBUTE, "Rows or Columns is zero")
    if bits not in (1, 8, 16, 32, 64):
        raise st.DimseFailure(st.INVALID_IMAGE_ATTRIBUTE, "BitsAllocated not 1/8/16/32/64")
    spp = _int(ds, 0x00280002, "SamplesPerPixel", us_fmt=us) or 1
    frames = _int(ds, 0x00280008, "NumberOfFrames") or 1
    if frames < 1 or spp not in (1, 3, 4):
        raise st.DimseFailure(st.INVALID_IMAGE_ATTRIBUTE, "NumberOfFrames or SamplesPerPixel")
    if _PIXEL_DATA not in ds:
        raise st.DimseFailure(st.MISSING_TYPE1_ATTRIBUTE, "PixelData missing")
    elem = _item(ds, _PIXEL_DATA)
    length = getattr(elem, "length", None)
    if length is None:
        length = len(elem.value or b"")
    encapsulated = transfer_syntax not in UNCOMPRESSED_SYNTAXES
    if encapsulated:
        if length != _UNDEFINED:
            raise st.DimseFailure(st.PIXEL_DATA_LENGTH_MISMATCH, "compressed but not encapsulated")
        return
    if length == _UNDEFINED:
        raise st.DimseFailure(st.PIXEL_DATA_LENGTH_MISMATCH, "encapsulated in native syntax")
    n_bits = rows * cols * spp * frames * bits
    expected = (n_bits + 7) // 8
    # PS3.5 7.1.1: values are padded to an even length.
    if length not in (expected, expected + (expected % 2)):
        raise st.DimseFailure(
            st.PIXEL_DATA_LENGTH_MISMATCH, f"PixelData {length} bytes, expected {expected}"
        )


def read_header(
    data: bytes, transfer_syntax: str, request_sop_class: str, request_sop_instance: str
) -> InstanceHeader:
    """Parse and check one C-STORE data set against its request (PS3.4 B.2.3)."""
    if request_sop_class not in STORAGE_SOP_CLASSES:
        raise st.DimseFailure(st.SOP_CLASS_NOT_SUPPORTED, "SOP class not supported")
    return _checked(parse(data, transfer_syntax), transfer_syntax, request_sop_class,
                    request_sop_instance)


def read_header_head(
    head: bytes, total: int, transfer_syntax: str, request_sop_class: str,
    request_sop_instance: str, read_all: Callable[[], bytes],
) -> InstanceHeader:
    """As :func:`read_header`, from the first bytes of a data set of ``total`` bytes.

    The common case, a native-syntax image whose pixel data is the last element and ends
    exactly at ``total``, is judged from ``head`` alone. Anything else (compressed or
    deflated syntaxes, elements after the pixel data, a header longer than ``head``,
    any parse trouble) reads the whole data set through ``read_all`` and takes the same
    path as :func:`read_header`, so both give the same answer for every input.
    """
    if request_sop_class not in STORAGE_SOP_CLASSES:
        raise st.DimseFailure(st.SOP_CLASS_NOT_SUPPORTED, "SOP class not supported")
    ds = _parse_head(head, total, transfer_syntax)
    if ds is None:
        return read_header(read_all(), transfer_syntax, request_sop_class, request_sop_instance)
    return _checked(ds, transfer_syntax, request_sop_class, request_sop_instance)


def _parse_head(head: bytes, total: int, transfer_syntax: str) -> Header | None:
    """The header elements plus a value-less PixelData element, or None to read it all.

    The plain layout is scanned directly (:mod:`header_scan`, a third of the time
    pydicom takes to build the Dataset); a header with quirks is parsed by pydicom,
    still without its pixels.
    """
    if transfer_syntax not in _NATIVE or not head:
        return None
    implicit = transfer_syntax == IMPLICIT_VR_LE
    scanned = scan(head, total, implicit, transfer_syntax != EXPLICIT_VR_BE)
    if scanned is not None:
        return scanned
    pixel: list[tuple[str | None, int]] = []

    def at_pixels(tag: int, vr: str | None, length: int) -> bool:
        # pydicom calls this for top-level elements only (not inside sequence items).
        if tag == _PIXEL_DATA:
            pixel.append((vr, length))
            return True
        return False

    fp = BytesIO(head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dataset(fp, implicit, transfer_syntax != EXPLICIT_VR_BE,
                              stop_when=at_pixels)
    except Exception:  # the full read decides what status corrupt input gets
        return None
    if not pixel or len(ds) == 0:
        return None
    vr, length = pixel[0]
    start = fp.tell() + (8 if implicit or vr not in EXPLICIT_VR_LENGTH_32 else 12)
    tags = list(ds._dict.keys())
    if (length == _UNDEFINED or start + length != total or tags[-1] >= _PIXEL_DATA
            or any(b <= a for a, b in pairwise(tags))):
        return None
    ds[_PIXEL_DATA] = RawDataElement(_PIXEL_DATA, vr or "OW", length, b"", start, implicit,
                                     transfer_syntax != EXPLICIT_VR_BE, True, False)
    return ds


def _checked(
    ds: Header, transfer_syntax: str, request_sop_class: str, request_sop_instance: str
) -> InstanceHeader:
    sop_class = _ascii(ds, 0x00080016)
    if sop_class is None:
        raise st.DimseFailure(st.MISSING_TYPE1_ATTRIBUTE, "SOPClassUID missing")
    if sop_class != request_sop_class:
        raise st.DimseFailure(st.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOPClassUID differs")
    sop_uid = _ascii(ds, 0x00080018)
    if sop_uid is None:
        raise st.DimseFailure(st.MISSING_TYPE1_ATTRIBUTE, "SOPInstanceUID missing")
    if sop_uid != request_sop_instance:
        raise st.DimseFailure(st.INVALID_OBJECT_INSTANCE, "SOPInstanceUID differs from request")
    try:
        validate_uid(sop_uid, "SOPInstanceUID")
    except InvalidInputError as exc:
        raise st.DimseFailure(st.INVALID_OBJECT_INSTANCE, str(exc)) from None
    study_uid = _uid(ds, 0x0020000D, "StudyInstanceUID")
    series_uid = _uid(ds, 0x0020000E, "SeriesInstanceUID")
    _check_pixels(ds, transfer_syntax)
    charsets = parse_charsets(_raw(ds, 0x00080005))
    study = StudyFields(
        patient_name=_text(ds, 0x00100010, charsets, pn=True, limit=256),
        patient_id=_text(ds, 0x00100020, charsets, limit=64),
        patient_birth_date=_ascii(ds, 0x00100030, limit=8),
        patient_sex=_ascii(ds, 0x00100040, limit=16),
        accession_number=_text(ds, 0x00080050, charsets, limit=64),
        study_date=_ascii(ds, 0x00080020, limit=8),
        study_time=_ascii(ds, 0x00080030, limit=16),
        study_description=_text(ds, 0x00081030, charsets, limit=256),
    )
    for_uid = _ascii(ds, 0x00200052)
    return InstanceHeader(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        modality=_ascii(ds, 0x00080060, limit=16),
        series_number=_int_or_none(ds, 0x00200011),
        series_description=_text(ds, 0x0008103E, charsets, limit=256),
        body_part=_ascii(ds, 0x00180015, limit=64),
        frame_of_reference_uid=for_uid if for_uid and len(for_uid) <= 64 else None,
        instance_number=_int_or_none(ds, 0x00200013),
        study=study,
    )


def _int_or_none(ds: Header, tag: int) -> int | None:
    """Integer-string fields the index only displays: garbage becomes None, not a failure."""
    try:
        return _int(ds, tag, "IS")
    except st.DimseFailure:
        return None
