"""Frames of a DICOM Segmentation, each placed in patient space, and painted onto a CT grid.

A SEG frame is a 2-D plane (PS3.3 C.8.20.2, Multi-frame Functional Groups C.7.6.16): its
geometry is the frame's Plane Position / Plane Orientation / Pixel Measures (per-frame or
shared), or, where a SEG omits them, that of the source image it derives from
(DerivationImageSequence > SourceImageSequence > ReferencedSOPInstanceUID). Painting maps
every CT voxel of the segment's bounding box back into the nearest frame plane (nearest
neighbour), so any orientation, in-plane resolution or frame order lands on the CT grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from countyread.domain import Volume
from countyread.errors import InvalidInputError
from inference.volume import SliceHeader

#: SegmentationType (PS3.3 C.8.20.2.3); LABELMAP is the Label Map Segmentation IOD (2024).
SEG_TYPES = ("BINARY", "FRACTIONAL", "LABELMAP")


@dataclass(frozen=True, slots=True)
class SegFrame:
    """One frame of one segment: its plane in LPS mm and its pixel values in [0, 1]."""

    segment_number: int
    position: tuple[float, float, float]
    orientation: tuple[float, ...]  # row direction (3), column direction (3)
    spacing: tuple[float, float]  # (between rows, between columns) mm, as Pixel Spacing
    pixels: npt.NDArray[Any]  # bool (BINARY, LABELMAP) or float32 (FRACTIONAL)
    from_plane_position: bool


def _item(pf: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    seq = pf.get(keyword) or shared.get(keyword)
    return seq[0] if seq else None


#: A source image: (SOP Instance UID, 0-based frame of a multi-frame image or None).
SourceKey = tuple[str, int | None]


def source_key(header: SliceHeader) -> SourceKey:
    return header.sop_instance_uid, header.frame


def _source(pf: Dataset) -> SourceKey | None:
    """The image a frame derives from; ReferencedFrameNumber (1-based) picks the frame of
    an Enhanced CT source (PS3.3 C.7.6.16.2.6, Derivation Image Macro)."""
    for deriv in pf.get("DerivationImageSequence") or ():
        for src in deriv.get("SourceImageSequence") or ():
            if src.get("ReferencedSOPInstanceUID"):
                frame = src.get("ReferencedFrameNumber")
                if isinstance(frame, MultiValue):  # VM 1-n; a SEG frame derives from one
                    frame = frame[0] if len(frame) == 1 else None
                return str(src.ReferencedSOPInstanceUID), (int(frame) - 1 if frame else None)
    return None


def _values(pixels: npt.NDArray[Any], ds: Dataset, seg_type: str) -> npt.NDArray[Any]:
    if seg_type == "FRACTIONAL":
        top = float(ds.get("MaximumFractionalValue") or 255)
        return np.asarray(pixels, dtype=np.float32) / np.float32(top)
    return np.asarray(pixels) > 0


def read_frames(ds: Dataset, sources: Mapping[SourceKey, SliceHeader]) -> list[SegFrame]:
    """Every non-empty (segment, frame) of ``ds``, with geometry resolved.

    ``sources`` maps :func:`source_key` to the header of each image (or frame) of the
    referenced series, used when a frame lacks its own plane position, orientation or
    pixel spacing.
    """
    seg_type = str(ds.get("SegmentationType") or "").upper()
    if seg_type not in SEG_TYPES:
        raise InvalidInputError(f"SEG {ds.SOPInstanceUID}: unknown SegmentationType {seg_type!r}")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        raise InvalidInputError(f"SEG {ds.SOPInstanceUID} has no per-frame functional groups")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    numbers = [int(s.SegmentNumber) for s in ds.get("SegmentSequence") or ()]
    pixels = np.asarray(ds.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape[0] != len(per_frame):
        raise InvalidInputError(
            f"SEG {ds.SOPInstanceUID}: {pixels.shape[0]} frames of pixels, "
            f"{len(per_frame)} frame descriptions"
        )
    out: list[SegFrame] = []
    for n, pf in enumerate(per_frame):
        if not pixels[n].any():
            continue
        pos, ori, meas = (
            _item(pf, shared, k)
            for k in ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")
        )
        key = _source(pf)
        src = sources.get(key) if key is not None else None
        position = pos.get("ImagePositionPatient") if pos else None
        orientation = ori.get("ImageOrientationPatient") if ori else None
        spacing = meas.get("PixelSpacing") if meas else None
        if position is None or orientation is None or spacing is None:
            if src is None:
                raise InvalidInputError(
                    f"SEG {ds.SOPInstanceUID} frame {n + 1}: no plane position and no source "
                    "image of the referenced series"
                )
            position = position if position is not None else src.position
            orientation = orientation if orientation is not None else src.orientation
            spacing = spacing if spacing is not None else src.spacing
        geometry = (
            (float(position[0]), float(position[1]), float(position[2])),
            tuple(float(v) for v in orientation),
            (float(spacing[0]), float(spacing[1])),
        )
        if seg_type == "LABELMAP":
            # A label map frame holds segment numbers as pixel values (PS3.3 C.8.20.2.3).
            split = [(int(v), pixels[n] == v) for v in np.unique(pixels[n]) if v > 0]
        else:
            ident = _item(pf, shared, "SegmentIdentificationSequence")
            if ident is not None:
                number = int(ident.ReferencedSegmentNumber)
            elif len(numbers) == 1:
                number = numbers[0]
            else:
                raise InvalidInputError(
                    f"SEG {ds.SOPInstanceUID} frame {n + 1} names no segment"
                )
            split = [(number, _values(pixels[n], ds, seg_type))]
        for number, values in split:
            out.append(SegFrame(number, *geometry, values, pos is not None))
    return out


def plane_step(frames: list[SegFrame], fallback: float) -> float:
    """Distance between SEG planes: the smallest gap between distinct frame planes along the
    first frame's normal (all segments together), or ``fallback`` with a single plane."""
    if not frames:
        return fallback
    normal = np.cross(frames[0].orientation[:3], frames[0].orientation[3:])
    d = np.unique(np.round([np.dot(normal, f.position) for f in frames], 3))
    gaps = np.diff(d)
    gaps = gaps[gaps > 1e-3]
    return float(gaps.min()) if gaps.size else fallback


