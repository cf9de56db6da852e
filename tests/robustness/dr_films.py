"""Chest films as other scanners and consoles send them, for the DR robustness matrix.

Each builder takes a private copy of the baseline film (a DX For Presentation file of a
DRR phantom, 12 bit MONOCHROME2, window, both pixel spacings, Patient Orientation
``L\\F``) and re-encodes it the way one scanner would, saying where the nodule now lies
in the stored matrix, in which unit sizes must come back, and which notes must appear.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from inference.dr.image import block_reduce
from tests.dicom_node.conftest import dcmtk

DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
SIZE = 768  # the baseline film's matrix
PAD = 48  # burned-in shutter band, px


@dataclass(frozen=True)
class Film:
    """One variant as sent, and what the worklist must show for it."""

    ds: Dataset
    nodule_rc: tuple[float, float]  # the nodule's centre in stored pixels (row, col)
    nodule_px: float  # its diameter in stored pixels (along rows)
    spacing: tuple[float, float] | None  # expected mm per stored pixel (row, col); None: px
    same_input: bool = True  # only the encoding changed: the network input must not
    notes: tuple[str, ...] = ()  # substrings the result notes must contain
    side: str | None = "right"  # the patient's side reported for the nodule


def set_pixels(ds: Dataset, arr: npt.NDArray[Any]) -> None:
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.PixelData = np.ascontiguousarray(arr).tobytes()


def requantise(img: npt.NDArray[Any], top_in: int, top_out: int) -> npt.NDArray[np.float64]:
    return np.round(img.astype(np.float64) * top_out / top_in)


def resize(img: npt.NDArray[Any], rows: int, cols: int) -> npt.NDArray[np.float32]:
    pil = Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float32)


def scaled_rc(rc: tuple[float, float], fr: float, fc: float) -> tuple[float, float]:
    """A pixel centre after resampling by (fr, fc) new pixels per old pixel."""
    return ((rc[0] + 0.5) * fr - 0.5, (rc[1] + 0.5) * fc - 0.5)


def dcmcjpeg(ds: Dataset, *flags: str) -> Dataset:
    """``ds`` encoded by dcmtk's dcmcjpeg (pydicom has no JPEG process 1 or 14 encoder)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        ds.save_as(src, enforce_file_format=True)
        subprocess.run(
            [dcmtk("dcmcjpeg"), *flags, str(src), str(dst)], check=True, capture_output=True
        )
        return pydicom.dcmread(dst)


def drop(ds: Dataset, *keywords: str) -> Dataset:
    for k in keywords:
        if k in ds:
            delattr(ds, k)
    return ds


# -- variants --------------------------------------------------------------------------------
# Each builder gets a private copy of the baseline film and returns the variant.

Builder = Callable[[Film], Film]


def _mono1(keep_inverse: bool) -> Builder:
    def build(f: Film) -> Film:
        ds = f.ds
        top = (1 << int(ds.BitsStored)) - 1
        set_pixels(ds, (top - ds.pixel_array).astype(np.uint16))
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelIntensityRelationshipSign = -1
        if keep_inverse:
            ds.PresentationLUTShape = "INVERSE"
        else:
            drop(ds, "PresentationLUTShape")
        return replace(f, notes=("MONOCHROME1 inverted",))

    return build


def _voi_lut_only(f: Film) -> Film:
    ds = f.ds
    top = (1 << int(ds.BitsStored)) - 1
    v = ds.pixel_array.astype(np.float64) / top
    set_pixels(ds, np.round(v**2 * top).astype(np.uint16))  # the LUT undoes this gamma
    item = Dataset()
    item.add_new(0x00283002, "US", [top + 1, 0, 16])
    lut = np.round(65535 * np.sqrt(np.arange(top + 1) / top)).astype("<u2")
    item.add_new(0x00283006, "OW", lut.tobytes())
    ds.VOILUTSequence = DicomSequence([item])
    drop(ds, "WindowCenter", "WindowWidth")
    return replace(f, notes=("VOI LUT applied",))


def _window_only(f: Film) -> Film:
    drop(f.ds, "PresentationLUTShape", "VOILUTSequence")
    return replace(f, notes=("window applied",))


def _no_voi(f: Film) -> Film:
    drop(f.ds, "WindowCenter", "WindowWidth", "VOILUTSequence")
    return replace(f, notes=("contrast from image statistics",))


