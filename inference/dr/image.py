"""Turn a stored DX/CR instance into a display-ready radiograph (white = dense).

Steps, in the order PS3.3 C.11 / C.7.6.3.1.2 define the grayscale pipeline:

1. refuse absurd matrices before decoding (memory bound), take frame 1 of a multi-frame;
2. block-average down to at most ``WORK_MAX`` pixels on the long side right after
   decoding, so that a 4k x 4k, 16-bit detector image costs one decode and no float copy
   of the full matrix;
3. Modality LUT (Rescale Slope / Intercept or Modality LUT Sequence, PS3.3 C.11.1);
4. VOI LUT Sequence or Window Center / Width (with VOI LUT Function, PS3.3 C.11.2); when
   neither is present the contrast comes from the image's own percentiles (noted);
5. MONOCHROME1 (minimum = white) is inverted after the VOI stage (PS3.3 C.7.6.3.1.2),
   as is a MONOCHROME2 image with Presentation LUT Shape INVERSE;
6. burned-in collimation / shutter borders (uniform bands at the edges) are cropped;
7. percentile normalisation inside the exposed field to [0, 1].

Pixel size: Pixel Spacing (calibrated to the patient plane, PS3.3 10.7.1.3) wins over
Imager Pixel Spacing (detector plane, PS3.3 C.8.11.4), which is divided by the Estimated
Radiographic Magnification Factor when present (PS3.3 C.8.11.7). With neither, sizes are
reported in pixels and the result says so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from countyread.errors import NotAnalyzableError

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

WORK_MAX = 1024  # long side of the working image, in pixels
MAX_PIXELS = 80_000_000  # refuse larger matrices before decoding (about 160 MB at 16 bit)
_BORDER_MAX_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class PixelGeometry:
    """Size of an original pixel, and where that number came from."""

    spacing_mm: tuple[float, float] | None  # (row, column) in mm
    source: str  # "PixelSpacing", "ImagerPixelSpacing", ... or "none"

    @property
    def unit(self) -> str:
        return "mm" if self.spacing_mm is not None else "px"

    def note(self) -> str | None:
        if self.spacing_mm is None:
            return "no Pixel Spacing or Imager Pixel Spacing: sizes are in pixels (px)"
        if self.source == "ImagerPixelSpacing":
            return (
                "sizes from Imager Pixel Spacing (detector plane, not corrected for magnification)"
            )
        return None


@dataclass(frozen=True, slots=True)
class Radiograph:
    """A prepared radiograph and the map from its pixels back to the stored matrix.

    ``pixels`` is float32 in [0, 1], dense = bright, cropped to the exposed field and
    reduced by ``factor``. A working pixel (r, c) covers stored pixels starting at
    ``((r + crop[0]) * factor, (c + crop[1]) * factor)``.
    """

    pixels: F32
    factor: int
    crop: tuple[int, int]
    stored_shape: tuple[int, int]
    geometry: PixelGeometry
    notes: tuple[str, ...]

    def to_stored(self, rc: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Working-pixel (row, col) coordinates (N x 2) to stored-pixel coordinates."""
        pts = np.atleast_2d(np.asarray(rc, dtype=np.float64))
        off = np.asarray(self.crop, dtype=np.float64)
        return (pts + off) * self.factor + (self.factor - 1) / 2.0


def pixel_geometry(ds: Dataset) -> PixelGeometry:
    """Pixel size per the precedence in the module docstring."""
    spacing = _pair(ds.get("PixelSpacing"))
    if spacing is not None:
        return PixelGeometry(spacing, "PixelSpacing")
    imager = _pair(ds.get("ImagerPixelSpacing"))
    if imager is not None:
        magnification = ds.get("EstimatedRadiographicMagnificationFactor")
        try:
            m = float(magnification) if magnification not in (None, "") else 0.0
        except (TypeError, ValueError):
            m = 0.0
        if m >= 1.0:
            return PixelGeometry((imager[0] / m, imager[1] / m), "ImagerPixelSpacing/magnification")
        return PixelGeometry(imager, "ImagerPixelSpacing")
    return PixelGeometry(None, "none")


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        if value is None or len(value) != 2:
            return None
        a, b = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return None
    return (a, b)


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


