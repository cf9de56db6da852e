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

Two masks can be scored. "network": the network's own mask (tiled logits above the
card's threshold, small pieces cleaned), which the card's metrics are. "refined": the
mask the pipeline goes on with (``inference.cta.segment.segment``: that mask grown by HU
with network evidence, then the size rule), scored from the same network pass.

``nice -n 10 python -m training.cta.evaluate --model models/cta_vessels/1.2.0 --refined
--breakdown`` (held-out seeds 900-903 and project 950-951 by default; ``--thresholds``
sweeps the operating threshold, e.g. on a validation range ``--seeds 910 914
--project-seeds 960 962``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference.cta.centerline import skeletonize
from inference.cta.grid import resample, work_grid
from inference.cta.segment import Predict, clean_vessels, logit_of, predict_logits, segment
from training.cta.breakdown import Errors, errors
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
    return score_mask(case, clean_vessels(np.asarray(logits > logit_threshold), 1.0))


def score_mask(case: EvalCase, pred: BOOL) -> CaseScore:
    """Dice and clDice of a finished lumen mask on the work grid."""
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


class TileMemo:
    """A predictor that remembers its tiles, so that :func:`segment` (which runs the
    network itself) replays the pass :func:`predict_logits` already made."""

    def __init__(self, predict: Predict) -> None:
        self._predict = predict
        self._seen: dict[bytes, npt.NDArray[np.float32]] = {}

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        key = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).digest()
        if key not in self._seen:
            self._seen[key] = self._predict(x)
        return self._seen[key]


def refined_mask(case: EvalCase, predict: Predict, logit_threshold: float) -> BOOL:
    """The pipeline's vessel mask: the network's grown by :func:`refine`, size rule."""
    return segment(case.hu, predict, 1.0, logit_threshold).vessels


def _cached(cache: Path | None, kind: str, seed: int) -> EvalCase:
    make = synth_case if kind == "synthetic" else project_case
    if cache is None:
        return make(seed)
    path = cache / f"{kind}_{seed}.npz"
    if path.exists():
        z = np.load(path)
        return EvalCase(seed, z["hu"], z["truth"], z["centreline_kji"])
    case = make(seed)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, hu=case.hu, truth=case.truth, centreline_kji=case.centreline_kji)
    return case


def _onnx_predict(model_dir: Path, threads: int) -> Predict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(
        str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )

    def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(sess.run(None, {"image": x.astype(np.float32)})[0], np.float32)

    return predict


def _rows(
    cases: Iterator[EvalCase], predict: Predict, thresholds: list[float], refined: bool
) -> Iterator[tuple[str, float, EvalCase, BOOL]]:
    """(mask kind, probability threshold, case, mask) for every case and threshold."""
    for case in cases:
        memo = TileMemo(predict)
        logits, _, _ = predict_logits(case.hu, memo)
        for p in thresholds:
            yield "network", p, case, clean_vessels(np.asarray(logits > logit_of(p)), 1.0)
            if refined:
                yield "refined", p, case, refined_mask(case, memo, logit_of(p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/cta_vessels/1.2.0"))
    parser.add_argument("--seeds", type=int, nargs=2, default=(900, 904), help="synthetic [a, b)")
    parser.add_argument("--project-seeds", type=int, nargs=2, default=(950, 952))
    parser.add_argument(
        "--thresholds", type=float, nargs="*", default=None, help="probabilities (card's)"
    )
    parser.add_argument("--refined", action="store_true", help="also the pipeline's mask")
    parser.add_argument("--breakdown", action="store_true", help="errors by vessel size")
    parser.add_argument("--cache", type=Path, default=None, help="phantom cases kept here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="summaries written here")
    args = parser.parse_args()
    card = json.loads((args.model / "card.json").read_text(encoding="utf-8"))
    thresholds = args.thresholds or [float(card["operating_threshold"])]
    predict = _onnx_predict(args.model, args.threads)
    out: dict[str, dict[str, float]] = {}
    for kind, seeds in (("synthetic", args.seeds), ("project", args.project_seeds)):
        cases = (_cached(args.cache, kind, s) for s in range(*seeds))
        scores: dict[tuple[str, float], list[CaseScore]] = {}
        errs: dict[tuple[str, float], Errors] = {}
        for mask, p, case, pred in _rows(cases, predict, thresholds, args.refined):
            sc = score_mask(case, pred)
            print(
                f"{kind} {case.seed} {mask:7s} p={p:.2f} Dice {sc.dice:.4f} clDice "
                f"{sc.cldice:.4f} (tprec {sc.tprec:.3f} tsens {sc.tsens:.3f})",
                flush=True,
            )
            scores.setdefault((mask, p), []).append(sc)
            if args.breakdown:
                e = errors(case.truth, pred, case.hu)
                errs[(mask, p)] = errs[(mask, p)] + e if (mask, p) in errs else e
        for (mask, p), rows in scores.items():
            summary = _summary(rows, "")
            out[f"{kind}/{mask}/{p:.2f}"] = summary
            print(
                f"== {kind} {mask} p={p:.2f}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
            )
            if (mask, p) in errs:
                print(errs[(mask, p)].table())
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
