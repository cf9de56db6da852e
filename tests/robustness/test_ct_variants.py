"""Chest CT as other scanners send it: node -> stability monitor -> worker, per variant.

Every variant ends in a documented outcome: ``ready`` with the 18 mm nodule (urgent), or
``not_analyzable`` with a specific reason. Never ``failed``, never a crash. Geometry rules
are those of :mod:`inference.volume` and :mod:`inference.selection`.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from inference.volume import load_volume
from tests.conftest import REALDATA, require
from tests.dicom_node.conftest import dcmtk
from tests.robustness.harness import Outcome, Site, clone, hu
from training.phantoms.ct import CTPhantom

pytestmark = pytest.mark.integration

ENHANCED_CT = UID("1.2.840.10008.5.1.4.1.1.2.1")
REAL_CT = REALDATA / "lung-ct-A0002"


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "var")
    yield s
    s.close()


def assert_ready(out: Outcome, nodules: int | None = 1) -> None:
    assert out.status == "ready", (out.reason, out.analysis_statuses, out.notes)
    assert "failed" not in out.analysis_statuses
    assert out.urgency == "urgent", out.notes  # the 18 mm solid nodule is Lung-RADS 4B
    if nodules is not None:  # the phantom holds one nodule, and no false positive
        assert len(out.finding_centres) == nodules, out.finding_centres


def assert_refused(out: Outcome, why: str) -> None:
    assert out.status == "not_analyzable", (out.status, out.reason, out.analysis_statuses)
    assert out.reason is not None and why in out.reason, out.reason


def new_series(datasets: list[Dataset], **attrs: object) -> list[Dataset]:
    """Same study, a fresh series: new Series and SOP Instance UIDs."""
    uid = generate_uid()
    for ds in datasets:
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for k, v in attrs.items():
            setattr(ds, k, v)
    return datasets


# -- 1. compressed transfer syntaxes --------------------------------------------------------

def _dcmtk_encode(ds: Dataset, tool: str, flags: list[str], tmp: Path) -> Dataset:
    src, dst = tmp / f"{ds.SOPInstanceUID}.in.dcm", tmp / f"{ds.SOPInstanceUID}.out.dcm"
    ds.save_as(src, enforce_file_format=True)
    subprocess.run([dcmtk(tool), *flags, str(src), str(dst)], check=True, capture_output=True)
    return pydicom.dcmread(dst)


def _encode(ds: Dataset, syntax: str, tmp: Path) -> Dataset:
    if syntax == JPEGLosslessSV1:
        return _dcmtk_encode(ds, "dcmcjpeg", ["+e1"], tmp)  # lossless, first-order predictor
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        return ds
    ds.compress(syntax)
    return ds


SYNTAXES = [JPEG2000Lossless, JPEGLSLossless, JPEGLosslessSV1, RLELossless,
            DeflatedExplicitVRLittleEndian]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_compressed_slices_decode_losslessly(
    series: list[Dataset], syntax: str, site: Site, tmp_path: Path
) -> None:
    """Each syntax through the node: the stored file decodes to the sent HU."""
    sent = [_encode(ds, syntax, tmp_path) for ds in clone(series[30:42])]
    assert site.send(sent) == [0] * len(sent)
    stored = sorted(site.ctx.settings.data_dir.rglob("*.dcm"))
    assert len(stored) == len(sent)
    assert {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in stored} == {syntax}
    loaded = load_volume(stored)
    want = np.stack([hu(ds) for ds in series[30:42]])
    np.testing.assert_array_equal(loaded.volume.array, want)


def test_compressed_series_analysed(series: list[Dataset], site: Site, tmp_path: Path) -> None:
    """One study whose slices rotate through all five syntaxes: analysed as usual."""
    sent = [_encode(ds, SYNTAXES[k % len(SYNTAXES)], tmp_path)
            for k, ds in enumerate(clone(series))]
    assert_ready(site.run(sent))


# -- 2. unsigned storage, rescale variants -------------------------------------------------

def _restore(ds: Dataset, intercept: float, slope: float, bits: int) -> Dataset:
    values = hu(ds)
    stored = np.round((values - intercept) / slope)
    stored = np.clip(stored, 0, 2**bits - 1).astype(np.uint16)
    ds.PixelRepresentation = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
    ds.PixelData = stored.tobytes()
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
        if kw in ds:
            del ds[kw]
    return ds


def test_unsigned_rescale_variants(series: list[Dataset], site: Site) -> None:
    """Slices alternate: unsigned -8192 / -1024 with slope 0.5 / 12-bit -1024."""
    variants = [(-8192.0, 1.0, 16), (-1024.0, 0.5, 16), (-1024.0, 1.0, 12)]
    sent = [_restore(ds, *variants[k % 3]) for k, ds in enumerate(clone(series))]
    assert_ready(out := site.run(sent))
    stored = sorted(site.ctx.settings.data_dir.rglob("*.dcm"))
    loaded = load_volume(stored)
    want = np.clip(np.stack([hu(ds) for ds in series]), -1024, 3071)
    assert np.abs(loaded.volume.array.astype(np.int32) - want).max() <= 1, out.notes


# -- 3. order and numbering -----------------------------------------------------------------

def test_shuffled_unnumbered_series(series: list[Dataset], site: Site) -> None:
    """Also padded outside a circular field of view (PixelPaddingValue, PS3.3 C.7.5.1.1.2)
    as GE and Siemens write it: HU -3024 there must not break the lung mask."""
    sent = clone(series)
    rows, cols = int(sent[0].Rows), int(sent[0].Columns)
    yy, xx = np.mgrid[:rows, :cols]
    outside = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 > (0.47 * rows) ** 2
    for k, ds in enumerate(sent):
        pixels = ds.pixel_array.copy()
        pixels[outside] = -2000
        ds.PixelData = pixels.astype(np.int16).tobytes()
        ds.PixelPaddingValue = -2000
        if k % 2:
            del ds.InstanceNumber
        else:
            ds.InstanceNumber = 1  # duplicated on every other slice
        if "SliceLocation" in ds:
            del ds.SliceLocation
    rng = np.random.default_rng(3)
    assert_ready(site.run([sent[i] for i in rng.permutation(len(sent))]))


# -- 4. off-axis, feet first, a coronal reformat in the same study ------------------------

def _coronal_reformat(series: list[Dataset]) -> list[Dataset]:
    vol = np.stack([hu(ds) for ds in series])  # (z, y, x), z increasing
    first = series[0]
    ps = [float(v) for v in first.PixelSpacing]
    step = float(series[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    out: list[Dataset] = []
    for j in range(0, vol.shape[1], 8):
        ds = copy.deepcopy(first)
        img = vol[::-1, j, :]  # rows run head to feet
        ds.Rows, ds.Columns = img.shape
        ds.PixelData = (img + 1024).astype(np.int16).tobytes()
        ds.RescaleIntercept = -1024
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
        x0, y0, _ = (float(v) for v in first.ImagePositionPatient)
        ds.ImagePositionPatient = [x0, y0 + j * ps[0],
                                   float(series[-1].ImagePositionPatient[2])]
        ds.PixelSpacing = [abs(step), ps[1]]
        ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
        ds.SeriesDescription = "COR 3mm"
        ds.InstanceNumber = len(out) + 1
        out.append(ds)
    return new_series(out, SeriesNumber=5)


def test_off_axis_feet_first_with_coronal(series: list[Dataset], site: Site) -> None:
    sent = clone(series)
    # 1.52 deg in-plane rotation, cosines written to 5 decimals with per-slice noise that
    # straddles a rounding boundary (sin = 0.02650 +- 2e-5), as some consoles write them.
    rng = np.random.default_rng(4)
    n = len(sent)
    for k, ds in enumerate(sent):
        ds.PatientPosition = "FFS"
        ds.InstanceNumber = n - k  # feet first: positions fall as numbers rise
        sin = 0.02650 + float(rng.uniform(-2e-5, 2e-5))
        cos = round(float(np.sqrt(1 - sin * sin)), 5)
        ds.ImageOrientationPatient = [cos, round(sin, 5), 0.0, -round(sin, 5), cos, 0.0]
    coronal = _coronal_reformat(series)
    out = site.run(sorted(sent, key=lambda d: int(d.InstanceNumber)) + coronal)
    assert_ready(out)
    coronal_uid = str(coronal[0].SeriesInstanceUID)
    assert any(coronal_uid in note and "passed over" in note for note in out.notes), out.notes


def _mirror_to(series: list[Dataset], position: str, flip_rows: bool) -> list[Dataset]:
    """The same patient as a console writes feet-first (row direction -x: columns mirrored)
    or prone (also column direction -y): same anatomy in LPS, different pixel layout."""
    sent = clone(series)
    for ds in sent:
        pixels = ds.pixel_array[:, ::-1]
        ps_r, ps_c = (float(v) for v in ds.PixelSpacing)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        x += (pixels.shape[1] - 1) * ps_c
        col = [0.0, 1.0, 0.0]
        if flip_rows:
            pixels = pixels[::-1, :]
            y += (pixels.shape[0] - 1) * ps_r
            col = [0.0, -1.0, 0.0]
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.ImagePositionPatient = [x, y, z]
        ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, *col]
        ds.PatientPosition = position
    return sent


@pytest.mark.parametrize(("position", "flip_rows"), [("FFS", False), ("HFP", True)])
def test_feet_first_mirrored_orientation(
    series: list[Dataset], site: Site, position: str, flip_rows: bool
) -> None:
    """Analysed in the trained (head-first supine) layout: no false positive from the
    mirrored pixels; more positions in test_ct_orientation.py."""
    out = site.run(_mirror_to(series, position, flip_rows=flip_rows))
    assert_ready(out)
    assert any("standard supine head-first layout" in note for note in out.notes), out.notes


# -- 5. gantry tilt -------------------------------------------------------------------------

def _tilt(series: list[Dataset], degrees: float) -> list[Dataset]:
    """Tilted image planes (rotation about the patient x axis), table moving along z."""
    t = np.radians(degrees)
    sent = clone(series)
    for ds in sent:
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t))]
        ds.GantryDetectorTilt = degrees
    return sent


def test_gantry_tilt_corrected(series: list[Dataset], site: Site) -> None:
    out = site.run(_tilt(series, 12.0))
    assert_ready(out)
    assert any("gantry tilt" in note for note in out.notes), out.notes


def test_gantry_tilt_refused_beyond_limit(series: list[Dataset], site: Site) -> None:
    """Selection takes planes within ~25 deg of axial; steeper ones are refused by angle."""
    assert_refused(site.run(_tilt(series, 35.0)), "not axial: plane tilted 35 deg (gantry tilt)")


# -- 6. missing slices, localiser inside the series -------------------------------------

def _localizer(like: Dataset) -> Dataset:
    ds = copy.deepcopy(like)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    ds.Rows, ds.Columns = 96, 128
    ds.PixelData = np.zeros((96, 128), dtype=np.int16).tobytes()
    ds.InstanceNumber = 1
    return ds


def test_missing_slice_and_localiser(
    phantom: CTPhantom, series: list[Dataset], site: Site
) -> None:
    sent = clone(series)
    del sent[40]
    out = site.run([_localizer(sent[0]), *sent])
    assert_ready(out, nodules=None)
    assert any("1 missing slice" in note for note in out.notes), out.notes
    assert any("dropped" in note for note in out.notes), out.notes
    truth = np.asarray(phantom.nodules[0].center_lps)
    got = np.asarray(out.finding_centres)
    assert np.linalg.norm(got - truth, axis=1).min() < 3.0, (got, truth)


def test_missing_slice_no_false_positive(series: list[Dataset], site: Site) -> None:
    """The slice interpolated into the gap cross-fades a vessel into a stub that a
    network may call a nodule; such a detection is set aside
    (inference.ct_nodule.analysis.gap_supported, unit-tested in test_ct_gaps.py). Whether
    the shipped model produces that stub at all depends on the model version, so this
    test asserts the outcome: the nodule is found, nothing else is, and the gap is noted."""
    sent = clone(series)
    del sent[40]
    out = site.run(sent)
    assert_ready(out)
    assert any("1 missing slice(s)" in n for n in out.notes), out.notes


def test_large_gap_refused(series: list[Dataset], site: Site) -> None:
    sent = clone(series)
    del sent[40:45]
    assert_refused(site.run(sent), "missing slices")


# -- 7. thin lung kernel beside thick soft kernel ------------------------------------------

def test_thin_lung_series_chosen(series: list[Dataset], site: Site) -> None:
    thin = new_series(clone(series), ConvolutionKernel="LUNG", SeriesNumber=3,
                      SeriesDescription="Chest 2.5 lung")
    thick = []
    for k in range(0, len(series) - 1, 2):
        ds = copy.deepcopy(series[k])
        avg = (hu(series[k]) + hu(series[k + 1])) // 2
        ds.PixelData = (avg - int(ds.RescaleIntercept)).astype(np.int16).tobytes()
        ds.SliceThickness = 5.0
        ds.InstanceNumber = k // 2 + 1
        thick.append(ds)
    thick = new_series(thick, ConvolutionKernel="SOFT", SeriesNumber=2,
                       SeriesDescription="Chest 5.0 soft")
    out = site.run(thick + thin)
    assert_ready(out)
    assert out.notes[0].startswith(f"analysed series {thin[0].SeriesInstanceUID}"), out.notes
    assert f"{thick[0].SeriesInstanceUID}: thicker than" in out.notes[0], out.notes


# -- 8. header damage --------------------------------------------------------------------

def _with_raw_name(ds: Dataset, raw: bytes, tmp: Path) -> Dataset:
    """The dataset as a scanner would send it: ``raw`` name bytes, no charset declared
    (pydicom itself would re-encode the name, so the bytes are patched into the file)."""
    placeholder = b"Q" * len(raw)
    ds.PatientName = placeholder.decode()
    path = tmp / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data.count(placeholder) == 1
    path.write_bytes(data.replace(placeholder, raw))
    return pydicom.dcmread(path)


def test_missing_pixel_spacing_and_charset(
    series: list[Dataset], site: Site, tmp_path: Path
) -> None:
    sent = clone(series)
    raw = "张^伟".encode("gb18030") + b" "
    for k, ds in enumerate(sent):
        del ds.PixelSpacing
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
        sent[k] = _with_raw_name(ds, raw, tmp_path)
    out = site.run(sent)
    assert_refused(out, "Pixel Spacing")
    assert out.patient_name and out.patient_name.strip()  # best-effort, never empty
    stored = next(site.ctx.settings.data_dir.rglob("*.dcm")).read_bytes()
    assert raw in stored  # the node keeps what the scanner sent, byte for byte


def test_very_long_patient_name(series: list[Dataset], site: Site) -> None:
    sent = clone(series)
    name = "Wang^" + "Xiaoming" * 60 + "^^^" + "Dr" * 40
    for ds in sent:
        ds.PatientName = name
    out = site.run(sent)
    assert_ready(out)
    # the index column holds 256 characters (PostgreSQL refuses longer); the file keeps all
    assert out.patient_name and out.patient_name.startswith("Wang")
    assert len(out.patient_name) <= 256, len(out.patient_name)


# -- 9. Enhanced CT multi-frame ----------------------------------------------------------

def _enhanced(series: list[Dataset]) -> Dataset:
    first = series[0]
    ds = Dataset()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "Modality",
               "SpecificCharacterSet", "Manufacturer", "FrameOfReferenceUID",
               "BodyPartExamined", "ConvolutionKernel"):
        if kw in first:
            setattr(ds, kw, first[kw].value)
    ds.SOPClassUID = ENHANCED_CT
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 7, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows, ds.Columns = first.Rows, first.Columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.NumberOfFrames = len(series)
    shared = Dataset()
    meas = Dataset()
    meas.PixelSpacing = list(first.PixelSpacing)
    meas.SliceThickness = first.SliceThickness
    ori = Dataset()
    ori.ImageOrientationPatient = list(first.ImageOrientationPatient)
    trans = Dataset()
    trans.RescaleIntercept, trans.RescaleSlope, trans.RescaleType = -1024, 1, "HU"
    shared.PixelMeasuresSequence = DicomSequence([meas])
    shared.PlaneOrientationSequence = DicomSequence([ori])
    shared.PixelValueTransformationSequence = DicomSequence([trans])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k, sl in enumerate(series):
        item, pos, content = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = list(sl.ImagePositionPatient)
        content.InStackPositionNumber = k + 1
        item.PlanePositionSequence = DicomSequence([pos])
        item.FrameContentSequence = DicomSequence([content])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.stack([hu(sl) + 1024 for sl in series]).astype(np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_enhanced_ct_multiframe(series: list[Dataset], site: Site) -> None:
    out = site.run([_enhanced(series)])
    assert_ready(out)
    assert f"({len(series)} images" in out.notes[0], out.notes


# -- 10. the real CT ---------------------------------------------------------------------

def test_real_lung_ct_both_kernels(site: Site) -> None:
    require(REAL_CT.is_dir(), f"real CT not found at {REAL_CT}")
    files = sorted(p for p in REAL_CT.rglob("*") if p.is_file() and p.suffix in ("", ".dcm"))
    datasets = [pydicom.dcmread(p) for p in files]
    out = site.run(datasets)
    assert_ready(out, nodules=None)
    assert "kernel B70f" in out.notes[0] and "not a lung kernel" in out.notes[0], out.notes
    assert any(note.startswith("limited analysis") for note in out.notes), out.notes