def _window_width_zero(f: Film) -> Film:
    """Window Width 0, which PS3.3 C.11.2.1.2 forbids and some consoles write."""
    f.ds.WindowWidth = "0"
    return replace(f, notes=("window unusable",))


def _voi_lut_malformed(f: Film) -> Film:
    """A VOI LUT item whose descriptor is cut short; the window beside it still holds."""
    item = Dataset()
    item.add_new(0x00283002, "US", [0, 0])
    item.add_new(0x00283006, "OW", b"\0\0")
    f.ds.VOILUTSequence = DicomSequence([item])
    return replace(f, notes=("VOI LUT Sequence malformed", "window applied"))


def _bits(bits: int) -> Builder:
    def build(f: Film) -> Film:
        ds = f.ds
        top_in, top = (1 << int(ds.BitsStored)) - 1, (1 << bits) - 1
        set_pixels(ds, requantise(ds.pixel_array, top_in, top).astype(np.uint16))
        ds.BitsStored, ds.HighBit = bits, bits - 1
        ds.WindowCenter, ds.WindowWidth = str(top // 2), str(top)
        return f

    return build


def _signed(f: Film) -> Film:
    """PixelRepresentation 1 with negative stored values (14 bit two's complement)."""
    ds = f.ds
    arr = requantise(ds.pixel_array, 4095, 16383).astype(np.int32) - 8192
    set_pixels(ds, arr.astype(np.int16))
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 14, 13
    ds.WindowCenter, ds.WindowWidth = "0", "16383"
    return f


def _cr_8bit(f: Film) -> Film:
    ds = f.ds
    set_pixels(ds, requantise(ds.pixel_array, 4095, 255).astype(np.uint8))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.WindowCenter, ds.WindowWidth = "127", "255"
    _as_cr(ds)
    return f


def _as_cr(ds: Dataset) -> None:
    ds.SOPClassUID = CR_IMAGE
    ds.Modality = "CR"
    drop(
        ds,
        "PresentationIntentType",
        "PixelIntensityRelationship",
        "PixelIntensityRelationshipSign",
        "DetectorType",
        "AcquisitionContextSequence",
        "PositionerType",
        "AnatomicRegionSequence",
        "PixelSpacing",
    )


def _cr(f: Film) -> Film:
    _as_cr(f.ds)
    return f


def _rescale(f: Film) -> Film:
    ds = f.ds
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
    ds.WindowCenter, ds.WindowWidth = str(2 * 2047 - 100), str(2 * 4095)
    return f


def _no_rescale(f: Film) -> Film:
    drop(f.ds, "RescaleSlope", "RescaleIntercept", "RescaleType")
    return f


def _pixel_only(f: Film) -> Film:
    drop(f.ds, "ImagerPixelSpacing")
    return f


def _imager_only(f: Film) -> Film:
    drop(f.ds, "PixelSpacing")
    return replace(f, notes=("Imager Pixel Spacing",))


def _imager_magnified(f: Film) -> Film:
    drop(f.ds, "PixelSpacing")
    f.ds.EstimatedRadiographicMagnificationFactor = "1.2"
    assert f.spacing is not None
    return replace(f, spacing=(f.spacing[0] / 1.2, f.spacing[1] / 1.2))


def _no_spacing(f: Film) -> Film:
    drop(f.ds, "PixelSpacing", "ImagerPixelSpacing")
    return replace(f, spacing=None, notes=("sizes are in pixels (px)",))


def _anisotropic(f: Film) -> Film:
    """Columns sampled 1.5 x coarser than rows; the picture itself is unchanged."""
    ds, cols = f.ds, SIZE * 2 // 3
    set_pixels(ds, np.round(resize(ds.pixel_array, SIZE, cols)).astype(np.uint16))
    assert f.spacing is not None
    spacing = (f.spacing[0], f.spacing[1] * SIZE / cols)
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
    return replace(
        f, spacing=spacing, nodule_rc=scaled_rc(f.nodule_rc, 1.0, cols / SIZE), same_input=False
    )


def _compressed(syntax: str) -> Builder:
    def build(f: Film) -> Film:
        if syntax == JPEGLosslessSV1:  # no pydicom encoder: dcmtk, first-order predictor
            return replace(f, ds=dcmcjpeg(f.ds, "+e1"))
        f.ds.compress(syntax)
        return f

    return build


def _jpeg_baseline(f: Film) -> Film:
    """Lossy 8-bit JPEG, as consoles export for web viewers: same picture, not same bits."""
    ds = f.ds
    set_pixels(ds, requantise(ds.pixel_array, 4095, 255).astype(np.uint8))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7  # baseline is 8 bit (PS3.5 A.4.1)
    ds.WindowCenter, ds.WindowWidth = "127", "255"
    ds = dcmcjpeg(ds, "+eb")
    return replace(f, ds=ds, same_input=False)


def _modality_lut(f: Film) -> Film:
    """A Modality LUT Sequence (PS3.3 C.11.1) instead of Rescale Slope / Intercept: a
    gamma in the stored values that the LUT undoes."""
    ds = f.ds
    top = 4095
    v = ds.pixel_array.astype(np.float64) / top
    set_pixels(ds, np.round(v**2 * top).astype(np.uint16))
    item = Dataset()
    item.add_new(0x00283002, "US", [top + 1, 0, 16])
    lut = np.round(65535 * np.sqrt(np.arange(top + 1) / top)).astype("<u2")
    item.add_new(0x00283006, "OW", lut.tobytes())
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = DicomSequence([item])
    drop(ds, "RescaleSlope", "RescaleIntercept", "RescaleType")
    ds.WindowCenter, ds.WindowWidth = "32767", "65535"
    return replace(f, notes=("Modality LUT applied",))


def _for_processing(f: Film) -> Film:
    f.ds.SOPClassUID = DX_PROCESSING
    f.ds.PresentationIntentType = "FOR PROCESSING"
    return replace(f, notes=("FOR PROCESSING",))


def _secondary_capture(modality: str) -> Builder:
    def build(f: Film) -> Film:
        ds = f.ds
        ds.SOPClassUID, ds.Modality, ds.ConversionType = SC_IMAGE, modality, "WSD"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        drop(
            ds,
            "PixelSpacing",
            "ImagerPixelSpacing",
            "PresentationIntentType",
            "DetectorType",
            "AcquisitionContextSequence",
            "PositionerType",
        )
        return replace(f, spacing=None)

    return build


def _sc_rgb(jpeg: bool = False, colour: bool = False) -> Builder:
    """A console's "export": the film as an 8-bit RGB Secondary Capture, optionally
    JPEG baseline (then YBR_FULL_422 on the wire), optionally tinted."""

    def build(f: Film) -> Film:
        ds = _secondary_capture("OT")(f).ds
        gray = requantise(ds.pixel_array, 4095, 255)
        tint = (1.0, 0.8, 0.5) if colour else (1.0, 1.0, 1.0)
        rgb = np.stack([np.round(gray * t) for t in tint], axis=-1).astype(np.uint8)
        set_pixels(ds, rgb)
        ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, "RGB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        drop(
            ds,
            "WindowCenter",
            "WindowWidth",
            "RescaleSlope",
            "RescaleIntercept",
            "RescaleType",
            "PresentationLUTShape",
            "PixelIntensityRelationship",
            "PixelIntensityRelationshipSign",
        )
        ds.SeriesDescription = "胸部正位 导出"
        if jpeg:  # dcmcjpeg stores colour as YBR_FULL_422
            ds = dcmcjpeg(ds, "+eb")
        return replace(f, ds=ds, spacing=None, same_input=not jpeg, notes=("read as grayscale",))

    return build


