"""Held-out evaluation of the vessel model through the pipeline's own segmentation path.

Dice and centreline Dice (clDice: Shit et al., CVPR 2021) on the 1 mm work grid:
topology precision = share of the predicted skeleton inside the true lumen, topology
sensitivity = share of the true centreline inside the predicted lumen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.cta.centerline import skeletonize
from inference.cta.grid import resample, work_grid
from inference.cta.segment import Predict, clean_vessels, predict_tiled
from training.cta.synth import SynthConfig, make_synthetic_cta


@dataclass(frozen=True, slots=True)
class CaseScore:
    seed: int
    dice: float
    cldice: float


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def score_case(seed: int, predict: Predict, logit_threshold: float = 0.0) -> CaseScore:
    p = make_synthetic_cta(seed, SynthConfig(n_stenoses=2, occlusion=seed % 3 == 0))
    grid = work_grid(p.volume, 1.0)
    hu = resample(p.volume, grid)
    truth = resample(p.volume.with_array((p.labels > 0).astype(np.float32)), grid) > 0.5
    raw, _, _ = predict_tiled(hu, predict, logit_threshold)
    pred = clean_vessels(raw, 1.0)
    sk = skeletonize(pred, 1.0)
    tprec = float(truth[tuple(sk.points.T)].mean()) if len(sk.points) else 0.0
    inv = np.linalg.inv(grid.affine)
    line = np.vstack(list(p.centerlines.values()))
    ijk = line @ inv[:3, :3].T + inv[:3, 3]
    kji = np.unique(np.clip(np.rint(ijk[:, ::-1]).astype(int), 0, np.array(grid.shape) - 1), axis=0)
    kji = kji[truth[tuple(kji.T)]]  # centreline voxels of the drawn lumen
    tsens = float(pred[tuple(kji.T)].mean()) if len(kji) else 0.0
    cl = 2 * tprec * tsens / (tprec + tsens) if tprec + tsens else 0.0
    return CaseScore(seed, dice(pred, truth), cl)


def evaluate(seeds: list[int], predict: Predict, logit_threshold: float = 0.0) -> dict[str, float]:
    scores = [score_case(s, predict, logit_threshold) for s in seeds]
    return {
        "dice_mean": float(np.mean([s.dice for s in scores])),
        "dice_min": float(np.min([s.dice for s in scores])),
        "cldice_mean": float(np.mean([s.cldice for s in scores])),
        "cldice_min": float(np.min([s.cldice for s in scores])),
        "n_cases": float(len(scores)),
    }


def score_project_case(seed: int, predict: Predict, logit_threshold: float = 0.0) -> CaseScore:
    """The same scores on a project phantom (training.phantoms.cta, small config)."""
    from training.cta.project_cases import ARTERY_LABELS
    from training.phantoms.cta import CTAConfig, make_head_neck_cta

    p = make_head_neck_cta(seed, CTAConfig.small(phase="arterial"))
    grid = work_grid(p.volume, 1.0)
    hu = resample(p.volume, grid)
    artery = np.isin(p.vessel_labels, ARTERY_LABELS).astype(np.float32)
    truth = resample(p.volume.with_array(artery), grid) > 0.5
    raw, _, _ = predict_tiled(hu, predict, logit_threshold)
    pred = clean_vessels(raw, 1.0)
    sk = skeletonize(pred, 1.0)
    tprec = float(truth[tuple(sk.points.T)].mean()) if len(sk.points) else 0.0
    inv = np.linalg.inv(grid.affine)
    line = np.vstack([v.points_lps for v in p.vessels.values()])
    ijk = line @ inv[:3, :3].T + inv[:3, 3]
    kji = np.unique(np.clip(np.rint(ijk[:, ::-1]).astype(int), 0, np.array(grid.shape) - 1), axis=0)
    kji = kji[truth[tuple(kji.T)]]
    tsens = float(pred[tuple(kji.T)].mean()) if len(kji) else 0.0
    cl = 2 * tprec * tsens / (tprec + tsens) if tprec + tsens else 0.0
    return CaseScore(seed, dice(pred, truth), cl)


def evaluate_project(
    seeds: list[int], predict: Predict, logit_threshold: float = 0.0
) -> dict[str, float]:
    scores = [score_project_case(s, predict, logit_threshold) for s in seeds]
    return {
        "project_dice_mean": float(np.mean([s.dice for s in scores])),
        "project_cldice_mean": float(np.mean([s.cldice for s in scores])),
        "project_n_cases": float(len(scores)),
    }
