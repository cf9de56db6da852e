"""The CTA stages on an assembled volume, top to bottom, with a timing per stage:

``resample -> segment (ONNX) -> bone separation -> contrast check -> centrelines ->
naming -> radius profiles -> stenosis``. No I/O here; :mod:`inference.cta.pipeline`
does selection, DICOM reading, findings and renders around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

from countyread.domain import Volume
from inference.cta.blur import estimate_blur
from inference.cta.centerline import Skeleton, bridge_gaps, skeletonize
from inference.cta.grid import WorkGrid, resample, work_grid
from inference.cta.naming import Naming, OcclusionCall, name_vessels
from inference.cta.profile import Intensities, Profile, estimate_intensities, measure, sample_lps
from inference.cta.segment import Predict, Segmentation, calcified_plaques, segment, separate_bone
from inference.cta.select import check_arterial
from inference.cta.stenosis import StenosisCall, assess

WORK_SPACING_MM = 1.0
FREE_END_PREFIXES = ("M1", "A1", "P1", "ECA")
BRANCH_PREFIXES = ("M1", "A1", "P1", "ECA")
GATE_GROW_VOXELS = 2
#: an occlusion call is withdrawn when at least this share of its expected course (the
#: other side's named vessel mirrored, x -> -x) is contrast-filled. Issue 5, seeds
#: 701-710 and 611-613: open vessels whose naming failed read 0.94-1.00, true
#: occlusions 0.03-0.55.
PATENT_COURSE_FRACTION = 0.8
MIN_COURSE_NODES = 8
_MIRROR = np.array([-1.0, 1.0, 1.0])

F64 = npt.NDArray[np.float64]


@dataclass(slots=True)
class Timer:
    timings: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round((now - self._t) * 1000, 1)
        self._t = now


@dataclass(frozen=True, slots=True)
class CTAAnalysis:
    grid: WorkGrid
    hu: npt.NDArray[np.float32]  # work-grid HU
    seg: Segmentation
    skeleton: Skeleton
    node_lps: F64
    naming: Naming
    intensities: Intensities
    profiles: dict[str, Profile]
    stenoses: dict[str, StenosisCall]


def _lookup(grid: WorkGrid, mask: npt.NDArray[np.bool_]) -> Callable[[F64], npt.NDArray[np.bool_]]:
    inv = np.linalg.inv(grid.affine)
    hi = np.asarray(grid.shape) - 1

    def get(pts: F64) -> npt.NDArray[np.bool_]:
        flat = pts.reshape(-1, 3)
        ijk = flat @ inv[:3, :3].T + inv[:3, 3]
        kji = np.clip(np.rint(ijk[:, ::-1]).astype(np.int64), 0, hi)
        return np.asarray(mask[tuple(kji.T)]).reshape(pts.shape[:-1])

    return get


def analyze_volume(
    volume: Volume, predict: Predict, timer: Timer | None = None, logit_threshold: float = 0.0
) -> CTAAnalysis:
    """Run every measurement stage; raises NotAnalyzableError for non-arterial series."""
    tm = timer or Timer()
    grid = work_grid(volume, WORK_SPACING_MM)
    hu = resample(volume, grid)
    tm.lap("resample")
    voxel_mm3 = WORK_SPACING_MM**3
    seg = segment(hu, predict, voxel_mm3, logit_threshold)
    tm.lap("segmentation")
    seg = replace(seg, bone=separate_bone(hu, seg.vessels))
    tm.lap("bone_separation")
    sk = bridge_gaps(skeletonize(seg.vessels, WORK_SPACING_MM), WORK_SPACING_MM)
    node_lps = grid.to_lps(sk.points) if len(sk.points) else np.zeros((0, 3))
    tm.lap("centerlines")
    naming = name_vessels(sk, node_lps)
    tm.lap("naming")
    big = [n for v in naming.vessels.values() if v.name[:3] in ("CCA", "ICA") for n in v.nodes]
    centre_hu = sample_lps(volume, node_lps[big]) if big else np.zeros(0)
    inten = estimate_intensities(volume, centre_hu)
    check_arterial(float(seg.vessels.sum()) * voxel_mm3, inten.lumen_hu, carotid_traced=bool(big))
    # sections may spread a little beyond the mask (partial volume) but never into bone
    gate_mask = ndimage.binary_dilation(seg.vessels, iterations=GATE_GROW_VOXELS) & ~seg.bone
    calcium_hu = max(inten.lumen_hu + 200.0, 600.0)
    naming = confirm_occlusions(naming, node_lps, hu, grid, inten)
    plaque_mask = ndimage.binary_dilation(calcified_plaques(hu, seg.vessels, calcium_hu))
    gate, plaque = _lookup(grid, gate_mask), _lookup(grid, plaque_mask)
    inside = _lookup(grid, seg.vessels & ~plaque_mask)
    carotids = [
        node_lps[list(v.nodes)] for v in naming.vessels.values() if v.name[:3] in ("CCA", "ICA")
    ]
    blur = estimate_blur(volume, carotids, inten)
    profiles: dict[str, Profile] = {}
    for name, v in naming.vessels.items():
        nodes = list(v.nodes)
        hint = float(np.median(sk.radius[nodes]))
        near = _foreign(naming, name, node_lps)
        prof = measure(volume, node_lps[nodes], hint, inten, gate, plaque, inside, near)
        if blur is not None:
            prof = replace(prof, blur_mm=blur.along(prof.tangents))
        profiles[name] = prof
    tm.lap("radius_profiles")
    calls: dict[str, StenosisCall] = {}
    first: dict[str, StenosisCall | None] = {
        n: assess(
            n, p, free_end=n.startswith(FREE_END_PREFIXES), branch=n.startswith(BRANCH_PREFIXES)
        )
        for n, p in profiles.items()
    }
    for name, call in first.items():
        if call is None:
            continue
        if name.startswith("ICA"):
            other = "ICA_R" if name.endswith("L") else "ICA_L"
            ref = _typical_diameter(profiles.get(other))
            call = assess(name, profiles[name], free_end=False, contralateral_ref_mm=ref) or call
        calls[name] = call
    tm.lap("stenosis")
    return CTAAnalysis(grid, hu, seg, sk, node_lps, naming, inten, profiles, calls)


#: the vessel a named vessel continues from (its nodes are not foreign to it)
PARENTS = {"ICA": ("CCA",), "ECA": ("CCA",), "M1": ("ICA",), "A1": ("ICA",), "P1": ("BA",)}


def confirm_occlusions(
    naming: Naming, node_lps: F64, hu: npt.NDArray[np.float32], grid: WorkGrid, inten: Intensities
) -> Naming:
    """Keep an occlusion call only where the image shows the vessel is really absent.

    Naming calls a vessel occluded when it cannot trace it, which is also what a gap in
    the centreline graph or a wrong branch choice looks like; an occlusion makes the
    study critical, so the call must rest on the image: along the expected course (the
    other side's vessel mirrored) an open vessel is contrast, an occluded one soft
    tissue. Contrast here is HU above half-way from tissue to lumen but below calcium
    and bone (bone at the skull base lies along the carotid's course), one voxel of
    slack for asymmetry. A withdrawn call is kept as ``not_traced`` (no urgency).
    Without the other side's vessel there is no expected course and the call stands.
    """
    if not naming.occlusions:
        return naming
    low = inten.tissue_hu + 0.5 * (inten.lumen_hu - inten.tissue_hu)
    high = max(inten.lumen_hu + 200.0, 600.0)
    lit = _lookup(grid, ndimage.maximum_filter((hu > low) & (hu < high), size=3))
    keep: list[OcclusionCall] = []
    withdrawn: list[OcclusionCall] = []
    for call in naming.occlusions:
        kind, side = call.vessel.split("_")
        twin = naming.vessels.get(f"{kind}_{'R' if side == 'L' else 'L'}")
        if twin is None or len(twin.nodes) < MIN_COURSE_NODES:
            keep.append(call)
            continue
        course = node_lps[list(twin.nodes)] * _MIRROR
        if float(np.mean(lit(course))) >= PATENT_COURSE_FRACTION:
            withdrawn.append(call)
        else:
            keep.append(call)
    return replace(naming, occlusions=tuple(keep), not_traced=naming.not_traced + tuple(withdrawn))


def _foreign(naming: Naming, name: str, node_lps: F64) -> Callable[[F64], F64] | None:
    """Distance to the nearest centreline node of any vessel but ``name`` and its parent."""
    kind, side = name.split("_")[0], name.split("_")[-1]
    own = set(naming.vessels[name].nodes)
    for parent in PARENTS.get(kind, ()):
        key = parent if parent == "BA" else f"{parent}_{side}"
        if key in naming.vessels:
            own |= set(naming.vessels[key].nodes)
    if kind == "BA":
        for key in ("VA_L", "VA_R"):
            if key in naming.vessels:
                own |= set(naming.vessels[key].nodes)
    keep = np.ones(len(node_lps), dtype=bool)
    keep[list(own)] = False
    if not keep.any():
        return None
    tree = cKDTree(node_lps[keep])

    def dist(pts: F64) -> F64:
        d, _ = tree.query(pts.reshape(-1, 3))
        return np.asarray(d, dtype=np.float64).reshape(pts.shape[:-1])

    return dist


def _typical_diameter(prof: Profile | None) -> float | None:
    if prof is None or len(prof.diameter_mm) < 6:
        return None
    return float(np.median(prof.diameter_mm))
