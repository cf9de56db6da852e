"""The fast path's header read gives the same answer as the full pydicom read, input by input."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.sequence import Sequence

from dicom_node import status as st
from dicom_node.fastpath.spool import HEAD_KEEP
from dicom_node.header import InstanceHeader, read_header, read_header_head
from dicom_node.header_scan import scan
from tests.dicom_node import corpus, synth

pytestmark = pytest.mark.filterwarnings("ignore:The value length")

ILE, EBE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"


def outcome(fn: Callable[[], InstanceHeader]) -> InstanceHeader | tuple[int, str]:
    try:
        return fn()
    except st.DimseFailure as exc:
        return exc.status, exc.comment


def both(data: bytes, ts: str, sop_class: str, sop_uid: str,
         head_keep: int = HEAD_KEEP) -> tuple[object, object, bool]:
    """(full read, head read, whether the head read needed the whole data set)."""
    used_all: list[bool] = []

    def read_all() -> bytes:
        used_all.append(True)
        return data

    full = outcome(lambda: read_header(data, ts, sop_class, sop_uid))
    head = outcome(lambda: read_header_head(data[:head_keep], len(data), ts, sop_class,
                                            sop_uid, read_all))
    return full, head, bool(used_all)


def test_corpus_cases_same_answer(tmp_path: Path) -> None:
    cases = corpus.build(tmp_path / "c", synth.uid("hh-study"), synth.uid("hh-series"))
    compared = 0
    for case in cases:
        raw = case.path.read_bytes()
        meta = read_file_meta_info(case.path)
        (group_length,) = struct.unpack_from("<I", raw, 140)
        data = raw[144 + group_length:]
        full, head, _ = both(data, str(meta.TransferSyntaxUID),
                             str(meta.MediaStorageSOPClassUID), case.sop_instance_uid)
        assert full == head, case.name
        compared += 1
    assert compared == len(cases) >= 20


def _ct(**extra: object) -> Dataset:
    ds = synth.ct_slice(3, study_uid=synth.uid("hh", "st"), series_uid=synth.uid("hh", "se"),
                        size=32)
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def _icon() -> Sequence:
    icon = Dataset()
    icon.Rows, icon.Columns, icon.BitsAllocated = 2, 2, 8
    icon.PixelData = b"\x01\x02\x03\x04"
    return Sequence([icon])


def _variants() -> dict[str, tuple[bytes, str, bool]]:
    """name -> (data set bytes, transfer syntax, whether the plain scan must take it)."""
    ds = _ct()
    out = {
        "explicit-le": (corpus.encode(ds), corpus.ELE, True),
        "implicit-le": (corpus.encode(ds, implicit=True), ILE, True),
    }
    seq = _ct(IconImageSequence=_icon())
    out["icon-sequence-defined"] = (corpus.encode(seq), corpus.ELE, True)
    seq.IconImageSequence.is_undefined_length = True
    seq.IconImageSequence[0].is_undefined_length_sequence_item = True
    out["icon-sequence-undefined"] = (corpus.encode(seq), corpus.ELE, True)
    out["icon-sequence-undefined-implicit"] = (corpus.encode(seq, implicit=True), ILE, True)
    trailing = corpus.encode(ds) + struct.pack("<HH", 0xFFFC, 0xFFFC) + b"OB\x00\x00" + \
        struct.pack("<I", 4) + b"\x00" * 4
    out["padding-after-pixels"] = (trailing, corpus.ELE, False)
    out["long-header"] = (corpus.encode(_ct(ImageComments="x" * 70000)), corpus.ELE, False)
    out["zero-rows"] = (corpus.encode(_ct(Rows=0)), corpus.ELE, True)
    truncated = corpus.encode(ds)[:-10]
    out["truncated-pixels"] = (truncated, corpus.ELE, False)
    return out


@pytest.mark.parametrize("name", list(_variants()))
def test_variants_same_answer(name: str) -> None:
    data, ts, plain = _variants()[name]
    ds = _ct()
    full, head, used_all = both(data, ts, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    assert full == head
    # The plain layout is judged from the head alone; the others read everything.
    assert used_all is not plain
    assert (scan(data[:HEAD_KEEP], len(data), ts == ILE, True) is not None) is plain


def test_big_endian_same_answer(tmp_path: Path) -> None:
    from tests.dicom_node.conftest import run_dcmtk

    src = tmp_path / "le.dcm"
    _ct().save_as(src, enforce_file_format=True)
    be = tmp_path / "be.dcm"
    assert run_dcmtk("dcmconv", "+tb", str(src), str(be)).returncode == 0
    raw = be.read_bytes()
    (group_length,) = struct.unpack_from("<I", raw, 140)
    data = raw[144 + group_length:]
    ds = dcmread(be, stop_before_pixels=True)
    full, head, used_all = both(data, EBE, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    assert isinstance(full, InstanceHeader) and full == head
    assert not used_all
