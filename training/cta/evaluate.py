"""Held-out evaluation of the vessel model through the pipeline's own segmentation path.

Dice and centreline Dice (clDice: Shit et al., CVPR 2021) on the 1 mm work grid, the
grid the network and the whole CTA pipeline run on (truth = the phantom's artery
occupancy resampled there, > 0.5; a vessel thinner than about 1 mm across is absent
from truth and prediction alike at that resolution):
topology precision = share of the predicted skeleton (the pipeline's own centreline
skeleton of the cleaned network mask) inside the true lumen, topology sensitivity =
share of the true centreline inside the predicted lumen. The true centreline is the
phantom's drawn centreline rasterised on the same grid (where it lies in the true
lumen), which is what a skeleton of the truth mask approximates; on project phantoms
these are the 15 named vessels (their truth lists no centreline for unnamed branches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.cta.centerline import skeletonize
from inference.cta.grid import resample, work_grid
from inference.cta.segment import Predict, clean_vessels, predict_logits
from training.cta.synth import SynthConfig, make_synthetic_cta

BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CaseScore:
    seed: int
    dice: float
    cldice: float
    tprec: float = float("nan")
    tsens: float = float("nan")


@dataclass(frozen=True, slots=True)
class EvalCase:
    """A held-out case on the 1 mm work grid (cacheable: plain arrays)."""

    seed: int
    hu: npt.NDArray[np.float32]
    truth: BOOL
    centreline_kji: npt.NDArray[np.int64]  # true centreline voxels inside the true lumen


def dice(a: BOOL, b: BOOL) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def _centreline_voxels(
    lines_lps: npt.NDArray[np.float64], affine: npt.NDArray[np.float64], truth: BOOL
) -> npt.NDArray[np.int64]:
    inv = np.linalg.inv(affine)
    ijk = lines_lps @ inv[:3, :3].T + inv[:3, 3]
    kji = np.unique(
        np.clip(np.rint(ijk[:, ::-1]).astype(np.int64), 0, np.array(truth.shape) - 1), axis=0
    )
    return kji[truth[tuple(kji.T)]]  # centreline voxels of the drawn lumen


def synth_case(seed: int) -> EvalCase:
    p = make_synthetic_cta(seed, SynthConfig(n_stenoses=2, occlusion=seed % 3 == 0))
    grid = work_grid(p.volume, 1.0)
    hu = resample(p.volume, grid)
    truth = resample(p.volume.with_array((p.labels > 0).astype(np.float32)), grid) > 0.5
    line = np.vstack(list(p.centerlines.values()))
    return EvalCase(seed, hu, truth, _centreline_voxels(line, grid.affine, truth))


def project_case(seed: int) -> EvalCase:
    """A project phantom (training.phantoms.cta, small config, arterial phase)."""
    from training.cta.project_cases import ARTERY_LABELS
    from training.phantoms.cta import CTAConfig, make_head_neck_cta

    p = make_head_neck_cta(seed, CTAConfig.small(phase="arterial"))
    grid = work_grid(p.volume, 1.0)
    hu = resample(p.volume, grid)
    artery = np.isin(p.vessel_labels, ARTERY_LABELS).astype(np.float32)
    truth = resample(p.volume.with_array(artery), grid) > 0.5
    line = np.vstack([v.points_lps for v in p.vessels.values()])
    return EvalCase(seed, hu, truth, _centreline_voxels(line, grid.affine, truth))


def score(case: EvalCase, predict: Predict, logit_threshold: float = 0.0) -> CaseScore:
    logits, _, _ = predict_logits(case.hu, predict)
    return score_logits(case, logits, logit_threshold)


def score_logits(
    case: EvalCase, logits: npt.NDArray[np.float16], logit_threshold: float = 0.0
) -> CaseScore:
    """Scores from the tiled logits (one network pass serves several thresholds)."""
    pred = clean_vessels(np.asarray(logits > logit_threshold), 1.0)
    sk = skeletonize(pred, 1.0)
    tprec = float(case.truth[tuple(sk.points.T)].mean()) if len(sk.points) else 0.0
    kji = case.centreline_kji
    tsens = float(pred[tuple(kji.T)].mean()) if len(kji) else 0.0
    cl = 2 * tprec * tsens / (tprec + tsens) if tprec + tsens else 0.0
    return CaseScore(case.seed, dice(pred, case.truth), cl, tprec, tsens)


def score_case(seed: int, predict: Predict, logit_threshold: float = 0.0) -> CaseScore:
    return score(synth_case(seed), predict, logit_threshold)


def score_project_case(seed: int, predict: Predict, logit_threshold: float = 0.0) -> CaseScore:
    """The same scores on a project phantom (training.phantoms.cta, small config)."""
    return score(project_case(seed), predict, logit_threshold)


def evaluate(seeds: list[int], predict: Predict, logit_threshold: float = 0.0) -> dict[str, float]:
    return _summary([score_case(s, predict, logit_threshold) for s in seeds], "")


def evaluate_project(
    seeds: list[int], predict: Predict, logit_threshold: float = 0.0
) -> dict[str, float]:
    return _summary([score_project_case(s, predict, logit_threshold) for s in seeds], "project_")


def _summary(scores: list[CaseScore], prefix: str) -> dict[str, float]:
    dice = [s.dice for s in scores]
    cldice = [s.cldice for s in scores]
    return {
        f"{prefix}dice_mean": float(np.mean(dice)),
        f"{prefix}dice_min": float(np.min(dice)),
        f"{prefix}cldice_mean": float(np.mean(cldice)),
        f"{prefix}cldice_min": float(np.min(cldice)),
        f"{prefix}n_cases": float(len(scores)),
    }
