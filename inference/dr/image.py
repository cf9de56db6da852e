"""Turn a stored DX/CR instance into a display-ready radiograph (white = dense).

Steps, in the order PS3.3 C.11 / C.7.6.3.1.2 define the grayscale pipeline (steps 1-5
in :mod:`inference.dr.grayscale`):

1. refuse absurd matrices before decoding (memory bound), take frame 1 of a multi-frame;
2. block-average down to at most ``WORK_MAX`` pixels on the long side right after
   decoding, so that a 4k x 4k, 16-bit detector image costs one decode and no float copy
   of the full matrix;
3. Modality LUT (Rescale Slope / Intercept or Modality LUT Sequence, PS3.3 C.11.1);
4. VOI LUT Sequence or Window Center / Width (with VOI LUT Function, PS3.3 C.11.2); when
   neither is present the contrast comes from the image's own percentiles (noted);
5. MONOCHROME1 (minimum = white) is inverted after the VOI stage (PS3.3 C.7.6.3.1.2),
   as is a MONOCHROME2 image with Presentation LUT Shape INVERSE;
6. non-square pixels are resampled square (the coarser axis is interpolated up), and a
   film that Patient Orientation says was rotated or mirrored is turned to the standard
   display (:mod:`inference.dr.orientation`);
7. burned-in collimation / shutter borders (uniform bands at the edges) are cropped;
8. percentile normalisation inside the exposed field to [0, 1].

Step 6 belongs to :func:`load_radiograph` only: training images are made upright and
square, and share steps 7-8 through :func:`prepare_values`.

Pixel size: Pixel Spacing (calibrated to the patient plane, PS3.3 10.7.1.3) wins over
Imager Pixel Spacing (detector plane, PS3.3 C.8.11.4), which is divided by the Estimated
Radiographic Magnification Factor when present (PS3.3 C.8.11.7). With neither, sizes are
reported in pixels and the result says so.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset

from inference.dr.grayscale import (  # re-exported: training shares these
    LOW_RESOLUTION,
    MAX_PIXELS,
    MIN_SIDE,
    WORK_MAX,
    block_reduce,
    display_values,
)
from inference.dr.orientation import AS_STORED, Reorientation, reorientation

__all__ = [
    "KNEE_PHRASE",
    "LOW_RESOLUTION",
    "MAX_PIXELS",
    "MIN_SIDE",
    "WORK_MAX",
    "PixelGeometry",
    "Radiograph",
    "block_reduce",
    "card_knee",
    "collimation_crop",
    "display_values",
    "load_radiograph",
    "normalise",
    "pixel_geometry",
    "prepare_values",
    "square_pixels",
]

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

_BORDER_MAX_FRACTION = 0.2
_SQUARE_TOLERANCE = 0.02  # pixel aspect ratios closer to 1 than this are left alone
_MAX_ASPECT = 3.0  # no radiography detector or scanner has pixels more oblong than this


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
    reduced by ``factor``. Without stretch or turn, a working pixel (r, c) covers stored
    pixels starting at ``((r + crop[0]) * factor, (c + crop[1]) * factor)``; ``stretch``
    (working pixels per reduced pixel along the stored rows and columns) makes pixels
    square, ``turn`` puts the film in the standard display, and ``upright_shape`` is the
    working image's shape before the crop.
    """

    pixels: F32
    factor: int
    crop: tuple[int, int]
    stored_shape: tuple[int, int]
    geometry: PixelGeometry
    notes: tuple[str, ...]
    stretch: tuple[float, float] = (1.0, 1.0)
    turn: Reorientation = AS_STORED
    upright_shape: tuple[int, int] | None = None

    def _upright(self) -> tuple[int, int]:
        if self.upright_shape is not None:
            return self.upright_shape
        h, w = self.pixels.shape
        return (h + self.crop[0], w + self.crop[1])

    def to_stored(self, rc: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Working-pixel (row, col) coordinates (N x 2) to stored-pixel coordinates."""
        pts = np.atleast_2d(np.asarray(rc, dtype=np.float64)) + np.asarray(self.crop, float)
        pts = self.turn.to_source(pts, self._upright())
        pts = (pts + 0.5) / np.asarray(self.stretch, dtype=np.float64) - 0.5
        return pts * self.factor + (self.factor - 1) / 2.0

    def to_working(self, rc: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Stored-pixel (row, col) coordinates (N x 2) to working-pixel coordinates."""
        pts = np.atleast_2d(np.asarray(rc, dtype=np.float64)) - (self.factor - 1) / 2.0
        pts = (pts / self.factor + 0.5) * np.asarray(self.stretch, dtype=np.float64) - 0.5
        pts = self.turn.to_standard(pts, self._upright())
        return pts - np.asarray(self.crop, dtype=np.float64)

    @property
    def stored_per_working(self) -> float:
        """Stored pixels per working pixel along the finer stored axis."""
        return self.factor / max(self.stretch)

    @property
    def working_mm(self) -> float | None:
        """Side of a (square) working pixel in mm; None without a pixel size."""
        sp = self.geometry.spacing_mm
        if sp is None:
            return None
        rows, cols = (s * self.factor / t for s, t in zip(sp, self.stretch, strict=True))
        return math.sqrt(rows * cols)

    def side(self, stored_rc: tuple[float, float]) -> str | None:
        """The patient's side of the film's midline a stored point lies on (standard
        display: the patient's right on the image left); None when not known."""
        if not self.turn.side_known:
            return None
        col = float(self.to_working(stored_rc)[0, 1]) + self.crop[1]
        return "right" if col < self._upright()[1] / 2.0 else "left"


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


def collimation_crop(values: F32) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the exposed field inside burned-in uniform borders.

    A border line sits at either end of the image's range (shutters are burned in as
    black or white) and is flat: a white one (unexposed detector behind the collimator)
    within a small fraction of the range, a black one exactly, because the air beside a
    patient is dark and smooth too but carries quantum noise, and cropping it would make
    the framing depend on the noise. At most ``_BORDER_MAX_FRACTION`` of each side is
    removed.
    """
    lo, hi = np.percentile(values, [1, 99])
    span = float(hi - lo) or 1.0
    tol = 0.02 * span
    exact = 1e-3 * span + 1e-6
    vmin, vmax = float(values.min()), float(values.max())

    def is_border(line: F32) -> bool:
        level = float(line.mean())
        spread = float(line.max() - line.min())
        if level >= vmax - tol:
            return spread < 2 * tol + 1e-6
        return level <= vmin + tol and spread <= exact

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


def normalise(values: F32, knee: float | None = None) -> F32:
    """Robust [0, 1] scaling (0.5th to 99.5th percentile).

    ``knee`` None clips at both ends. With a knee k in (0, 1), values above k are not
    clipped but compressed, k + e / (1 + e / (1 - k)) for an excess e over k (slope 1 at
    the knee, approaching 1 without reaching it): a nodule over the spine is among the
    densest 0.5 % of a film, and clipping at the 99.5th percentile flattens it.
    """
    lo, hi = np.percentile(values, [0.5, 99.5])
    out = (values - np.float32(lo)) / np.float32(max(float(hi - lo), 1e-6))
    if knee is None:
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    if not 0.0 < knee < 1.0:
        raise ValueError(f"knee must lie in (0, 1), not {knee}")
    out = np.maximum(out, 0.0)
    excess = np.maximum(out - np.float32(knee), 0.0)
    soft = np.float32(knee) + excess / (1.0 + excess / np.float32(1.0 - knee))
    return np.where(out > knee, soft, out).astype(np.float32)


def prepare_values(
    values: F32,
    factor: int,
    stored_shape: tuple[int, int],
    geometry: PixelGeometry,
    notes: tuple[str, ...] = (),
    knee: float | None = None,
) -> Radiograph:
    """Crop borders and normalise display values (shared by the service and training;
    ``knee``: see :func:`normalise`)."""
    r0, r1, c0, c1 = collimation_crop(values)
    extra = list(notes)
    if (r0, c0) != (0, 0) or (r1, c1) != values.shape:
        extra.append("collimation border cropped")
    pixels = normalise(values[r0:r1, c0:c1], knee)
    return Radiograph(
        pixels,
        factor,
        (r0, c0),
        stored_shape,
        geometry,
        tuple(extra),
        upright_shape=(int(values.shape[0]), int(values.shape[1])),
    )


def square_pixels(values: F32, geometry: PixelGeometry) -> tuple[F32, tuple[float, float]]:
    """Interpolate the coarser axis up so that a working pixel is square; returns the
    array and the stretch (new pixels per old) along rows and columns."""
    sp = geometry.spacing_mm
    if sp is None or abs(sp[0] / sp[1] - 1.0) <= _SQUARE_TOLERANCE:
        return values, (1.0, 1.0)
    if max(sp) / min(sp) > _MAX_ASPECT:  # a broken header, not a detector: left as stored
        return values, (1.0, 1.0)
    h, w = values.shape
    nh, nw = (round(h * sp[0] / sp[1]), w) if sp[0] > sp[1] else (h, round(w * sp[1] / sp[0]))
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    out = np.asarray(image.resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
    return out, (nh / h, nw / w)


# How a model card's input intensity names the knee its network was trained with
# (training.dr.export writes it, the pipeline reads it back with ``card_knee``).
KNEE_PHRASE = "soft knee above {knee:g}"
_KNEE_RE = re.compile(r"soft knee above ([0-9]*\.?[0-9]+)")


def card_knee(intensity: str) -> float | None:
    """The knee a card's input intensity text declares; None: the film is clipped."""
    m = _KNEE_RE.search(intensity)
    return float(m.group(1)) if m else None


def load_radiograph(ds: Dataset, knee: float | None = None) -> Radiograph:
    """Everything above, for one dataset with pixel data (``knee``: see :func:`normalise`)."""
    values, factor, notes = display_values(ds)
    shape = (int(ds.Rows), int(ds.Columns))
    geometry = pixel_geometry(ds)
    values, stretch = square_pixels(values, geometry)
    extra = list(notes)
    if stretch != (1.0, 1.0):
        assert geometry.spacing_mm is not None
        extra.append(
            "non-square pixels ({:.3f} x {:.3f} mm): resampled square for reading".format(
                *geometry.spacing_mm
            )
        )
    turn, why = reorientation(ds)
    values = turn.apply(values)
    if why:
        extra.append(why)
    prepared = prepare_values(values, factor, shape, geometry, tuple(extra), knee)
    return replace(prepared, stretch=stretch, turn=turn)
