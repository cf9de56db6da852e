"""SEG: one binary segment per confirmed finding with a mask (PS3.3 A.51, C.8.20).

Only the source slices a mask touches are referenced and encoded, so a 300-slice chest
CT with three nodules yields a SEG of a few dozen frames instead of 300 x segments.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from countyread import __version__
from dicom_node.results.codes import segment_codes
from dicom_node.results.common import (
    MANUFACTURER,
    ConfirmedFinding,
    Family,
    SignedStudy,
    SourceSeries,
    apply_patient,
    contributing_equipment,
    person_name,
    series_number,
    tracking_uid,
)

logger = logging.getLogger(__name__)


def _segmentable(signed: SignedStudy) -> tuple[SourceSeries, list[ConfirmedFinding]] | None:
    with_mask = [f for f in signed.findings if f.mask is not None]
    if not with_mask:
        return None
    # One SEG references one series grid; the series holding the most masks wins.
    counts: dict[str, int] = {}
    for f in with_mask:
        counts[f.series_uid or ""] = counts.get(f.series_uid or "", 0) + 1
    series_uid = max(counts, key=lambda k: counts[k])
    source = signed.source(series_uid)
    if source is None:
        return None
    return source, [f for f in with_mask if f.series_uid == series_uid]


def _description(
    signed: SignedStudy, finding: ConfirmedFinding, number: int
) -> hd.seg.SegmentDescription:
    category, seg_type = segment_codes(finding.kind)
    algorithm = None
    if finding.model is not None and finding.source == "ai":
        algorithm = hd.AlgorithmIdentificationSequence(
            name=finding.model.name[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=finding.model.version[:64],
            parameters={"sha256": finding.model.sha256} if finding.model.sha256 else None,
        )
    # Accepted AI masks are automatic; anything a radiologist touched is semi-automatic.
    algo_type = (
        hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        if finding.verdict == "accepted" and algorithm is not None
        else hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
    )
    if algorithm is None:
        algo_type = hd.seg.SegmentAlgorithmTypeValues.MANUAL
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"{finding.kind} {finding.number}"[:64],
        segmented_property_category=category,
        segmented_property_type=seg_type,
        algorithm_type=algo_type,
        algorithm_identification=algorithm,
        tracking_uid=tracking_uid(signed.study_uid, finding),
        tracking_id=f"{finding.kind}-{finding.number}",
    )


_Placed = tuple[ConfirmedFinding, tuple[slice, slice, slice], np.ndarray]


def _label_map(
    placed: list[_Placed], source: SourceSeries, index: dict[str, int], shape: tuple[int, int, int]
) -> np.ndarray:
    """Frames x rows x columns: a uint8 label map, or a 4-D boolean stack on overlap.

    Disjoint segments (the usual case) go to highdicom as a label map, which makes the
    same BINARY SEG while skipping its costly per-segment overlap analysis of a 4-D stack
    (a CTA vessel mask can span 200 slices); only overlapping masks pay for the stack.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    for s, (_, window, part) in enumerate(placed):
        for dk in range(part.shape[0]):
            frame = index[source.sop_uids[window[0].start + dk]]
            region = labels[frame, window[1], window[2]]
            if (region[part[dk]] != 0).any():
                return _stack(placed, source, index, shape)
            region[part[dk]] = s + 1
    return labels


def _stack(
    placed: list[_Placed], source: SourceSeries, index: dict[str, int], shape: tuple[int, int, int]
) -> np.ndarray:
    stack = np.zeros((*shape, len(placed)), dtype=bool)
    for s, (_, window, part) in enumerate(placed):
        for dk in range(part.shape[0]):
            frame = index[source.sop_uids[window[0].start + dk]]
            stack[frame, window[1], window[2], s] |= part[dk]
    return stack


def build_seg(signed: SignedStudy) -> tuple[Dataset, dict[int, int]] | None:
    """Build the SEG; return it with finding id -> segment number, or None without masks."""
    picked = _segmentable(signed)
    if picked is None:
        return None
    source, found = picked
    n_slices = len(source)
    rows, cols = int(source.at(0).Rows), int(source.at(0).Columns)
    placed: list[_Placed] = []
    touched: set[int] = set()
    for f in found:
        assert f.mask is not None
        k0, j0, i0 = f.mask.offset
        dk, dj, di = f.mask.array.shape
        window = (
            slice(k0, min(k0 + dk, n_slices)),
            slice(j0, min(j0 + dj, rows)),
            slice(i0, min(i0 + di, cols)),
        )
        part = f.mask.array[: window[0].stop - k0, : window[1].stop - j0, : window[2].stop - i0]
        if k0 < 0 or j0 < 0 or i0 < 0 or not part.any():
            logger.warning(
                "mask outside the series grid skipped",
                extra={"study_uid": signed.study_uid, "finding_id": f.id},
            )
            continue
        placed.append((f, window, part))
        touched.update(range(window[0].start, window[0].stop))
    if not placed:
        return None
    # Resampled volumes may map two grid slices to one acquired instance: their masks
    # share that instance's frame (union), since a SEG frame derives from one source image.
    sops = list(dict.fromkeys(source.sop_uids[k] for k in sorted(touched)))
    index = {sop: n for n, sop in enumerate(sops)}
    numbers = {f.id: s + 1 for s, (f, _, _) in enumerate(placed)}
    descriptions = [_description(signed, f, s + 1) for s, (f, _, _) in enumerate(placed)]
    pixels = _label_map(placed, source, index, (len(sops), rows, cols))
    seg = hd.seg.Segmentation(
        source_images=[source.at(source.sop_uids.index(sop)) for sop in sops],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=signed.uid(Family.SEG, "series"),
        series_number=series_number(Family.SEG, signed.revision),
        sop_instance_uid=signed.uid(Family.SEG, "instance", source.series_uid),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="CountyRead",
        software_versions=__version__,
        device_serial_number="0",
        content_label="FINDINGS",
        content_description="Confirmed findings, radiologist-reviewed"[:64],
        content_creator_name=person_name(signed.reviewer.display_name),
        series_description=f"AI findings SEG r{signed.revision}",
        contributing_equipment=contributing_equipment(signed.models),
        specific_character_set="ISO_IR 192",
    )
    apply_patient(seg, signed.patient)
    return seg, numbers
