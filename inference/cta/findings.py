"""Findings, urgency and the SEG arrays from a finished :class:`CTAAnalysis`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from countyread.domain import Finding, Measurement, ModelRef, Urgency, Volume
from inference.cta.analysis import CTAAnalysis
from inference.cta.naming import OcclusionCall
from inference.cta.stenosis import StenosisCall

GRADE_ORDER = ("none", "mild", "moderate", "severe", "near-occlusion", "occlusion")
GRADE_ZH = {
    "mild": "轻度狭窄",
    "moderate": "中度狭窄",
    "severe": "重度狭窄",
    "near-occlusion": "次全闭塞",
    "occlusion": "闭塞",
}


def nearest_sop(volume: Volume, lps: npt.ArrayLike) -> str | None:
    if not volume.sop_instance_uids:
        return None
    k = int(np.clip(np.rint(volume.lps_to_index(lps)[0]), 0, volume.shape[0] - 1))
    return volume.sop_instance_uids[k]


def stenosis_finding(
    a: CTAAnalysis, call: StenosisCall, volume: Volume, series_uid: str, model: ModelRef
) -> Finding:
    p = a.profiles[call.vessel].points[call.index]
    meas = [
        Measurement("min_diameter", call.min_diameter_mm, "mm"),
        Measurement("reference_diameter", call.reference_mm, "mm"),
        Measurement("length", call.length_mm, "mm"),
    ]
    if call.grade == "near-occlusion":
        # DESIGN.md 5: near-occlusion reports the residual lumen, not a percentage
        meas.insert(0, Measurement("residual_lumen", call.min_diameter_mm, "mm"))
    else:
        meas.insert(0, Measurement("stenosis_percent", call.percent, "%"))
    return Finding(
        kind="stenosis",
        probability=0.9 if call.percent >= 50 else 0.7,
        center_lps=(float(p[0]), float(p[1]), float(p[2])),
        series_uid=series_uid,
        sop_instance_uid=nearest_sop(volume, p),
        measurements=tuple(meas),
        category=call.grade,
        attributes=(
            ("vessel", call.vessel),
            ("grade", call.grade),
            ("method", call.method),
            ("calcified", "yes" if call.calcified else "no"),
        ),
        model=model,
        key_image=f"scpr_{call.vessel}",
    )


def occlusion_finding(
    a: CTAAnalysis, call: OcclusionCall, volume: Volume, series_uid: str, model: ModelRef
) -> Finding:
    p = a.node_lps[call.node]
    key = f"scpr_{call.vessel}" if call.vessel in a.profiles else "mip_coronal"
    return Finding(
        kind="occlusion",
        probability=0.85,
        center_lps=(float(p[0]), float(p[1]), float(p[2])),
        series_uid=series_uid,
        sop_instance_uid=nearest_sop(volume, p),
        category="occlusion",
        attributes=(("vessel", call.vessel), ("grade", "occlusion"), ("reason", call.reason)),
        model=model,
        key_image=key,
    )


def worst_grade(findings: list[Finding]) -> str:
    grades = [f.attribute("grade") or "none" for f in findings]
    return max(grades, key=GRADE_ORDER.index, default="none")


def urgency_of(grade: str, not_traced: int = 0) -> Urgency:
    """Study urgency from the worst grade; a named vessel that could not be traced through
    although contrast fills its expected course is at least urgent: on fresh phantoms two
    of the five such vessels held 85 % and 96 % stenoses (the segmentation breaks at a
    tight waist), so an untraced vessel is a reason to read the study soon."""
    if grade in ("occlusion", "near-occlusion"):
        return Urgency.CRITICAL
    if grade == "severe" or not_traced:
        return Urgency.URGENT
    return Urgency.ROUTINE


def vessel_labels(a: CTAAnalysis) -> tuple[npt.NDArray[np.uint8], list[str]]:
    """Work-grid label volume: each lumen voxel takes its nearest named centreline."""
    names = sorted(a.naming.vessels)
    labels = np.zeros(a.grid.shape, dtype=np.uint8)
    nodes, ids = [], []
    for n, name in enumerate(names):
        v = list(a.naming.vessels[name].nodes)
        nodes.append(a.skeleton.points[v])
        ids.append(np.full(len(v), n + 1, dtype=np.uint8))
    vox = np.argwhere(a.seg.vessels)
    if not nodes or len(vox) == 0:
        return labels, names
    tree = cKDTree(np.vstack(nodes))
    dist, idx = tree.query(vox, distance_upper_bound=12.0)
    lab = np.concatenate(ids)
    ok = np.isfinite(dist)
    labels[tuple(vox[ok].T)] = lab[idx[ok]]
    return labels, names


def source_crop(
    a: CTAAnalysis, labels: npt.NDArray[np.uint8], label: int, volume: Volume
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]] | None:
    """One vessel's mask on the source (acquired) grid, cropped, with its (k, j, i) origin."""
    where = np.argwhere(labels == label)
    if len(where) == 0:
        return None
    step = np.asarray(a.grid.step)
    lo = np.maximum(np.floor((where.min(0) - 1) * step).astype(np.int64), 0)
    hi = np.minimum(np.ceil((where.max(0) + 1) * step).astype(np.int64) + 1, volume.shape)
    axes = [np.arange(lo[d], hi[d]) for d in range(3)]
    wk = [
        np.clip(np.rint(ax / step[d]).astype(np.int64), 0, a.grid.shape[d] - 1)
        for d, ax in enumerate(axes)
    ]
    crop = labels[np.ix_(wk[0], wk[1], wk[2])] == label
    return crop, lo
