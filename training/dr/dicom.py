"""Write a synthetic radiograph as a DX / CR / Secondary Capture file, in the styles the
service must cope with (MONOCHROME1, VOI LUT only, window only, no pixel spacing, ...).

The helper phantom factory's writer (``training.phantoms.dicom_writer``) covers the full
IODs; this one exists so DR tests can make their odd files quickly and deterministically.
DX attributes follow PS3.3 A.26 / C.8.11; UIDs derive from the seed (PS3.5 9.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from training.dr.synth import SynthChest

DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_ROOT = "1.2.826.0.1.3680043.10.1477."  # test-data root; digits only below it


@dataclass(frozen=True, slots=True)
class DXStyle:
    """How the file encodes the image."""

    modality: Literal["DX", "CR"] = "DX"
    sop_class: str = DX_PRESENTATION
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2"
    spacing: Literal["pixel", "imager", "none"] = "imager"
    voi: Literal["window", "lut", "none"] = "window"
    view: str | None = "PA"
    body_part: str | None = "CHEST"
    description: str = "Chest PA"
    bits_stored: int = 12
    magnification: float | None = None


def uid(*parts: int | str) -> str:
    return _ROOT + ".".join(str(p) for p in parts)


def chest_dataset(
    chest: SynthChest,
    seed: int,
    style: DXStyle = DXStyle(),
    *,
    study: int = 1,
    series: int = 1,
    instance: int = 1,
) -> Dataset:
    """A complete dataset (with file meta) holding ``chest`` in the given style."""
    v = chest.image.astype(np.float64) / 4095.0  # presentation values, dense = bright
    # With a VOI LUT the stored values carry a gamma the LUT undoes (PS3.3 C.11.2.1.1).
    stored = v**2 if style.voi == "lut" else v
    if style.photometric == "MONOCHROME1":
        stored = 1.0 - stored
    top = (1 << style.bits_stored) - 1
    pixels = np.round(stored * top).astype(np.uint16 if style.bits_stored > 8 else np.uint8)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(style.sop_class)
    sop_uid = uid(seed, study, series, instance)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = style.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uid(seed, study)
    ds.SeriesInstanceUID = uid(seed, study, series)
    ds.PatientName = "测试^胸片"
    ds.PatientID = f"DR{seed}"
    ds.StudyDate = "20260101"
    ds.Modality = "OT" if style.sop_class == SECONDARY_CAPTURE else style.modality
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.SeriesDescription = style.description
    if style.body_part:
        ds.BodyPartExamined = style.body_part
    if style.view:
        ds.ViewPosition = style.view
    # The image is stored in the standard display (heart on the viewer's right): rows run
    # toward the patient's left and columns toward the feet, PA and AP alike (L\\F).
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = (
        ["ORIGINAL", "PRIMARY"]
        if style.sop_class != SECONDARY_CAPTURE
        else ["DERIVED", "SECONDARY"]
    )
    if style.sop_class == DX_PRESENTATION:
        ds.PresentationIntentType = "FOR PRESENTATION"
    if style.sop_class == SECONDARY_CAPTURE:
        ds.ConversionType = "WSD"
    sp = f"{chest.spacing_mm:.6f}"
    if style.spacing == "pixel":
        ds.PixelSpacing = [sp, sp]
    elif style.spacing == "imager":
        ds.ImagerPixelSpacing = [sp, sp]
    if style.magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = f"{style.magnification:.3f}"
    if style.voi == "window":
        ds.WindowCenter = top // 2
        ds.WindowWidth = top + 1
    elif style.voi == "lut":
        item = Dataset()
        n = top + 1
        # LUT Descriptor and LUT Data have ambiguous VRs (US/SS, US/OW): state them.
        item.add_new(0x00283002, "US", [n if n < 65536 else 0, 0, 16])
        lut = np.round(65535 * np.sqrt(np.arange(n) / top)).astype("<u2")
        item.add_new(0x00283006, "OW", lut.tobytes())  # OW: a 16-bit LUT exceeds US's 64 kB
        item.LUTExplanation = "gamma 0.5"
        ds.VOILUTSequence = Sequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = style.photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16 if style.bits_stored > 8 else 8
    ds.BitsStored = style.bits_stored
    ds.HighBit = style.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def write_chest(
    path: Path, chest: SynthChest, seed: int, style: DXStyle = DXStyle(), **numbers: int
) -> Path:
    """Write ``chest`` to ``path`` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chest_dataset(chest, seed, style, **numbers).save_as(path, enforce_file_format=True)
    return path
