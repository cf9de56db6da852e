"""Phantoms as DICOM: CT Image Storage for CT/CTA, DX (For Presentation) or CR for radiographs.

Modules follow PS3.3 A.3 (CT Image IOD), A.26 (DX Image IOD) and A.2 (CR Image IOD);
every UID is derived from the phantom's seed so the same seed writes the same files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from countyread.errors import InvalidInputError
from countyread.uids import derive_uid
from training.phantoms.truth_io import write_truth
from training.phantoms.vendors import CHARSETS, STYLES, Patient, VendorStyle, synthetic_patient

logger = logging.getLogger(__name__)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
IMPLEMENTATION_UID = derive_uid("countyread", "phantom-writer", 1)


@dataclass(frozen=True, slots=True)
class DicomOptions:
    """Writer choices; ``None`` draws vendor (and DR object) from the phantom's seed."""

    vendor: str | None = None
    charset: str = "GB18030"
    dr_sop: Literal["DX", "CR"] | None = None
    institution: str = "县人民医院"

    def __post_init__(self) -> None:
        if self.charset not in CHARSETS:
            raise InvalidInputError(f"charset must be one of {CHARSETS}, got {self.charset!r}")
        if self.vendor is not None and self.vendor not in STYLES:
            raise InvalidInputError(f"vendor must be one of {sorted(STYLES)}, got {self.vendor!r}")


@dataclass(frozen=True, slots=True)
class _Context:
    kind: str
    seed: int
    style: VendorStyle
    patient: Patient
    charset: str
    study_uid: str
    study_day: date
    study_time: str
    institution: str


def _context(phantom: Any, options: DicomOptions) -> _Context:
    kind = type(phantom).__name__
    rng = np.random.default_rng(np.random.SeedSequence([phantom.seed, 0xD1C0]))
    vendor = options.vendor or sorted(STYLES)[int(rng.integers(len(STYLES)))]
    day = date(2026, 1, 1) + timedelta(days=int(rng.integers(0, 300)))
    secs = int(rng.integers(8 * 3600, 18 * 3600))
    return _Context(
        kind=kind,
        seed=phantom.seed,
        style=STYLES[vendor],
        patient=synthetic_patient(phantom.seed, options.charset, day),
        charset=options.charset,
        study_uid=derive_uid("countyread-phantom", kind, phantom.seed, "study"),
        study_day=day,
        study_time=f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}",
        institution=options.institution,
    )


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    meta.ImplementationVersionName = "COUNTYREAD_1"
    return meta


