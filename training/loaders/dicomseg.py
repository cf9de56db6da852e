"""DICOM Segmentation objects plus the CT series they segment, to :class:`CTCase` and masks.

The CT goes through the service's own selection rules and volume assembly
(:mod:`inference.selection`, :mod:`inference.volume`), so a training case has exactly the
geometry the deployed model sees. Each SEG segment (PS3.3 C.8.20.4, Segment Description)
becomes a :class:`NoduleLabel` (voxel-weighted centroid in LPS mm, diameter of the sphere
of equal volume) and a :class:`SegmentMask` on the CT grid.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from countyread.domain import Volume
from countyread.errors import InvalidInputError, NotAnalyzableError
from inference.selection import (
    SelectionRules,
    read_series_header,
    rejection_reason,
    select_series,
)
from inference.volume import load_volume, read_headers
from training.loaders.segframes import SegFrame, paint, plane_step, read_frames, source_key
from training.loaders.types import CTCase, NoduleLabel

logger = logging.getLogger(__name__)

#: Segmentation Storage and Label Map Segmentation Storage (PS3.4 B.5).
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


@dataclass(frozen=True, slots=True)
class SegmentMask:
    """One segment on the CT grid, cropped: ``array`` starts at ``offset`` (k, j, i).

    ``array`` is bool for BINARY and LABELMAP SEGs and float32 fractions in [0, 1] for
    FRACTIONAL ones (probability or occupancy, as ``fractional_type`` says).
    """

    segment_number: int
    label: str
    property_type: str
    offset: tuple[int, int, int]
    array: npt.NDArray[Any]
    fractional_type: str | None = None

    def full(self, shape: tuple[int, int, int]) -> npt.NDArray[Any]:
        """The mask on the whole grid of ``shape``."""
        out = np.zeros(shape, dtype=self.array.dtype)
        k, j, i = self.offset
        dk, dj, di = self.array.shape
        out[k : k + dk, j : j + dj, i : i + di] = self.array
        return out


@dataclass(frozen=True, slots=True)
class SegCase:
    """A CT case whose ``case.nodules[n]`` is drawn by ``masks[n]``."""

    case: CTCase
    masks: tuple[SegmentMask, ...]
    empty_segments: tuple[int, ...]  # segment numbers described but without any pixel
    seg_uids: tuple[str, ...]
    notes: tuple[str, ...]  # what volume assembly did (resampling, tilt correction)


def _files(source: Path | Sequence[Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_dir():
            return sorted(p for p in root.rglob("*") if p.is_file())
        if root.is_file():
            return [root]
        raise InvalidInputError(f"missing DICOM folder or file: {root}")
    return [Path(p) for p in source]


def scan_files(files: list[Path]) -> tuple[list[Path], dict[str, list[Path]], dict[str, str]]:
    """SEG files, image files per series and each series' Frame of Reference UID."""
    segs: list[Path] = []
    images: dict[str, list[Path]] = {}
    frames_of_ref: dict[str, str] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            logger.debug("not a DICOM file, skipped", extra={"file": path.name})
            continue
        if str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES:
            segs.append(path)
        elif ds.get("SeriesInstanceUID") and ds.get("Rows"):  # an image, not SR/KOS
            images.setdefault(str(ds.SeriesInstanceUID), []).append(path)
            if ds.get("FrameOfReferenceUID"):
                frames_of_ref.setdefault(str(ds.SeriesInstanceUID), str(ds.FrameOfReferenceUID))
    return segs, images, frames_of_ref


def _referenced_series(seg: Dataset, images: dict[str, list[Path]],
                       frames_of_ref: dict[str, str]) -> str:
    """The segmented series: Referenced Series Sequence, else the one series sharing the
    SEG's Frame of Reference (PS3.3 C.7.4.1: one FoR means one patient coordinate system)."""
    named = [str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence") or ()
             if s.get("SeriesInstanceUID")]
    for uid in named:
        if uid in images:
            return uid
    if named:
        raise InvalidInputError(
            f"SEG {seg.SOPInstanceUID} segments series {named[0]}, which is not among the "
            f"{len(images)} image series given"
        )
    for_uid = str(seg.get("FrameOfReferenceUID") or "")
    same = sorted(uid for uid, f in frames_of_ref.items() if for_uid and f == for_uid)
    if not same:
        raise InvalidInputError(
            f"SEG {seg.SOPInstanceUID} names no series and no image series given shares its "
            "frame of reference"
        )
    if len(same) == 1:
        return same[0]
    # Several reconstructions of one acquisition: painting is by patient position, so the
    # SEG lands on whichever grid; take the series the service itself would analyse.
    headers = [read_series_header(uid, tuple(images[uid])) for uid in same]
    return select_series(headers, SelectionRules()).chosen.series_uid


def _segment_info(seg: Dataset) -> dict[int, tuple[str, str]]:
    info = {}
    for s in seg.get("SegmentSequence") or ():
        codes = s.get("SegmentedPropertyTypeCodeSequence") or [Dataset()]
        info[int(s.SegmentNumber)] = (
            str(s.get("SegmentLabel") or ""), str(codes[0].get("CodeMeaning") or "")
        )
    return info


def _label(mask: SegmentMask, volume: Volume, source: str) -> NoduleLabel:
    weights = np.asarray(mask.array, dtype=np.float64)
    total = float(weights.sum())
    idx = np.indices(weights.shape).reshape(3, -1).T + np.asarray(mask.offset)
    centroid = (idx * weights.reshape(-1, 1)).sum(axis=0) / total
    c = volume.index_to_lps(centroid)
    voxel_mm3 = float(abs(np.linalg.det(volume.affine[:3, :3])))
    diameter = float((6.0 * total * voxel_mm3 / np.pi) ** (1.0 / 3.0))
    return NoduleLabel((float(c[0]), float(c[1]), float(c[2])), diameter, source)


