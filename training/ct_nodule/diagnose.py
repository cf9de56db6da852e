"""Where each held-out nodule is lost: lung mask, candidates, cap, network, merge, threshold.

Runs the inference stages of :func:`inference.ct_nodule.analysis.analyze_volume` one by
one on held-out phantoms and follows every nodule >= 4 mm through them:

- ``mask``: its centre lies outside the lung mask (and no candidate reached it);
- ``candidate``: inside the mask, but no candidate centre within its radius;
- ``cap``: candidates exist only beyond the ``MAX_CANDIDATES`` cap;
- ``network``: the best candidate on it scores below the evaluation floor (0.01);
- ``merge``: scored, but no final detection (after masks, merge, refit) lies on it;
- ``threshold``: detected below the operating threshold;
- ``found``: detected at or above it.

Also prints the CPM / sensitivity at 1 FP per scan of the same detections (the FROC of
``training.ct_nodule.evaluate``), the false positives above the threshold, and the
candidate recall at several caps (the share of nodules with a candidate on them among the
first N ranked: no network can find the others, so it bounds the CPM at that cap).

``python -m training.ct_nodule.diagnose training/configs/ct_nodule.toml --seeds 9000 9023``
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.ct_nodule import candidates
from inference.ct_nodule.analysis import assess
from inference.ct_nodule.candidates import MAX_CANDIDATES, find_candidates, make_work_grid
from inference.ct_nodule.detector import RunFn, detect, score_candidates
from inference.ct_nodule.lungs import segment_lungs
from inference.ct_nodule.refine import refit
from models.registry import SHIPPED_DIR, ModelRegistry
from training.ct_nodule.config import load_config
from training.ct_nodule.dataset import phantom_config
from training.ct_nodule.evaluate import MIN_EVAL_MM, onnx_runner
from training.evaluation.froc import Detection as FrocDetection
from training.evaluation.froc import Truth, froc
from training.phantoms.ct import CTPhantom, make_chest_ct

EVAL_FLOOR = 0.01  # ``evaluate_phantoms`` keeps detections from this probability
RECALL_CAPS = (400, 800, 1200)  # candidate caps the summary reports recall at (and uncapped)


@dataclass(frozen=True, slots=True)
class NoduleTrace:
    seed: int
    index: int
    kind: str
    location: str
    diameter_mm: float
    lung_share: float  # share of the nodule's voxels inside the lung mask
    centre_in_mask: bool
    best_rank: int  # rank of the first candidate on it in the uncapped list (-1: none)
    candidate_prob: float  # best network probability among capped candidates on it
    final_prob: float  # best final detection on it (0: none)
    stage: str
    shape: str = ""  # round / lobulated / spiculated (empty in traces written before it)


@dataclass(frozen=True, slots=True)
class CaseResult:
    seed: int
    traces: list[NoduleTrace]
    truths: list[tuple[tuple[float, float, float], float, str]]  # every nodule: LPS, mm, kind
    detections: list[tuple[tuple[float, float, float], float]]  # LPS centre, probability
    n_candidates: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseResult:
        return cls(
            d["seed"],
            [NoduleTrace(**t) for t in d["traces"]],
            [(tuple(c), m, k) for c, m, k in d["truths"]],  # type: ignore[misc]
            [(tuple(c), p) for c, p in d["detections"]],  # type: ignore[misc]
            d["n_candidates"],
        )


def trace_case(
    ph: CTPhantom, run: RunFn, threshold: float, cap: int = MAX_CANDIDATES
) -> CaseResult:
    vol = ph.volume
    lung = segment_lungs(vol)
    grid = make_work_grid(vol, lung)
    every = find_candidates(grid, max_candidates=100_000)
    del grid
    cands = every[:cap]
    probs, _ = score_candidates(vol, cands, run)
    dets = refit(vol, detect(vol, cands, run, EVAL_FLOOR), run)
    nodules = [assess(vol, lung, d) for d in dets]
    found = []
    for n in nodules:
        c = vol.index_to_lps(n.detection.center_kji)
        found.append(((float(c[0]), float(c[1]), float(c[2])), n.detection.probability))
    sp = np.asarray(vol.spacing)
    every_kji = np.array([c.center_kji for c in every]).reshape(-1, 3)
    traces = []
    for t in ph.nodules:
        if t.mean_diameter_mm < MIN_EVAL_MM:
            continue
        radius = max(t.mean_diameter_mm / 2.0, 2.0)
        kji = np.asarray(vol.lps_to_index(t.center_lps), dtype=np.float64)
        voxels = np.argwhere(ph.instance_mask == t.index + 1).astype(np.float64)
        share = float(lung.contains(voxels).mean()) if len(voxels) else 0.0
        in_mask = bool(lung.contains(kji[None])[0])
        dist = np.linalg.norm((every_kji - kji) * sp, axis=1) if len(every_kji) else np.zeros(0)
        on = np.flatnonzero(dist <= radius)
        rank = int(on[0]) if len(on) else -1
        capped = on[on < len(cands)]
        cprob = float(probs[capped].max()) if len(capped) else 0.0
        fprob = max(
            (p for c, p in found if np.linalg.norm(np.subtract(c, t.center_lps)) <= radius),
            default=0.0,
        )
        if fprob >= threshold:
            stage = "found"
        elif fprob > 0.0:
            stage = "threshold"
        elif rank < 0:
            stage = "candidate" if in_mask else "mask"
        elif not len(capped):
            stage = "cap"
        elif cprob < EVAL_FLOOR:
            stage = "network"
        else:
            stage = "merge"
        traces.append(
            NoduleTrace(
                ph.seed, t.index, t.kind, t.location, round(t.mean_diameter_mm, 1),
                round(share, 3), in_mask, rank, round(cprob, 4), round(fprob, 4), stage,
                str(t.shape),
            )
        )
    truths = [(t.center_lps, t.mean_diameter_mm, str(t.kind)) for t in ph.nodules]
    return CaseResult(ph.seed, traces, truths, found, len(cands))


def summarise(results: Sequence[CaseResult], threshold: float) -> dict[str, object]:
    truths = {
        str(r.seed): [Truth(c, mm, kind) for c, mm, kind in r.truths if mm >= MIN_EVAL_MM]
        for r in results
    }
    excluded = {
        str(r.seed): [Truth(c, max(mm, 4.0)) for c, mm, _ in r.truths if mm < MIN_EVAL_MM]
        for r in results
    }
    dets = {str(r.seed): [FrocDetection(c, p) for c, p in r.detections] for r in results}
    result = froc(truths, dets, excluded=excluded, bootstrap=0)
    traces = [t for r in results for t in r.traces]
    big = [t for t in traces if t.diameter_mm >= 6.0]
    # false positives as ``evaluate.choose_threshold`` counts them
    fps = [
        p
        for r in results
        for c, p in r.detections
        if not any(np.linalg.norm(np.subtract(c, tc)) <= max(mm, 4.0) for tc, mm, _ in r.truths)
    ]
    return {
        "cpm": round(result.cpm, 4),
        "sensitivity_at_1fp": round(result.sensitivities[3], 4),
        "sensitivities": [round(x, 4) for x in result.sensitivities],
        "n_scans": len(results),
        "n_nodules": len(traces),
        "stages": dict(Counter(t.stage for t in traces)),
        "ge6mm_found_at_threshold": f"{sum(t.stage == 'found' for t in big)}/{len(big)}",
        "fp_above_threshold_per_scan": round(
            sum(p >= threshold for p in fps) / max(1, len(results)), 3
        ),
        "top_fp_probabilities": [round(p, 5) for p in sorted(fps, reverse=True)[:8]],
        "mean_candidates": round(float(np.mean([r.n_candidates for r in results])), 1),
        "candidate_recall": candidate_recall(traces),
    }


def candidate_recall(traces: Sequence[NoduleTrace]) -> dict[str, float]:
    """Share of nodules with a candidate among the first N ranked, per cap and uncapped."""
    n = max(1, len(traces))
    out = {
        str(cap): round(sum(0 <= t.best_rank < cap for t in traces) / n, 4) for cap in RECALL_CAPS
    }
    out["all"] = round(sum(t.best_rank >= 0 for t in traces) / n, 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ct_nodule.diagnose", description=__doc__)
    p.add_argument("config", type=Path)
    p.add_argument("--seeds", type=int, nargs=2, default=(9000, 9023), help="inclusive range")
    p.add_argument("--model", default="", help="name@version (default: the config's)")
    p.add_argument("--models-dir", type=Path, default=SHIPPED_DIR)
    p.add_argument("--threshold", type=float, default=0.0, help="default: the card's")
    p.add_argument("--json", type=Path, help="write every case's traces and detections here")
    p.add_argument("--merge", type=Path, nargs="*", default=[], help="summarise these --json files")
    p.add_argument("--all", action="store_true", help="print found nodules too")
    p.add_argument("--cap", type=int, default=MAX_CANDIDATES, help="candidates scored per scan")
    p.add_argument(
        "--nodule-free", action="store_true", help="the seeds' phantoms without nodules (FP check)"
    )
    p.add_argument("--nms-reach", type=float, default=candidates.NMS_REACH)
    args = p.parse_args(list(argv) if argv is not None else None)
    candidates.NMS_REACH = args.nms_reach  # an experiment: the module's default otherwise
    cfg = load_config(args.config)
    data = cfg.data.model_copy(update={"n_nodules": 0}) if args.nodule_free else cfg.data
    artifact = ModelRegistry(args.models_dir).load(args.model or f"{cfg.name}@{cfg.version}")
    threshold = args.threshold or artifact.card.operating_threshold
    run = onnx_runner(artifact.directory, threads=1)
    results = [CaseResult.from_json(d) for f in args.merge for d in json.loads(f.read_text())]
    for seed in range(args.seeds[0], args.seeds[1] + 1) if not args.merge else ():
        ph = make_chest_ct(seed, phantom_config(seed, data))
        r = trace_case(ph, run, threshold, args.cap)
        for t in r.traces:
            if args.all or t.stage != "found":
                print(json.dumps(asdict(t)), flush=True)
        results.append(r)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results]))
    print(json.dumps(summarise(results, threshold), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
