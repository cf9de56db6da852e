"""Small synthetic DICOM objects for the node tests (the full phantom factory is issue 6)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from countyread.uids import derive_uid

#: Names as scanners in Chinese townships send them, one per character set.
NAMES: dict[str, tuple[str | list[str], bytes, str]] = {
    # term: (SpecificCharacterSet value, encoded PN bytes, expected decoded text)
    "GB18030": ("GB18030", "Zhang^San=张^三".encode("gb18030"), "Zhang^San=张^三"),
    "GBK": ("GBK", "Li^Si=李^四".encode("gbk"), "Li^Si=李^四"),
    "ISO_IR 192": ("ISO_IR 192", "Wang^Wu=王^五".encode(), "Wang^Wu=王^五"),
    # PS3.5 K.2 example shape: G1 designation before each ideographic component.
    "ISO 2022 IR 58": (
        ["", "ISO 2022 IR 58"],
        b"Zhao^Liu=\x1b$)A" + "赵".encode("gb2312") + b"^\x1b$)A" + "六".encode("gb2312"),
        "Zhao^Liu=赵^六",
    ),
}


def uid(*parts: object) -> str:
    return derive_uid("test", *parts)


def base_dataset(
    sop_class: str, *, study_uid: str, series_uid: str, sop_uid: str, modality: str,
    charset: str = "GB18030",
) -> Dataset:
    cs_value, pn_bytes, _ = NAMES[charset]
    ds = Dataset()
    ds.SpecificCharacterSet = cs_value
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientName = pn_bytes  # raw bytes: pydicom's IR 58 encoder omits escapes
    ds.PatientID = "P0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate = "20261123"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A1"
    ds.StudyDescription = "CHEST"
    ds.SeriesNumber = 2
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = uid("impl")
    return ds


def set_pixels(ds: Dataset, array: np.ndarray) -> None:
    ds.Rows, ds.Columns = int(array.shape[0]), int(array.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if array.dtype == np.int16 else 0
    ds.PixelData = array.tobytes()


def ct_slice(
    index: int, *, study_uid: str, series_uid: str, size: int = 128, charset: str = "GB18030",
    seed: int = 0,
) -> Dataset:
    ds = base_dataset(CTImageStorage, study_uid=study_uid, series_uid=series_uid,
                      sop_uid=uid(series_uid, index), modality="CT", charset=charset)
    ds.SeriesDescription = "Chest 1.0 B40f"
    ds.BodyPartExamined = "CHEST"
    ds.FrameOfReferenceUID = uid(study_uid, "for")
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-100.0, -100.0, float(-index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(seed + index)
    set_pixels(ds, rng.integers(0, 2000, (size, size), dtype=np.int16))
    return ds


def write_ct_series(
    out_dir: Path, n: int = 40, *, size: int = 128, study_uid: str | None = None,
    series_uid: str | None = None, charset: str = "GB18030",
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    paths = []
    for i in range(n):
        ds = ct_slice(i, study_uid=study_uid, series_uid=series_uid, size=size, charset=charset)
        p = out_dir / f"ct{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def write_dr(out_dir: Path, *, size: int = 256, charset: str = "GBK") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = base_dataset(DigitalXRayImageStorageForPresentation, study_uid=study_uid,
                      series_uid=series_uid, sop_uid=generate_uid(), modality="DX",
                      charset=charset)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    rng = np.random.default_rng(7)
    set_pixels(ds, rng.integers(0, 4000, (size, size), dtype=np.uint16))
    p = out_dir / "dr.dcm"
    ds.save_as(p, enforce_file_format=True)
    return p


def compress_with_pydicom(src: Path, dst: Path, transfer_syntax: str) -> Path:
    """Encode with pydicom's encoders (RLE, JPEG-LS, JPEG 2000 via pylibjpeg/pyjpegls)."""
    from pydicom import dcmread

    ds = dcmread(src)
    ds.SOPInstanceUID = uid(ds.SOPInstanceUID, transfer_syntax)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    # JPEG 2000 (lossy) needs a target; JPEG-LS near-lossless defaults to error 2.
    kwargs = {"j2k_cr": [20]} if transfer_syntax == "1.2.840.10008.1.2.4.91" else {}
    ds.compress(transfer_syntax, **kwargs)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def compress_with_dcmtk(tool: str, args: Sequence[str], src: Path, dst: Path) -> Path:
    """JPEG baseline / lossless have no pydicom encoder; dcmtk's dcmcjpeg makes them."""
    from pydicom import dcmread

    tmp = dst.with_suffix(".src.dcm")
    ds = dcmread(src)
    ds.SOPInstanceUID = uid(ds.SOPInstanceUID, *args)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "+eb" in args:  # baseline is 8 bit only (PS3.5 A.4.1)
        arr = (ds.pixel_array.astype(np.int32) // 16).clip(0, 255).astype(np.uint8)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = arr.tobytes()
    ds.save_as(tmp, enforce_file_format=True)
    subprocess.run([tool, *args, str(tmp), str(dst)], check=True, capture_output=True)
    tmp.unlink()
    return dst
