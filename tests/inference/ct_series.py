"""Small synthetic CT series written with pydicom, for volume-assembly tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROWS = COLS = 16
SPACING = 0.8


def slice_pixels(k: int) -> np.ndarray:
    """Stored values whose HU (value - 1024) encode the slice index: 100 * k."""
    return np.full((ROWS, COLS), 1024 + 100 * k, dtype=np.uint16)


def _base(series_uid: str, sop_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.SliceThickness = 1.0
    ds.ConvolutionKernel = "B70f"
    return ds


def write_series(
    directory: Path,
    z: Sequence[float],
    *,
    tilt_y_per_mm: float = 0.0,
    orientations: Sequence[Sequence[float]] | None = None,
    order: Sequence[int] | None = None,
) -> list[Path]:
    """One file per slice at the given z positions (LPS mm), optionally tilted/mixed."""
    directory.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    paths = []
    for k in order if order is not None else range(len(z)):
        ds = _base(series_uid, generate_uid())
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-6.0, -6.0 + tilt_y_per_mm * z[k], float(z[k])]
        ori = orientations[k] if orientations is not None else [1, 0, 0, 0, 1, 0]
        ds.ImageOrientationPatient = [float(v) for v in ori]
        ds.PixelSpacing = [SPACING, SPACING]
        ds.PixelData = slice_pixels(k).tobytes()
        path = directory / f"{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_multiframe(directory: Path, z: Sequence[float]) -> Path:
    """An Enhanced-CT-like multi-frame instance with per-frame plane positions."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = _base(generate_uid(), generate_uid())
    del ds.RescaleSlope, ds.RescaleIntercept, ds.SliceThickness
    ds.NumberOfFrames = len(z)
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = [1.0, 0, 0, 0, 1.0, 0]
    meas = Dataset()
    meas.PixelSpacing = [SPACING, SPACING]
    meas.SliceThickness = 1.0
    trans = Dataset()
    trans.RescaleSlope, trans.RescaleIntercept = 1, -1024
    shared.PlaneOrientationSequence = DicomSequence([ori])
    shared.PixelMeasuresSequence = DicomSequence([meas])
    shared.PixelValueTransformationSequence = DicomSequence([trans])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in reversed(range(len(z))):  # stored out of order on purpose
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [-6.0, -6.0, float(z[k])]
        item.PlanePositionSequence = DicomSequence([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.stack([slice_pixels(k) for k in reversed(range(len(z)))]).tobytes()
    path = directory / "mf.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
