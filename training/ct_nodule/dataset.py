"""Training patches from chest phantoms, labelled by the phantom's ground truth.

Candidates come from the inference candidate generator itself, so the network learns the
distribution it will see: a candidate within a nodule's radius is positive (its mask is
that nodule's voxels), one far from every nodule is negative (vessels, fissures, wall).
Truth-centred, jittered copies add positives the generator missed. One ``.npz`` per seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.ct_nodule.candidates import find_candidates, make_work_grid
from inference.ct_nodule.lungs import segment_lungs
from inference.ct_nodule.patches import PATCH, extract_patch, patch_coords, patch_spacing
from training.ct_nodule.config import DataConfig
from training.phantoms.ct import ChestCTConfig, CTPhantom, make_chest_ct

logger = logging.getLogger(__name__)

MIN_TRUTH_MM = 3.0


@dataclass(frozen=True, slots=True)
class CasePatches:
    patches: npt.NDArray[np.float16]  # N x PATCH^3, normalised HU
    masks: npt.NDArray[np.uint8]  # N x PATCH^3, target nodule voxels
    labels: npt.NDArray[np.uint8]  # N, 1 nodule / 0 not


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


def _mask_patch(
    instance: npt.NDArray[np.uint16],
    label: int,
    centre: npt.ArrayLike,
    s: float,
    spacing: tuple[float, float, float],
) -> npt.NDArray[np.uint8]:
    coords = patch_coords(centre, s, spacing)
    lab = ndimage.map_coordinates(instance, coords, order=0, mode="constant", cval=0)
    return (lab == label).astype(np.uint8)


def case_patches(phantom: CTPhantom, data: DataConfig, seed: int) -> CasePatches:
    vol = phantom.volume
    rng = np.random.default_rng([seed, 29])
    lung = segment_lungs(vol)
    cands = find_candidates(make_work_grid(vol, lung), max_candidates=100_000)
    truths = [t for t in phantom.nodules if t.mean_diameter_mm >= MIN_TRUTH_MM]
    t_idx = np.array([vol.lps_to_index(t.center_lps) for t in truths]).reshape(-1, 3)
    t_rad = np.array([max(t.mean_diameter_mm / 2.0, 2.0) for t in truths])
    sp = vol.spacing
    patches: list[npt.NDArray[np.float32]] = []
    masks: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    negatives = []
    for rank, c in enumerate(cands):
        mm = (
            (t_idx - np.asarray(c.center_kji)) * np.asarray(sp) if len(truths) else np.zeros((0, 3))
        )
        dist = np.linalg.norm(mm, axis=1)
        s = patch_spacing(c.radius_mm)
        hit = np.flatnonzero(dist <= t_rad)
        if len(hit):
            t = truths[int(hit[np.argmin(dist[hit])])]
            patches.append(extract_patch(vol.array, c.center_kji, s, sp))
            masks.append(_mask_patch(phantom.instance_mask, t.index + 1, c.center_kji, s, sp))
            labels.append(1)
        elif (dist > t_rad + 3.0).all() if len(truths) else True:
            negatives.append((rank, c))
    # the ranked head of the list is what inference sees; add a random tail too
    head = [c for r, c in negatives if r < 200][: data.negatives_per_case * 2 // 3]
    rest = [c for r, c in negatives if r >= 200]
    n_tail = min(len(rest), data.negatives_per_case - len(head))
    tail = [rest[i] for i in rng.choice(len(rest), n_tail, replace=False)] if n_tail > 0 else []
    for c in head + tail:
        s = patch_spacing(c.radius_mm)
        patches.append(extract_patch(vol.array, c.center_kji, s, sp))
        masks.append(np.zeros((PATCH, PATCH, PATCH), np.uint8))
        labels.append(0)
    for t, centre in zip(truths, t_idx, strict=True):
        for _ in range(data.jitter_copies):
            jit = centre + rng.uniform(-1.5, 1.5, 3) / np.asarray(sp)
            r = t.mean_diameter_mm / 2.0 * rng.uniform(0.8, 1.25)
            s = patch_spacing(r)
            patches.append(extract_patch(vol.array, jit, s, sp))
            masks.append(_mask_patch(phantom.instance_mask, t.index + 1, jit, s, sp))
            labels.append(1)
    return CasePatches(
        np.stack(patches).astype(np.float16), np.stack(masks), np.asarray(labels, np.uint8)
    )


def build_case(seed: int, data: DataConfig, out_dir: Path) -> Path:
    """Make (or reuse) the patch file of one training seed."""
    path = out_dir / f"case_{seed}.npz"
    if path.exists():
        return path
    phantom = make_chest_ct(seed, phantom_config(seed, data))
    case = case_patches(phantom, data, seed)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, patches=case.patches, masks=case.masks, labels=case.labels)
    tmp.rename(path)
    logger.info(
        "training case written",
        extra={"seed": seed, "patches": len(case.labels), "positives": int(case.labels.sum())},
    )
    return path
