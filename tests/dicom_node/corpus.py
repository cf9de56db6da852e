"""A corpus of deliberately broken C-STORE inputs, each with the status it must get.

Each case is written as a PS3.10 file whose File Meta names the SOP class, SOP instance
and transfer syntax the SCU puts in its request; the data set part is the broken bit,
and is sent byte for byte (our SCU sends a file's bytes when its syntax is accepted).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from tests.dicom_node import synth

CT = "1.2.840.10008.5.1.4.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
ELE = "1.2.840.10008.1.2.1"
DEFLATE = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    path: Path
    status: int | None  # None: refused at association negotiation (never sent)
    sop_instance_uid: str


def encode(ds: Dataset, *, implicit: bool = False) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(fp, ds)
    return fp.getvalue()


def write_part10(path: Path, sop_class: str, sop_uid: str, ts: str, data: bytes) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = synth.uid("corpus-impl")
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_file_meta_info(fp, meta, enforce_standard=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + fp.getvalue() + data)
    return path


def raw_elem(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    """Put bytes pydicom would refuse to encode (an IS that is not a number)."""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def good_slice(study_uid: str, series_uid: str, i: int = 0) -> Dataset:
    return synth.ct_slice(i, study_uid=study_uid, series_uid=series_uid, size=16)


def build(out: Path, existing_study: str, existing_series: str) -> list[Case]:
    """Write every case under ``out``; ``existing_*`` name a series already stored."""
    out.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, status: int | None, mutate: Callable[[Dataset], bytes | None] | None,
            *, sop_class: str = CT, ts: str = ELE, request_uid: str | None = None,
            study: str | None = None, series: str | None = None, index: int = 0) -> None:
        ds = good_slice(study or generate_uid(), series or generate_uid(), index)
        sop_uid = request_uid or str(ds.SOPInstanceUID)
        data = mutate(ds) if mutate else None
        if data is None:
            data = encode(ds)
        cases.append(Case(name, write_part10(out / f"{name}.dcm", sop_class, sop_uid, ts, data),
                          status, sop_uid))

    def drop(keyword: str) -> Callable[[Dataset], None]:
        return lambda ds: delattr(ds, keyword)

    def setv(keyword: str, value: object) -> Callable[[Dataset], None]:
        def mutate(ds: Dataset) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid on purpose
                setattr(ds, keyword, value)
        return mutate

    rng = np.random.default_rng(1)
    add("garbage", 0xC210, lambda ds: rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    add("truncated_header", 0xC210, lambda ds: encode(ds)[:301])
    add("truncated_pixels", 0xC210, lambda ds: encode(ds)[:-100])
    add("bad_element_length", 0xC210,
        lambda ds: encode(ds)[:8] + b"\x08\x00\x16\x00UI\xff\x7f" + encode(ds)[8:])
    add("deflate_garbage", 0xC210, lambda ds: b"\x78\x9c" + rng.bytes(500), ts=DEFLATE)
    add("missing_study_uid", 0xA901, drop("StudyInstanceUID"))
    add("missing_series_uid", 0xA901, drop("SeriesInstanceUID"))
    add("missing_sop_instance_uid", 0xA901, drop("SOPInstanceUID"))
    add("missing_sop_class_uid", 0xA901, drop("SOPClassUID"))
    add("study_uid_letters", 0xC220, setv("StudyInstanceUID", "1.2.abc.4"))
    add("series_uid_too_long", 0xC220, setv("SeriesInstanceUID", "1." + "2" * 70))
    add("study_uid_path_traversal", 0xC220, setv("StudyInstanceUID", "../../../etc"))
    add("series_uid_slash", 0xC220, setv("SeriesInstanceUID", "1.2/3.4"))
    add("sop_uid_differs_from_request", 0x0117, None, request_uid=generate_uid())
    add("sop_class_differs_from_request", 0xA900, setv("SOPClassUID", DX))
    add("study_inconsistent_with_series", 0xC230, None, study=generate_uid(),
        series=existing_series, index=7)
    add("pixel_data_short", 0xA902, lambda ds: setattr(ds, "PixelData", ds.PixelData[:-64]))
    add("pixel_data_long", 0xA902, lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0" * 64))
    add("missing_rows", 0xA901, drop("Rows"))
    add("missing_columns", 0xA901, drop("Columns"))
    add("missing_pixel_data", 0xA901, drop("PixelData"))
    add("bits_allocated_12", 0xA903, setv("BitsAllocated", 12))
    add("rows_zero", 0xA903, setv("Rows", 0))
    add("frames_not_a_number", 0xA903, lambda ds: raw_elem(ds, 0x00280008, "IS", b"abc "))
    add("rle_not_encapsulated", 0xA902, None, ts=RLE)
    add("deflate_of_missing_uid", 0xA901,
        lambda ds: (delattr(ds, "StudyInstanceUID"), _deflate(encode(ds)))[1], ts=DEFLATE)
    # Refused at negotiation: the SCU sees no accepted presentation context.
    add("unsupported_sop_class_mr", None, None, sop_class="1.2.840.10008.5.1.4.1.1.4")
    add("unsupported_transfer_syntax_mpeg2", None, None, ts="1.2.840.10008.1.2.4.100")
    return cases


def _deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()