def _merge_same_plane(frames: list[SegFrame]) -> list[SegFrame]:
    """Frames of one segment at one position (two SEG files, repeats) become one, by max."""
    merged: dict[tuple[float, ...], SegFrame] = {}
    for f in frames:
        key = tuple(np.round(f.position, 3))
        if key in merged:
            f = replace(f, pixels=np.maximum(merged[key].pixels, f.pixels))
        merged[key] = f
    return list(merged.values())


@dataclass(frozen=True, slots=True)
class _Plan:
    """Frames of one segment sharing orientation, spacing and matrix, sorted along the normal."""

    frames: list[SegFrame]
    dist: npt.NDArray[np.float64]
    row_dir: npt.NDArray[np.float64]
    col_dir: npt.NDArray[np.float64]
    normal: npt.NDArray[np.float64]
    half_step: float
    stack: npt.NDArray[Any]  # frames x rows x columns, in ``frames`` order
    origins: npt.NDArray[np.float64]  # frames x 3: each frame's Image Position

    def sample(self, pts: npt.NDArray[np.float64], dtype: Any) -> npt.NDArray[Any]:
        """Value at LPS points ``pts`` (N x 3) from the nearest plane; 0 where none covers."""
        d = pts @ self.normal
        if len(self.dist) == 1:
            near = np.zeros(len(d), dtype=int)
        else:
            up = np.clip(np.searchsorted(self.dist, d), 1, len(self.dist) - 1)
            near = np.where(np.abs(d - self.dist[up - 1]) <= np.abs(d - self.dist[up]), up - 1, up)
        # Strictly inside half a step: a voxel exactly between two planes goes to neither side
        # twice, and an aligned grid's neighbouring slice (one full step away) never counts.
        ok = np.abs(d - self.dist[near]) < self.half_step - 1e-4
        delta = pts - self.origins[near]
        spacing = self.frames[0].spacing
        col = np.floor(delta @ self.row_dir / spacing[1] + 0.5).astype(int)
        row = np.floor(delta @ self.col_dir / spacing[0] + 0.5).astype(int)
        rows, cols = self.frames[0].pixels.shape
        ok &= (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        vals = np.zeros(len(d), dtype=dtype)
        if ok.any():
            vals[ok] = self.stack[near[ok], row[ok], col[ok]]
        return vals


def paint(
    volume: Volume, frames: list[SegFrame], step: float
) -> tuple[tuple[int, int, int], npt.NDArray[Any]] | None:
    """Paint one segment's frames onto the CT grid; ``(offset, cropped array)`` or None.

    A CT voxel takes the value of the nearest frame plane when it lies within half a SEG
    plane ``step`` of it and inside that frame (nearest pixel).
    """
    fractional = any(f.pixels.dtype != np.bool_ for f in frames)
    dtype = np.float32 if fractional else np.bool_
    groups: dict[tuple[Any, ...], list[SegFrame]] = {}
    for f in frames:
        key = (tuple(np.round(f.orientation, 3)), tuple(np.round(f.spacing, 4)),
               f.pixels.shape)
        groups.setdefault(key, []).append(f)
    boxes, plans = [], []
    for group in groups.values():
        group = _merge_same_plane(group)
        row_dir = np.asarray(group[0].orientation[:3])
        col_dir = np.asarray(group[0].orientation[3:])
        normal = np.cross(row_dir, col_dir)
        half = 0.5 * step
        dist = np.array([np.dot(normal, f.position) for f in group])
        order = np.argsort(dist, kind="stable")
        group = [group[i] for i in order]
        corners = []
        for f in group:
            rr, cc = np.nonzero(f.pixels)
            for r in (rr.min() - 0.5, rr.max() + 0.5):
                for c in (cc.min() - 0.5, cc.max() + 0.5):
                    p = (np.asarray(f.position) + c * f.spacing[1] * row_dir
                         + r * f.spacing[0] * col_dir)
                    corners += [p - half * normal, p + half * normal]
        kji = volume.lps_to_index(np.asarray(corners))
        boxes.append((np.floor(kji.min(axis=0)), np.ceil(kji.max(axis=0))))
        plans.append(_Plan(group, dist[order], row_dir, col_dir, normal, half,
                           np.stack([f.pixels for f in group]),
                           np.array([f.position for f in group], dtype=np.float64)))
    lo = np.clip(np.min([b[0] for b in boxes], axis=0), 0, None).astype(int)
    hi = np.minimum(np.max([b[1] for b in boxes], axis=0).astype(int) + 1, volume.shape)
    if np.any(hi <= lo):
        return None
    out = np.zeros(tuple(hi - lo), dtype=dtype)
    jj, ii = np.mgrid[lo[1]:hi[1], lo[2]:hi[2]]
    for k in range(lo[0], hi[0]):
        pts = volume.index_to_lps(np.c_[np.full(jj.size, k), jj.ravel(), ii.ravel()])
        plane = out[k - lo[0]].reshape(-1)
        for plan in plans:
            np.maximum(plane, plan.sample(pts, dtype), out=plane)
    if not out.any():
        return None
    nz = np.nonzero(out)
    a = np.array([x.min() for x in nz])
    b = np.array([x.max() for x in nz]) + 1
    crop = out[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
    offset = lo + a
    return (int(offset[0]), int(offset[1]), int(offset[2])), np.ascontiguousarray(crop)
