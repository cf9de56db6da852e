"""The grayscale half of reading a DX/CR instance: stored pixels to display values.

Decoding (frame 1; an RGB/YBR export of a gray film as its mean), early block-averaging
to at most ``WORK_MAX`` pixels on the long side, the Modality LUT or Rescale (PS3.3
C.11.1), the VOI LUT or window (C.11.2) and MONOCHROME1 / Presentation LUT Shape
INVERSE (C.7.6.3.1.2, C.11.6), so that dense is bright. A malformed LUT or window is
ignored with a note; pixel data that cannot be read is not analyzable, with the reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing, pixel_array

from countyread.errors import NotAnalyzableError

F32 = npt.NDArray[np.float32]

WORK_MAX = 1024  # long side of the working image, in pixels
MAX_PIXELS = 80_000_000  # refuse larger matrices before decoding (about 160 MB at 16 bit)
LOW_RESOLUTION = 512  # long side below which a film is read but flagged
MIN_SIDE = 64  # below this a matrix is an icon, not a film


def block_reduce(arr: npt.NDArray[Any], factor: int) -> F32:
    """Mean over ``factor x factor`` blocks (the remainder rows/columns are dropped)."""
    if factor <= 1:
        return np.asarray(arr, dtype=np.float32)
    h, w = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
    out = np.zeros((h // factor, w // factor), dtype=np.float32)
    # row bands keep the float temporary small for very large matrices
    band = factor * max(1, 256 // factor)
    for r in range(0, h, band):
        block = np.asarray(arr[r : min(r + band, h), :w], dtype=np.float32)
        rows = block.shape[0] // factor
        out[r // factor : r // factor + rows] = block.reshape(rows, factor, -1, factor).mean(
            axis=(1, 3)
        )
    return out


_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"}
_GREY_SPREAD = 0.02  # of the value range: channels this close are a gray picture


def _decode(ds: Dataset, photometric: str, notes: list[str]) -> npt.NDArray[Any]:
    """Frame 1 of the pixel data as a 2-D array. Consoles export films as RGB Secondary
    Capture; when the three channels agree (a gray picture) their mean is read."""
    colour = photometric in _COLOUR and int(ds.get("SamplesPerPixel") or 1) == 3
    if not colour and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotAnalyzableError(f"photometric interpretation {photometric} is not grayscale")
    frames = _number(ds, "NumberOfFrames", 1.0)
    try:
        # YBR comes back as RGB; of a multi-frame only frame 1 is decoded (memory)
        raw = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except Exception as exc:  # decoders raise many types; the reason goes to the worklist
        raise NotAnalyzableError(f"pixel data cannot be decoded: {exc}") from exc
    if raw.ndim == (4 if colour else 3):  # multi-frame: frame 1 is the film
        raw = raw[0]
    if not colour:
        return raw
    top = float((1 << int(ds.get("BitsStored") or 8)) - 1)
    spread = np.ptp(raw[::4, ::4], axis=-1)  # a subsample is plenty to see colour
    if float(np.percentile(spread, 99)) > _GREY_SPREAD * top:
        raise NotAnalyzableError(f"{photometric} image in colour, not a grayscale radiograph")
    notes.append(f"{photometric} image with gray content: read as grayscale")
    return np.asarray(np.mean(raw, axis=-1, dtype=np.float32))


def _number(ds: Dataset, keyword: str, default: float) -> float:
    """A numeric attribute, or ``default`` when absent or not a finite number."""
    try:
        value = float(ds.get(keyword) if ds.get(keyword) not in (None, "") else default)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


# What pydicom raises on a malformed LUT or window (PS3.3 C.11.1-2); such a header is
# ignored with a note rather than failing the job.
_LUT_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError)


def _modality(raw: npt.NDArray[Any], ds: Dataset, factor: int, notes: list[str]) -> F32:
    """Reduced values through the Modality LUT or Rescale Slope / Intercept."""
    if ds.get("ModalityLUTSequence"):
        try:
            # a LUT indexes stored values, so it must see them before any averaging
            values = block_reduce(apply_modality_lut(raw, ds), factor)
            notes.append("Modality LUT applied")
            return values
        except _LUT_ERRORS:
            notes.append("Modality LUT Sequence malformed: stored values used")
    values = block_reduce(raw, factor)
    slope = _number(ds, "RescaleSlope", 1.0) or 1.0
    intercept = _number(ds, "RescaleIntercept", 0.0)
    if slope != 1.0 or intercept != 0.0:
        values = values * np.float32(slope) + np.float32(intercept)
    return values


def _voi(values: F32, ds: Dataset, notes: list[str]) -> F32:
    """The first VOI LUT, else the first window, else nothing (normalisation follows)."""
    if ds.get("VOILUTSequence"):
        try:
            voi = apply_voi_lut(np.round(values).astype(np.int64), ds, index=0)
            notes.append("VOI LUT applied")
            return np.asarray(voi, dtype=np.float32)
        except _LUT_ERRORS:
            notes.append("VOI LUT Sequence malformed: ignored")
    if ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        try:
            windowed = np.asarray(apply_windowing(values, ds, index=0), dtype=np.float32)
            notes.append("window applied")
            return windowed
        except _LUT_ERRORS:
            # e.g. Window Width 0, which PS3.3 C.11.2.1.2 forbids
            notes.append("window unusable: ignored")
    notes.append("no VOI LUT or window: contrast from image statistics")
    return values


def display_values(ds: Dataset) -> tuple[F32, int, tuple[str, ...]]:
    """Decoded, reduced, Modality- and VOI-mapped values, dense = bright.

    Returns the array, the reduction factor and notes on what was applied.
    """
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if min(rows, cols) < MIN_SIDE:
        raise NotAnalyzableError(f"image matrix {cols}x{rows} is too small for a chest film")
    processing = str(ds.get("PresentationIntentType") or "").upper() == "FOR PROCESSING"
    if processing and str(ds.get("PixelIntensityRelationship") or "").upper() == "LIN":
        # PS3.3 C.8.11.1.1.1-2: raw values proportional to beam intensity, which need the
        # vendor's log and equalisation before anyone (or the model) can read them
        raise NotAnalyzableError(
            "pixel values are linear in X-ray intensity (Pixel Intensity Relationship LIN): "
            "a presentation image is needed"
        )
    if rows * cols > MAX_PIXELS:
        raise NotAnalyzableError(f"image matrix {rows}x{cols} exceeds {MAX_PIXELS} pixels")
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").upper()
    notes: list[str] = []
    raw = _decode(ds, photometric, notes)
    if max(rows, cols) < LOW_RESOLUTION:
        notes.append(f"low resolution film ({cols}x{rows}): read, but small nodules may be missed")
    factor = max(1, math.ceil(max(raw.shape) / WORK_MAX))
    values = _modality(raw, ds, factor, notes)
    del raw
    values = _voi(values, ds, notes)
    # DX requires Presentation LUT Shape INVERSE with MONOCHROME1 (PS3.3 C.8.11.1.1.5): the
    # two say the same thing. INVERSE on a MONOCHROME2 image (seen on CR/SC) also inverts.
    lut_shape = str(ds.get("PresentationLUTShape") or "").upper()
    if photometric == "MONOCHROME1":
        values = np.float32(values.max() + values.min()) - values
        notes.append("MONOCHROME1 inverted")
    elif lut_shape == "INVERSE":
        values = np.float32(values.max() + values.min()) - values
        notes.append("Presentation LUT Shape INVERSE applied")
    return values, factor, tuple(notes)