def _common(ctx: _Context, sop_class: str, sop_uid: str, modality: str) -> Dataset:
    """Patient, General Study, General Series, General Equipment, SOP Common (PS3.3 C.7, C.12)."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SpecificCharacterSet = ctx.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    d = ctx.study_day.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = d
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ctx.study_time
    ds.AccessionNumber = f"A{ctx.seed % 10**9:09d}"
    ds.Modality = modality
    ds.Manufacturer = ctx.style.manufacturer
    ds.InstitutionName = ctx.institution
    ds.ReferringPhysicianName = ""
    ds.StationName = f"{ctx.style.key}_{modality}01"
    ds.PatientName = ctx.patient.name
    ds.PatientID = ctx.patient.patient_id
    ds.PatientBirthDate = ctx.patient.birth_date
    ds.PatientSex = ctx.patient.sex
    ds.PatientAge = ctx.patient.age
    ds.SoftwareVersions = ctx.style.software
    ds.DeviceSerialNumber = f"{ctx.seed % 99991:05d}"
    ds.StudyInstanceUID = ctx.study_uid
    ds.StudyID = f"{ctx.seed % 100000}"
    ds.PatientIdentityRemoved = "NO"
    block = ds.private_block(ctx.style.private_group, ctx.style.private_creator, create=True)
    block.add_new(0xF0, "LO", f"COUNTYREAD PHANTOM {ctx.kind} seed={ctx.seed}")
    return ds


def _ct_datasets(phantom: Any, ctx: _Context) -> list[Dataset]:
    vol = phantom.volume
    acq = phantom.acquisition
    style = ctx.style
    body_part = getattr(phantom, "body_part", "CHEST")
    nz, ny, nx = vol.shape
    dz, dy, dx = vol.spacing
    kernel = getattr(acq, "kernel", "standard")
    stored = vol.array.astype(np.int32) - int(style.intercept)
    if style.signed:
        pixels = np.clip(stored, -32768, 32767).astype(np.int16)
    else:
        pixels = np.clip(stored, 0, 65535).astype(np.uint16)
    if getattr(phantom, "modality", "CT") == "CTA" or body_part == "HEADNECK":
        centers, widths, expl = [300, 40], [700, 400], ["CTA", "BRAIN"]
    else:
        centers, widths, expl = [-600, 40], [1500, 400], ["LUNG", "MEDIASTINUM"]
    series_uid = vol.series_uid or derive_uid("countyread-phantom", ctx.kind, ctx.seed, "series")
    sop_uids = vol.sop_instance_uids or tuple(derive_uid(series_uid, k) for k in range(nz))
    description = style.ct_description(body_part, round(float(dz), 3), kernel)
    study_desc = {"CHEST": "胸部CT平扫", "HEADNECK": "头颈部CTA"}.get(body_part, body_part)
    out = []
    for k in range(nz):
        ds = _common(ctx, CTImageStorage, sop_uids[k], "CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", *style.image_type_extra]
        ds.StudyDescription = study_desc
        ds.SeriesDescription = description
        ds.ManufacturerModelName = style.ct_model
        ds.BodyPartExamined = body_part
        ds.SliceThickness = f"{dz:.4g}"
        ds.KVP = str(getattr(acq, "kvp", 120))
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = f"{dx * nx:.2f}"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        mas = float(getattr(acq, "mas", 150.0))
        ds.XRayTubeCurrent = str(round(mas * 2))
        ds.Exposure = str(round(mas))
        ds.ConvolutionKernel = style.kernels.get(kernel, kernel)
        ds.PatientPosition = "HFS"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 3 if body_part == "CHEST" else 5
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = nz - k  # numbered head to feet, as scanners do
        pos = vol.index_to_lps([k, 0, 0])
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = vol.frame_of_reference_uid or derive_uid(series_uid, "for")
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{pos[2]:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [f"{dy:.6g}", f"{dx:.6g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if style.signed else 0
        ds.WindowCenter = centers
        ds.WindowWidth = widths
        ds.WindowCenterWidthExplanation = expl
        ds.RescaleIntercept = f"{style.intercept:g}"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        out.append(ds)
    return out


def _dr_dataset(phantom: Any, ctx: _Context, sop: str) -> Dataset:
    proj = phantom.projection
    image = phantom.image
    series_uid = derive_uid("countyread-phantom", ctx.kind, ctx.seed, "series")
    sop_uid = derive_uid(series_uid, 0)
    sop_class = DX_FOR_PRESENTATION if sop == "DX" else CR_IMAGE_STORAGE
    ds = _common(ctx, sop_class, sop_uid, "DX" if sop == "DX" else "CR")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.StudyDescription = "胸部正位"
    ds.SeriesDescription = (
        f"Chest {proj.view}"
        if not ctx.style.chinese_descriptions
        else (f"胸部{'后前位' if proj.view == 'PA' else '前后位'}")
    )
    ds.ManufacturerModelName = ctx.style.dr_model
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = proj.view
    ds.KVP = str(proj.kvp)
    ds.ExposureTime = "8"
    ds.XRayTubeCurrent = "320"
    ds.Exposure = str(round(proj.mas))
    ds.DistanceSourceToDetector = f"{proj.source_detector_mm:.1f}"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    # Both views are displayed as if facing the patient (PS3.3 C.7.6.1.1.1).
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = proj.photometric
    ds.Rows, ds.Columns = image.shape
    spacing = [f"{proj.pixel_spacing_mm:.4g}"] * 2
    ds.ImagerPixelSpacing = spacing
    ds.BitsAllocated = 16
    ds.BitsStored = proj.bits_stored
    ds.HighBit = proj.bits_stored - 1
    ds.PixelRepresentation = 0
    top = (1 << proj.bits_stored) - 1
    ds.WindowCenter = str(top // 2)
    ds.WindowWidth = str(top)
    if sop == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if proj.photometric == "MONOCHROME1" else 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        # PS3.3 C.8.11.1.1.5: INVERSE for MONOCHROME1, IDENTITY for MONOCHROME2.
        ds.PresentationLUTShape = "INVERSE" if proj.photometric == "MONOCHROME1" else "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.BurnedInAnnotation = "NO"
        ds.DetectorType = "SCINTILLATOR"
        ds.AcquisitionContextSequence = []
        ds.PixelSpacing = spacing
        ds.PositionerType = ""
        ds.AnatomicRegionSequence = [_code("51185008", "SCT", "Chest")]
    ds.PixelData = np.ascontiguousarray(image.astype(np.uint16)).tobytes()
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def phantom_datasets(phantom: Any, options: DicomOptions | None = None) -> list[Dataset]:
    """The phantom as in-memory pydicom Datasets (one per slice, or one radiograph)."""
    opts = options or DicomOptions()
    ctx = _context(phantom, opts)
    if hasattr(phantom, "volume"):
        return _ct_datasets(phantom, ctx)
    if hasattr(phantom, "image") and hasattr(phantom, "projection"):
        rng = np.random.default_rng(np.random.SeedSequence([phantom.seed, 0xD2]))
        sop = opts.dr_sop or ("DX" if rng.uniform() < 0.6 else "CR")
        return [_dr_dataset(phantom, ctx, sop)]
    raise InvalidInputError(f"cannot write {type(phantom).__name__} as DICOM")


def write_dicom(phantom: Any, directory: Path, options: DicomOptions | None = None) -> list[Path]:
    """Write the series (``IM00001.dcm``...) and ``truth.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in phantom_datasets(phantom, options):
        path = directory / f"IM{int(ds.InstanceNumber):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    write_truth(phantom, directory)
    logger.info("phantom written as DICOM", extra={"files": len(paths), "seed": phantom.seed})
    return paths