def display_values(ds: Dataset) -> tuple[F32, int, tuple[str, ...]]:
    """Decoded, reduced, Modality- and VOI-mapped values, dense = bright.

    Returns the array, the reduction factor and notes on what was applied.
    """
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 64 or cols < 64:
        raise NotAnalyzableError(f"image matrix {rows}x{cols} is too small for a chest film")
    if rows * cols > MAX_PIXELS:
        raise NotAnalyzableError(f"image matrix {rows}x{cols} exceeds {MAX_PIXELS} pixels")
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotAnalyzableError(f"photometric interpretation {photometric} is not grayscale")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # decoders raise many types; the reason goes to the worklist
        raise NotAnalyzableError(f"pixel data cannot be decoded: {exc}") from exc
    if raw.ndim == 3:  # multi-frame DX: the first frame is the image of record
        raw = raw[0]
    notes: list[str] = []
    factor = max(1, math.ceil(max(raw.shape) / WORK_MAX))
    if ds.get("ModalityLUTSequence"):
        # a LUT indexes stored values, so it must see them before any averaging
        values = block_reduce(apply_modality_lut(raw, ds), factor)
        notes.append("Modality LUT applied")
    else:
        values = block_reduce(raw, factor)
        slope = float(ds.get("RescaleSlope") or 1.0)
        intercept = float(ds.get("RescaleIntercept") or 0.0)
        if slope != 1.0 or intercept != 0.0:
            values = values * np.float32(slope) + np.float32(intercept)
    del raw
    if ds.get("VOILUTSequence"):
        voi = apply_voi_lut(np.round(values).astype(np.int64), ds, index=0)
        values = np.asarray(voi, dtype=np.float32)
        notes.append("VOI LUT applied")
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        values = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float32)
        notes.append("window applied")
    else:
        notes.append("no VOI LUT or window: contrast from image statistics")
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


def collimation_crop(values: F32) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the exposed field inside burned-in uniform borders.

    A border line is one whose spread is tiny next to the image's range and whose level
    sits at either end of it (shutters are burned in as black or white). At most
    ``_BORDER_MAX_FRACTION`` of each side is removed.
    """
    lo, hi = np.percentile(values, [1, 99])
    span = float(hi - lo) or 1.0
    tol = 0.02 * span
    vmin, vmax = float(values.min()), float(values.max())

    def is_border(line: F32) -> bool:
        level = float(line.mean())
        flat = float(line.max() - line.min()) < 2 * tol + 1e-6
        extreme = level <= vmin + tol or level >= vmax - tol
        return flat and extreme

    h, w = values.shape
    r0, r1, c0, c1 = 0, h, 0, w
    limit_r, limit_c = int(h * _BORDER_MAX_FRACTION), int(w * _BORDER_MAX_FRACTION)
    changed = True
    while changed:  # peel one line per side per round: shutters overlap at the corners
        changed = False
        if r0 < limit_r and is_border(values[r0, c0:c1]):
            r0, changed = r0 + 1, True
        if h - r1 < limit_r and is_border(values[r1 - 1, c0:c1]):
            r1, changed = r1 - 1, True
        if c0 < limit_c and is_border(values[r0:r1, c0]):
            c0, changed = c0 + 1, True
        if w - c1 < limit_c and is_border(values[r0:r1, c1 - 1]):
            c1, changed = c1 - 1, True
    return r0, r1, c0, c1


def normalise(values: F32) -> F32:
    """Robust [0, 1] scaling (0.5th to 99.5th percentile)."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    out = (values - np.float32(lo)) / np.float32(max(float(hi - lo), 1e-6))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def prepare_values(
    values: F32,
    factor: int,
    stored_shape: tuple[int, int],
    geometry: PixelGeometry,
    notes: tuple[str, ...] = (),
) -> Radiograph:
    """Crop borders and normalise display values (shared by the service and training)."""
    r0, r1, c0, c1 = collimation_crop(values)
    extra = list(notes)
    if (r0, c0) != (0, 0) or (r1, c1) != values.shape:
        extra.append("collimation border cropped")
    pixels = normalise(values[r0:r1, c0:c1])
    return Radiograph(pixels, factor, (r0, c0), stored_shape, geometry, tuple(extra))


def load_radiograph(ds: Dataset) -> Radiograph:
    """Everything above, for one dataset with pixel data."""
    values, factor, notes = display_values(ds)
    shape = (int(ds.Rows), int(ds.Columns))
    return prepare_values(values, factor, shape, pixel_geometry(ds), notes)
