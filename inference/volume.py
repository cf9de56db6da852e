"""Assemble a CT series into a :class:`countyread.domain.Volume` in HU (int16 throughout).

Geometry follows PS3.3 C.7.6.2.1.1 (Image Position / Orientation (Patient)): slices are
sorted by their position along the slice normal, the affine maps (column, row, slice)
to LPS mm. Multi-frame Enhanced CT (PS3.3 C.7.6.16, per-frame functional groups) is read
the same way. Documented outcomes for broken geometry (each is a note on the result or a
:class:`~countyread.errors.NotAnalyzableError` with the reason shown in the worklist):

- shuffled files: sorted along the normal (file order and Instance Number ignored);
- duplicate positions: the first instance (lowest Instance Number) kept, noted;
- orientation equal up to console rounding (0.99999/0.00436 vs 1/0.0044): one plane;
- a few instances of another orientation or matrix (localisers inside the series):
  dropped, noted; more than 10 % of them: refused ("mixed orientations");
- missing slices / uneven spacing (steps differ by > 10 % of the median): resampled onto
  the median step by linear interpolation, noted, the made-up slices listed in
  ``LoadedVolume.interpolated``; a gap > 3 steps or > 10 mm: refused;
- gantry tilt (the step between slices not along the normal): each slice shifted
  in-plane onto an orthogonal grid (linear interpolation), noted; tilt > 30 deg: refused
  (for the CT nodule pipeline, selection already refuses planes tilted > ~25 deg);
- fewer than 10 slices, missing Pixel Spacing or Image Position: refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from scipy import ndimage

from countyread.domain import Volume
from countyread.errors import NotAnalyzableError

logger = logging.getLogger(__name__)

AIR_HU = -1024
MIN_SLICES = 10
_GAP_LIMIT_STEPS = 3.0
_GAP_LIMIT_MM = 10.0
_UNEVEN_TOLERANCE = 0.10
_MAX_TILT_DEG = 30.0
_ORIENTATION_TOL = 2e-3  # direction cosines; ~0.1 deg


@dataclass(frozen=True, slots=True)
class SliceHeader:
    """Geometry and pixel mapping of one 2-D frame (a file, or a frame of a multi-frame)."""

    path: Path
    frame: int | None
    sop_instance_uid: str
    instance_number: int
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    spacing: tuple[float, float]
    shape: tuple[int, int]
    slope: float
    intercept: float


@dataclass(frozen=True, slots=True)
class LoadedVolume:
    """The volume plus what assembly had to do to it."""

    volume: Volume
    slice_thickness: float
    notes: tuple[str, ...]
    #: grid slices made up by interpolation across a gap (no acquired slice within a
    #: quarter step): what lies there was never imaged, see ``_resample_even``.
    interpolated: tuple[int, ...] = ()
    #: Instance Number of each grid slice's instance (nearest acquired one after
    #: resampling), the number a radiologist pages to in a viewer.
    instance_numbers: tuple[int, ...] = ()


def _floats(value: Any, n: int, what: str) -> tuple[float, ...]:
    if value is None or len(value) != n:
        raise NotAnalyzableError(f"missing or malformed {what}")
    return tuple(float(v) for v in value)


def _frame_headers(path: Path, ds: Dataset) -> list[SliceHeader]:
    """Headers of an Enhanced CT multi-frame instance (PS3.3 C.7.6.16.2)."""
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    out = []
    for idx, item in enumerate(ds.PerFrameFunctionalGroupsSequence):

        def group(keyword: str, item: Dataset = item) -> Dataset | None:
            seq = item.get(keyword) or shared.get(keyword)
            return seq[0] if seq else None

        pos = group("PlanePositionSequence")
        ori = group("PlaneOrientationSequence")
        meas = group("PixelMeasuresSequence")
        trans = group("PixelValueTransformationSequence")
        if pos is None or ori is None or meas is None:
            raise NotAnalyzableError("multi-frame CT without plane position/orientation")
        out.append(
            SliceHeader(
                path,
                idx,
                str(ds.SOPInstanceUID),
                idx + 1,
                _floats(pos.get("ImagePositionPatient"), 3, "Image Position (Patient)"),  # type: ignore[arg-type]
                _floats(ori.get("ImageOrientationPatient"), 6, "Image Orientation (Patient)"),
                _floats(meas.get("PixelSpacing"), 2, "Pixel Spacing"),  # type: ignore[arg-type]
                (int(ds.Rows), int(ds.Columns)),
                float(trans.get("RescaleSlope", 1) if trans else 1),
                float(trans.get("RescaleIntercept", 0) if trans else 0),
            )
        )
    return out


def read_headers(paths: tuple[Path, ...] | list[Path]) -> tuple[list[SliceHeader], float | None]:
    """Header pass (no pixel data): one :class:`SliceHeader` per frame, and the thickness."""
    headers: list[SliceHeader] = []
    thickness: list[float] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types on corrupt input
            logger.warning(
                "unreadable instance skipped",
                extra={"file": path.name, "error": type(exc).__name__},
            )
            continue
        if "PerFrameFunctionalGroupsSequence" in ds:
            headers.extend(_frame_headers(path, ds))
            shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
            meas = shared.get("PixelMeasuresSequence")
            if meas and meas[0].get("SliceThickness") is not None:
                thickness.append(float(meas[0].SliceThickness))
            continue
        if "PixelSpacing" not in ds:
            raise NotAnalyzableError("missing Pixel Spacing")
        headers.append(
            SliceHeader(
                path,
                None,
                str(ds.SOPInstanceUID),
                int(ds.get("InstanceNumber") or 0),
                _floats(ds.get("ImagePositionPatient"), 3, "Image Position (Patient)"),  # type: ignore[arg-type]
                _floats(ds.get("ImageOrientationPatient"), 6, "Image Orientation (Patient)"),
                _floats(ds.PixelSpacing, 2, "Pixel Spacing"),  # type: ignore[arg-type]
                (int(ds.Rows), int(ds.Columns)),
                float(ds.get("RescaleSlope", 1) or 1),
                float(ds.get("RescaleIntercept", 0) or 0),
            )
        )
        if ds.get("SliceThickness") not in (None, ""):
            thickness.append(float(ds.SliceThickness))
    return headers, (float(np.median(thickness)) if thickness else None)


def _same_frame_geometry(a: SliceHeader, b: SliceHeader) -> bool:
    """Same matrix, spacing and orientation up to the rounding scanners write (DS values
    carry 16 characters at most, PS3.5 6.2: 0.99999/0.00436 and 1/0.0044 are one plane)."""
    if a.shape != b.shape:
        return False
    if not np.allclose(a.spacing, b.spacing, rtol=1e-3, atol=1e-4):
        return False
    return bool(np.abs(np.subtract(a.orientation, b.orientation)).max() < _ORIENTATION_TOL)


def _consistent_group(headers: list[SliceHeader], notes: list[str]) -> list[SliceHeader]:
    groups: list[list[SliceHeader]] = []
    for h in headers:
        home = next((g for g in groups if _same_frame_geometry(g[0], h)), None)
        if home is None:
            groups.append([h])
        else:
            home.append(h)
    best = max(groups, key=len)
    others = len(headers) - len(best)
    if others:
        if others > 0.1 * len(headers):
            raise NotAnalyzableError(
                f"mixed orientations or matrix sizes in one series ({len(groups)} groups)"
            )
        notes.append(f"{others} instance(s) of another orientation/matrix dropped (localiser?)")
    return best


def plan_geometry(
    headers: list[SliceHeader],
) -> tuple[list[SliceHeader], npt.NDArray[np.float64], list[str]]:
    """Sort, deduplicate and check spacing; returns slices, per-slice positions along the normal
    and notes. Raises NotAnalyzableError for geometry we refuse."""
    notes: list[str] = []
    if not headers:
        raise NotAnalyzableError("no readable CT instances")
    group = _consistent_group(headers, notes)
    row_dir = np.asarray(group[0].orientation[:3])
    col_dir = np.asarray(group[0].orientation[3:])
    normal = np.cross(row_dir, col_dir)
    dist = np.array([np.dot(normal, h.position) for h in group])
    order = np.lexsort((np.array([h.instance_number for h in group]), dist))
    group = [group[i] for i in order]
    dist = dist[order]
    keep = np.r_[True, np.diff(dist) > 1e-3]
    if not keep.all():
        notes.append(f"{int((~keep).sum())} duplicate slice position(s) dropped")
        group = [h for h, k in zip(group, keep, strict=True) if k]
        dist = dist[keep]
    if len(group) < MIN_SLICES:
        raise NotAnalyzableError(f"only {len(group)} slices: not a volume (localiser?)")
    return group, dist, notes


def _tilt_shift(group: list[SliceHeader], dist: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """In-plane offset (rows, columns in pixels) of each slice relative to an orthogonal stack."""
    row_dir = np.asarray(group[0].orientation[:3])
    col_dir = np.asarray(group[0].orientation[3:])
    origin = np.asarray(group[0].position)
    offsets = np.array([np.asarray(h.position) - origin for h in group])
    along_rows = offsets @ row_dir / group[0].spacing[1]  # column index shift
    along_cols = offsets @ col_dir / group[0].spacing[0]  # row index shift
    return np.c_[along_cols, along_rows]


def _read_pixels(h: SliceHeader, cache: dict[Path, Any]) -> npt.NDArray[Any]:
    if h.frame is None:
        return pydicom.dcmread(h.path).pixel_array
    if h.path not in cache:
        cache.clear()
        cache[h.path] = pydicom.dcmread(h.path).pixel_array
    return np.asarray(cache[h.path][h.frame])


def load_volume(
    paths: tuple[Path, ...] | list[Path], series_uid: str | None = None
) -> LoadedVolume:
    """Read, sort and assemble one series into an int16 HU volume with its LPS affine."""
    headers, thickness = read_headers(paths)
    group, dist, notes = plan_geometry(headers)
    steps = np.diff(dist)
    step = float(np.median(steps))
    if step <= 0:
        raise NotAnalyzableError("slices do not advance along the normal")
    if steps.max() > max(_GAP_LIMIT_STEPS * step, _GAP_LIMIT_MM):
        raise NotAnalyzableError(f"missing slices: gap of {steps.max():.1f} mm in the series")
    shift = _tilt_shift(group, dist)
    in_plane = np.hypot(shift[:, 0] * group[0].spacing[0], shift[:, 1] * group[0].spacing[1])
    tilt_deg = float(np.degrees(np.arctan2(in_plane[-1], dist[-1] - dist[0])))
    if tilt_deg > _MAX_TILT_DEG:
        raise NotAnalyzableError(f"gantry tilt {tilt_deg:.1f} deg exceeds {_MAX_TILT_DEG:.0f} deg")
    tilted = tilt_deg > 0.1

    rows, cols = group[0].shape
    stack = np.empty((len(group), rows, cols), dtype=np.int16)
    cache: dict[Path, Any] = {}
    for k, h in enumerate(group):
        raw = _read_pixels(h, cache)
        if raw.shape != (rows, cols):
            raise NotAnalyzableError("pixel data size differs from Rows/Columns")
        hu: npt.NDArray[Any]
        if h.slope == 1.0 and raw.dtype.kind in "iu" and abs(h.intercept) < 32768:
            hu = raw.astype(np.int32) + round(h.intercept)
        else:
            hu = raw.astype(np.float32) * np.float32(h.slope) + np.float32(h.intercept)
        np.clip(hu, -32768, 32767, out=stack[k], casting="unsafe")
        if tilted:
            stack[k] = ndimage.shift(stack[k], shift[k], order=1, mode="constant", cval=AIR_HU)
    if tilted:
        notes.append(f"gantry tilt {tilt_deg:.1f} deg corrected by in-plane shift")

    uids = tuple(h.sop_instance_uid for h in group)
    numbers = tuple(h.instance_number for h in group)
    made_up: tuple[int, ...] = ()
    if np.abs(steps - step).max() > _UNEVEN_TOLERANCE * step:
        missing = int(np.round(steps / step).sum() - len(steps))
        what = f"{missing} missing slice(s)" if missing > 0 else "uneven slice spacing"
        stack, dist, nearest, made_up = _resample_even(stack, dist, step)
        uids = tuple(uids[i] for i in nearest)
        numbers = tuple(numbers[i] for i in nearest)
        notes.append(f"{what}: resampled to an even {step:.2f} mm step")

    row_dir = np.asarray(group[0].orientation[:3])
    col_dir = np.asarray(group[0].orientation[3:])
    normal = np.cross(row_dir, col_dir)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * group[0].spacing[1]
    affine[:3, 1] = col_dir * group[0].spacing[0]
    affine[:3, 2] = normal * step
    first = np.asarray(group[0].position, dtype=np.float64)
    # after tilt correction every slice shares slice 0's in-plane origin
    affine[:3, 3] = first + normal * (dist[0] - float(np.dot(normal, first)))
    for note in notes:
        logger.info("volume assembly", extra={"series_uid": series_uid, "note": note})
    volume = Volume(stack, affine, None, series_uid, uids)
    return LoadedVolume(
        volume, thickness if thickness is not None else step, tuple(notes), made_up, numbers
    )


def _resample_even(
    stack: npt.NDArray[np.int16], dist: npt.NDArray[np.float64], step: float
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.float64], npt.NDArray[np.intp], tuple[int, ...]]:
    """Linear interpolation along the normal onto an even grid.

    Returns the stack, the new positions, per new slice the nearest acquired slice (the
    instance that names it: key-image and SEG reference) and the new slices made up
    inside a gap: between acquired slices more than 1.5 steps apart and over a quarter
    step from both. Uneven but gap-free spacing makes none (every new slice is near data).
    """
    n = round((dist[-1] - dist[0]) / step) + 1
    target = dist[0] + step * np.arange(n)
    out = np.empty((n, *stack.shape[1:]), dtype=np.int16)
    upper = np.clip(np.searchsorted(dist, target, side="right"), 1, len(dist) - 1)
    lower = upper - 1
    for t, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        w = float(np.clip((target[t] - dist[lo]) / (dist[hi] - dist[lo]), 0.0, 1.0))
        out[t] = np.round(stack[lo] * (1 - w) + stack[hi] * w).astype(np.int16)
    nearest = np.abs(dist[None, :] - target[:, None]).argmin(axis=1)
    in_gap = (
        (dist[upper] - dist[lower] > 1.5 * step)
        & (target - dist[lower] > 0.25 * step)
        & (dist[upper] - target > 0.25 * step)
    )
    return out, target, nearest, tuple(int(k) for k in np.flatnonzero(in_gap))