def _check_frame_of_reference(seg: Dataset, frames: list[SegFrame], ct_for: str | None) -> None:
    seg_for = str(seg.get("FrameOfReferenceUID") or "")
    if ct_for and seg_for and seg_for != ct_for and any(f.from_plane_position for f in frames):
        raise InvalidInputError(
            f"SEG {seg.SOPInstanceUID} plane positions are in frame of reference {seg_for}, "
            f"the CT series in {ct_for}"
        )


def _on_ct_slices(frames: list[SegFrame], volume: Volume) -> bool:
    """Every frame lies in the plane of a CT slice (parallel, within 5 % of a step)."""
    normal = volume.direction[:, 2]
    for f in frames:
        if abs(float(np.dot(np.cross(f.orientation[:3], f.orientation[3:]), normal))) < 0.9999:
            return False
    k = volume.lps_to_index(np.array([f.position for f in frames]))[:, 0]
    return bool(np.all(np.abs(k - np.rint(k)) < 0.05))


def _step(seg: Dataset, frames: list[SegFrame], volume: Volume) -> float:
    """Through-plane extent of one SEG frame, in this order: Spacing Between Slices; the CT
    step when every frame lies on a CT slice and no thicker slab is declared (sparse frames
    must not spread over the slices between them); the gap between the SEG's own planes;
    its Slice Thickness; the CT step."""
    shared = (seg.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    meas = (shared.get("PixelMeasuresSequence") or [Dataset()])[0]
    if meas.get("SpacingBetweenSlices"):
        return abs(float(meas.SpacingBetweenSlices))
    ct_step = volume.spacing[0]
    thickness = float(meas.get("SliceThickness") or 0)
    if frames and _on_ct_slices(frames, volume) and thickness <= 1.01 * ct_step:
        return ct_step
    return plane_step(frames, thickness or ct_step)


def _build_case(series_uid: str, paths: list[Path], seg_paths: list[Path], ct_for: str | None,
                rules: SelectionRules | None) -> SegCase:
    if rules is not None:
        reason = rejection_reason(read_series_header(series_uid, tuple(paths)), rules)
        if reason is not None:
            raise NotAnalyzableError(f"series {series_uid} is not analysable: {reason}")
    loaded = load_volume(paths, series_uid)
    volume = dataclasses.replace(loaded.volume, frame_of_reference_uid=ct_for)
    headers, _ = read_headers(paths)
    sources = {source_key(h): h for h in headers}
    by_segment: dict[int, list[SegFrame]] = {}
    info: dict[int, tuple[str, str]] = {}
    kinds: dict[int, str | None] = {}
    steps: dict[int, float] = {}
    uids = []
    for path in seg_paths:
        seg = pydicom.dcmread(path)
        uids.append(str(seg.SOPInstanceUID))
        frames = read_frames(seg, sources)
        _check_frame_of_reference(seg, frames, ct_for)
        step = _step(seg, frames, volume)
        # Segment numbers are per SEG object: two SEG files may both have a segment 1.
        base = max(info, default=0)
        fractional = str(seg.get("SegmentationFractionalType") or "") or None
        for number, names in _segment_info(seg).items():
            info[base + number] = names
            kinds[base + number] = fractional if seg.SegmentationType == "FRACTIONAL" else None
            steps[base + number] = step
        for f in frames:
            by_segment.setdefault(base + f.segment_number, []).append(f)
    masks, nodules, empty = [], [], []
    for number in sorted(info):
        label, prop = info[number]
        placed = paint(volume, by_segment[number], steps[number]) if number in by_segment else None
        if placed is None:
            if number in by_segment:
                raise InvalidInputError(f"segment {label or number} lies outside the CT volume")
            logger.warning("segment without pixels", extra={"series_uid": series_uid,
                                                            "segment": number})
            empty.append(number)
            continue
        mask = SegmentMask(number, label, prop, placed[0], placed[1], kinds[number])
        masks.append(mask)
        nodules.append(_label(mask, volume, f"dicom-seg:{label or prop or number}"))
    logger.info("dicom seg case loaded", extra={"series_uid": series_uid, "segments": len(masks),
                                                "empty": len(empty)})
    case = CTCase(series_uid, volume, tuple(nodules))
    return SegCase(case, tuple(masks), tuple(empty), tuple(uids), loaded.notes)


def load_dicom_seg(
    source: Path | Sequence[Path], *, rules: SelectionRules | None = None,
) -> list[SegCase]:
    """One :class:`SegCase` per segmented CT series in ``source`` (a folder or files).

    Every SEG must find its series among the files; several SEGs of one series join one
    case. ``rules`` (e.g. ``SelectionRules()``, what the CT nodule pipeline analyses)
    refuses a series the service would not analyse; None accepts any series that volume
    assembly accepts.
    """
    segs, images, frames_of_ref = scan_files(_files(source))
    if not segs:
        raise InvalidInputError("no DICOM Segmentation object among the files given")
    per_series: dict[str, list[Path]] = {}
    for path in segs:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        per_series.setdefault(_referenced_series(ds, images, frames_of_ref), []).append(path)
    return [
        _build_case(uid, images[uid], seg_paths, frames_of_ref.get(uid), rules)
        for uid, seg_paths in sorted(per_series.items())
    ]