def _one_frame(sop_class: str) -> Builder:
    def build(f: Film) -> Film:
        ds = f.ds
        ds.SOPClassUID, ds.NumberOfFrames = sop_class, 1
        if sop_class == SC_MULTIFRAME_WORD:
            ds.ConversionType = "WSD"
            ds.FrameIncrementPointer = 0x00181063
            drop(ds, "PixelSpacing", "ImagerPixelSpacing", "PresentationIntentType")
            return replace(f, spacing=None)
        return f

    return build


def _three_frames(f: Film) -> Film:
    """A multi-frame DX whose first frame is the film (the others: its inverse, noise)."""
    ds = f.ds
    img = ds.pixel_array
    noise = np.random.default_rng(3).integers(0, 4096, img.shape)
    set_pixels(ds, np.stack([img, 4095 - img, noise]).astype(np.uint16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = *img.shape, 3
    ds.FrameIncrementPointer = 0x00181063
    return f


# (np.rot90 k, fliplr, PatientOrientation) -> what the stored image now shows
def _oriented(k: int, flip: bool, orientation: tuple[str, str]) -> Builder:
    def build(f: Film) -> Film:
        ds = f.ds
        arr = ds.pixel_array
        r, c = f.nodule_rc
        h, w = arr.shape
        if flip:
            arr, c = arr[:, ::-1], w - 1 - c
        for _ in range(k % 4):  # counter-clockwise quarter turns
            arr, (r, c), (h, w) = np.rot90(arr), (w - 1 - c, r), (w, h)
        set_pixels(ds, arr.astype(np.uint16))
        ds.PatientOrientation = list(orientation)
        # turned back to the standard display, the network sees the baseline's input
        return replace(f, nodule_rc=(r, c), notes=("PatientOrientation",))

    return build


def _orientation_not_frontal(f: Film) -> Film:
    f.ds.PatientOrientation = ["A", "F"]  # a lateral's value on a PA film
    return replace(f, side=None, notes=("patient side not reported",))


def _no_orientation(f: Film) -> Film:
    drop(f.ds, "PatientOrientation")
    return replace(f, notes=("patient orientation not recorded",))


def _ap(f: Film) -> Film:
    f.ds.ViewPosition = "AP"
    f.ds.SeriesDescription = "床旁胸片"
    return replace(f, notes=("AP view (bedside/portable)",))


def _no_view(f: Film) -> Film:
    drop(f.ds, "ViewPosition", "SeriesDescription", "StudyDescription", "ProtocolName")
    return replace(f, notes=("assumed frontal",))


def _view_text(series: str | None, study: str, note: str) -> Builder:
    """No View Position; the view only in the descriptions ("正侧位": a study with both)."""

    def build(f: Film) -> Film:
        drop(f.ds, "ViewPosition", "ProtocolName", "SeriesDescription")
        if series:
            f.ds.SeriesDescription = series
        f.ds.StudyDescription = study
        return replace(f, notes=(note,))

    return build


def _framed(level: str) -> Builder:
    def build(f: Film) -> Film:
        ds = f.ds
        value = 0 if level == "black" else (1 << int(ds.BitsStored)) - 1
        set_pixels(ds, np.pad(ds.pixel_array, PAD, constant_values=value).astype(np.uint16))
        r, c = f.nodule_rc
        return replace(f, nodule_rc=(r + PAD, c + PAD), notes=("collimation border cropped",))

    return build


def _tiny(f: Film) -> Film:
    """256 x 256: the network input size itself, so the film is still readable."""
    ds = f.ds
    set_pixels(ds, np.round(block_reduce(ds.pixel_array, 3)).astype(np.uint16))
    assert f.spacing is not None
    s = f"{f.spacing[0] * 3:.6g}"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [s, s]
    return replace(
        f,
        spacing=(float(s), float(s)),
        nodule_rc=scaled_rc(f.nodule_rc, 1 / 3, 1 / 3),
        nodule_px=f.nodule_px / 3,
        same_input=False,
        notes=("low resolution",),
    )


def _tags(**attrs: object) -> Builder:
    def build(f: Film) -> Film:
        for k, v in attrs.items():
            if v is None:
                drop(f.ds, k)
            else:
                setattr(f.ds, k, v)
        return f

    return build


def _chinese_body_part(f: Film) -> Film:
    """CS holds ASCII only (PS3.5 6.2); consoles write "胸部" in GB18030 all the same."""
    f.ds.SpecificCharacterSet = "GB18030"
    tag, value = Tag("BodyPartExamined"), "胸部".encode("gb18030")
    f.ds[tag] = RawDataElement(tag, "CS", len(value), value, 0, False, True)  # type: ignore[assignment]
    return f


def _chinese_description(f: Film) -> Film:
    f.ds.SpecificCharacterSet = "GB18030"
    f.ds.SeriesDescription = "胸部后前位 数字化摄影"
    f.ds.StudyDescription = "胸部正位片"
    return f


READY: dict[str, Builder] = {
    "mono1_inverse": _mono1(keep_inverse=True),
    "mono1_no_plut": _mono1(keep_inverse=False),
    "voi_lut_only": _voi_lut_only,
    "window_only": _window_only,
    "no_voi": _no_voi,
    "window_width_zero": _window_width_zero,
    "voi_lut_malformed": _voi_lut_malformed,
    "bits10": _bits(10),
    "bits12": _bits(12),
    "bits14": _bits(14),
    "bits15": _bits(15),
    "signed_negative": _signed,
    "cr_8bit": _cr_8bit,
    "rescale_present": _rescale,
    "rescale_absent": _no_rescale,
    "pixel_spacing_only": _pixel_only,
    "imager_spacing_only": _imager_only,
    "imager_spacing_magnified": _imager_magnified,
    "both_spacings": lambda f: f,
    "no_spacing": _no_spacing,
    "anisotropic": _anisotropic,
    "jpeg_lossless": _compressed(JPEGLosslessSV1),
    "jpeg2000_lossless": _compressed(JPEG2000Lossless),
    "jpeg_ls": _compressed(JPEGLSLossless),
    "rle": _compressed(RLELossless),
    "jpeg_baseline_8bit_lossy": _jpeg_baseline,
    "modality_lut_sequence": _modality_lut,
    "for_processing": _for_processing,
    "cr": _cr,
    "sc_dx_no_spacing": _secondary_capture("DX"),
    "sc_cr_no_spacing": _secondary_capture("CR"),
    "sc_rgb_gray": _sc_rgb(),
    "sc_rgb_jpeg_ybr": _sc_rgb(jpeg=True),
    "dx_one_frame": _one_frame(str(UID("1.2.840.10008.5.1.4.1.1.1.1"))),
    "sc_multiframe_one_frame": _one_frame(SC_MULTIFRAME_WORD),
    "dx_three_frames": _three_frames,
    "rot90_cw": _oriented(3, False, ("H", "L")),
    "rot90_ccw": _oriented(1, False, ("F", "R")),
    "rot180": _oriented(2, False, ("R", "H")),
    "flipped_lr": _oriented(0, True, ("R", "F")),
    "no_patient_orientation": _no_orientation,
    "orientation_not_frontal": _orientation_not_frontal,
    "ap_portable": _ap,
    "no_view_position": _no_view,
    "series_pa_in_study_of_both_views": _view_text("胸部后前位", "胸部正侧位", "inferred from"),
    "study_of_both_views_only": _view_text(None, "胸部正侧位", "assumed frontal"),
    "black_frame": _framed("black"),
    "white_frame": _framed("white"),
    "tiny_256": _tiny,
    "no_body_part": _tags(BodyPartExamined=None),
    "body_part_thorax": _tags(BodyPartExamined="THORAX"),
    "body_part_chinese": _chinese_body_part,
    "body_part_lung": _tags(BodyPartExamined="LUNG"),
    "description_gb18030": _chinese_description,
    "no_study_date": _tags(StudyDate=None, StudyTime=None),
}


def _linear_for_processing(f: Film) -> Film:
    """A raw FOR PROCESSING image: values proportional to the beam intensity."""
    f = _for_processing(f)
    ds = f.ds
    density = ds.pixel_array.astype(np.float64) / 4095  # dense = bright, as presented
    set_pixels(ds, np.round(4095 * np.exp(-3.0 * density)).astype(np.uint16))
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    return f


REFUSED: dict[str, tuple[Builder, str]] = {
    "sc_rgb_colour": (_sc_rgb(colour=True), "in colour, not a grayscale radiograph"),
    "for_processing_linear": (_linear_for_processing, "Pixel Intensity Relationship LIN"),
    "lateral_ll": (_tags(ViewPosition="LL", SeriesDescription="Chest LAT"), "LL view"),
    "lateral_rl": (_tags(ViewPosition="RL"), "RL view"),
    "lateral_by_orientation": (
        _tags(
            ViewPosition=None,
            SeriesDescription=None,
            StudyDescription=None,
            PatientOrientation=["P", "F"],
        ),
        "lateral projection (orientation P\\F)",
    ),
    "lateral_description": (
        _tags(ViewPosition=None, SeriesDescription="胸部侧位", StudyDescription=None),
        "lateral view",
    ),
}
