"""Training patches from chest phantoms, labelled by the phantom's ground truth.

Candidates come from the inference candidate generator itself, so the network learns the
distribution it will see: a candidate within a nodule's radius is positive (its mask is
that nodule's voxels), one far from every nodule is negative (vessels, fissures, wall).
Truth-centred, jittered copies add positives the generator missed; subsolid, small and
large nodules (the rarer, harder kinds) get more copies. Negatives are the head of the
ranked candidate list (what inference scores) plus a random tail; when a reference model
is configured each negative carries its score, so loading can keep the hard ones
(hard-negative mining). One ``.npz`` per seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from countyread.domain import Volume
from countyread.errors import NotAnalyzableError
from inference.ct_nodule.candidates import find_candidates, make_work_grid
from inference.ct_nodule.lungs import segment_lungs
from inference.ct_nodule.patches import PATCH, extract_patch, patch_coords, patch_spacing
from training.ct_nodule.config import DataConfig
from training.phantoms.ct import ChestCTConfig, CTPhantom, make_chest_ct

logger = logging.getLogger(__name__)

MIN_TRUTH_MM = 3.0
HARD_KINDS = ("ground_glass", "part_solid")
ScoreFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class CasePatches:
    patches: npt.NDArray[np.float16]  # N x PATCH^3, normalised HU
    masks: npt.NDArray[np.uint8]  # N x PATCH^3, target nodule voxels
    labels: npt.NDArray[np.uint8]  # N, 1 nodule / 0 not
    scores: npt.NDArray[np.float32]  # N, reference-model logit of negatives (0 if none)


def phantom_config(seed: int, data: DataConfig) -> ChestCTConfig:
    """The per-seed acquisition choices (deterministic from the seed)."""
    rng = np.random.default_rng([seed, 17])
    return ChestCTConfig(
        matrix=data.matrix,
        pixel_spacing_mm=round(float(rng.uniform(*data.pixel_spacing_mm)), 3),
        slice_thickness_mm=float(rng.choice(data.slice_thickness_mm)),
        n_nodules=data.n_nodules,
        nodule_size_mm=data.nodule_size_mm,
        mass_fraction=data.mass_fraction,
        vessel_points_per_tree=1600,
    )


MaskFn = Callable[[npt.NDArray[np.float64], float], npt.NDArray[np.uint8]]


@dataclass(frozen=True, slots=True)
class TruthSite:
    """One labelled nodule on the volume grid, and how to draw its mask on a patch."""

    centre_kji: npt.NDArray[np.float64]
    diameter_mm: float
    hard: bool  # one of the rarer, harder kinds: more truth-centred copies
    mask: MaskFn  # (patch centre kji, patch spacing mm) -> PATCH^3 uint8


def _instance_mask(phantom: CTPhantom, label: int) -> MaskFn:
    def draw(centre: npt.NDArray[np.float64], s: float) -> npt.NDArray[np.uint8]:
        coords = patch_coords(centre, s, phantom.volume.spacing)
        lab = ndimage.map_coordinates(
            phantom.instance_mask, coords, order=0, mode="constant", cval=0
        )
        return (lab == label).astype(np.uint8)

    return draw


def sphere_mask(
    centre_kji: npt.ArrayLike, diameter_mm: float, spacing: tuple[float, float, float]
) -> MaskFn:
    """A labelled sphere (real data without a voxel mask: LUNA16 centres and diameters)."""
    c0 = np.asarray(centre_kji, dtype=np.float64).reshape(3, 1, 1, 1)
    sp = np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)

    def draw(centre: npt.NDArray[np.float64], s: float) -> npt.NDArray[np.uint8]:
        mm = (patch_coords(centre, s, spacing) - c0) * sp
        return (np.sqrt((mm**2).sum(axis=0)) <= diameter_mm / 2.0).astype(np.uint8)

    return draw


def is_hard(kind: str | None, diameter_mm: float) -> bool:
    """Subsolid, small (< 6 mm) and large (> 20 mm) nodules are rarer and harder."""
    return kind in HARD_KINDS or diameter_mm < 6.0 or diameter_mm > 20.0


def phantom_sites(phantom: CTPhantom) -> list[TruthSite]:
    vol = phantom.volume
    return [
        TruthSite(
            np.asarray(vol.lps_to_index(t.center_lps), dtype=np.float64),
            t.mean_diameter_mm,
            is_hard(t.kind, t.mean_diameter_mm),
            _instance_mask(phantom, t.index + 1),
        )
        for t in phantom.nodules
        if t.mean_diameter_mm >= MIN_TRUTH_MM
    ]


def case_patches(
    phantom: CTPhantom, data: DataConfig, seed: int, score: ScoreFn | None = None
) -> CasePatches:
    return volume_patches(phantom.volume, phantom_sites(phantom), data, seed, score)


def volume_patches(
    vol: Volume,
    sites: list[TruthSite],
    data: DataConfig,
    seed: int,
    score: ScoreFn | None = None,
) -> CasePatches:
    """Candidate patches of one volume labelled by ``sites``, plus truth-centred copies."""
    rng = np.random.default_rng([seed, 29])
    lung = segment_lungs(vol)
    cands = find_candidates(make_work_grid(vol, lung), max_candidates=100_000)
    t_idx = np.array([t.centre_kji for t in sites]).reshape(-1, 3)
    t_rad = np.array([max(t.diameter_mm / 2.0, 2.0) for t in sites])
    sp = vol.spacing
    patches: list[npt.NDArray[np.float32]] = []
    masks: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    negatives = []
    for rank, c in enumerate(cands):
        dist = np.linalg.norm((t_idx - np.asarray(c.center_kji)) * np.asarray(sp), axis=1)
        s = patch_spacing(c.radius_mm)
        hit = np.flatnonzero(dist <= t_rad)
        if len(hit):
            t = sites[int(hit[np.argmin(dist[hit])])]
            patches.append(extract_patch(vol.array, c.center_kji, s, sp))
            masks.append(t.mask(np.asarray(c.center_kji), s))
            labels.append(1)
        elif (dist > t_rad + 3.0).all():
            negatives.append((rank, c))
    # the ranked head of the list is what inference sees; add a random tail too
    head = [(r, c) for r, c in negatives if r < data.head_ranks][: data.negatives_per_case * 2 // 3]
    rest = [(r, c) for r, c in negatives if r >= data.head_ranks]
    n_tail = min(len(rest), data.negatives_per_case - len(head))
    tail = [rest[i] for i in rng.choice(len(rest), n_tail, replace=False)] if n_tail > 0 else []
    taken = {r for r, _ in head + tail}
    # a larger cap scores ranks the head skips: the mined ones carry the reference score
    mined = [(r, c) for r, c in negatives if r < data.mine_ranks and r not in taken]
    n_before = len(patches)
    for _, c in head + tail + mined:
        s = patch_spacing(c.radius_mm)
        patches.append(extract_patch(vol.array, c.center_kji, s, sp))
        masks.append(np.zeros((PATCH, PATCH, PATCH), np.uint8))
        labels.append(0)
    scores = np.zeros(len(patches), np.float32)
    if score is not None and len(patches) > n_before:
        scores[n_before:] = score(np.stack(patches[n_before:])[:, None])
    for t in sites:
        for _ in range(2 * data.jitter_copies if t.hard else data.jitter_copies):
            jit = t.centre_kji + rng.uniform(-1.5, 1.5, 3) / np.asarray(sp)
            s = patch_spacing(t.diameter_mm / 2.0 * rng.uniform(0.8, 1.25))
            patches.append(extract_patch(vol.array, jit, s, sp))
            masks.append(t.mask(jit, s))
            labels.append(1)
    if not patches:
        return _empty()
    scores = np.r_[scores, np.zeros(len(patches) - len(scores), np.float32)]
    return CasePatches(
        np.stack(patches).astype(np.float16),
        np.stack(masks),
        np.asarray(labels, np.uint8),
        scores,
    )


def _empty() -> CasePatches:
    none = np.zeros((0, PATCH, PATCH, PATCH))
    return CasePatches(
        none.astype(np.float16),
        none.astype(np.uint8),
        np.zeros(0, np.uint8),
        np.zeros(0, np.float32),
    )


def onnx_scorer(model: Path) -> ScoreFn:
    """Logits of a shipped ONNX NoduleNet (one thread: builds run in parallel workers)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    def score(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = [sess.run(None, {"patch": x[i : i + 64]})[0][:, 0] for i in range(0, len(x), 64)]
        return np.concatenate(out).astype(np.float32)

    return score


def onnx_mask_runner(model: Path) -> ScoreFn:
    """Mask logits (N x 1 x PATCH^3) of a shipped ONNX NoduleNet, one thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    def masks(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(sess.run(None, {"patch": x})[1], dtype=np.float32)

    return masks


def build_case(seed: int, data: DataConfig, out_dir: Path) -> Path:
    """Make (or reuse) the patch file of one training seed."""
    path = out_dir / f"case_{seed}.npz"
    if path.exists():
        return path
    phantom = make_chest_ct(seed, phantom_config(seed, data))
    scorer = onnx_scorer(data.hard_negative_model) if data.hard_negative_model else None
    try:
        case = case_patches(phantom, data, seed, scorer)
    except NotAnalyzableError as exc:
        # the inference pipeline refuses such a volume too: nothing to learn from it
        logger.warning("training case skipped", extra={"seed": seed, "reason": str(exc)})
        case = _empty()
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, patches=case.patches, masks=case.masks, labels=case.labels, scores=case.scores
    )
    tmp.rename(path)
    logger.info(
        "training case written",
        extra={"seed": seed, "patches": len(case.labels), "positives": int(case.labels.sum())},
    )
    return path


def build_cases(seeds: list[int], data: DataConfig, out_dir: Path) -> list[Path]:
    """Build the missing case files in ``data.workers`` processes (each one thread)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in seeds if not (out_dir / f"case_{s}.npz").exists()]
    if todo and data.workers > 1:
        with ProcessPoolExecutor(data.workers) as pool:
            list(pool.map(build_case, todo, [data] * len(todo), [out_dir] * len(todo)))
    return [build_case(s, data, out_dir) for s in seeds]
