"""Held-out evaluation of the shipped CT nodule pipeline stages on phantoms never trained on.

Reports LUNA16 FROC/CPM (nodules >= 4 mm; smaller ones are excluded, hits on them are not
false positives), sensitivity at 1 FP/scan, per type and size band, diameter error, type
and Lung-RADS agreement of matched nodules, and picks the operating threshold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from inference.ct_nodule.analysis import analyze_volume
from inference.ct_nodule.detector import RunFn
from inference.ct_nodule.rules import NoduleFacts, NoduleType, lung_rads
from training.ct_nodule.config import NoduleTrainingConfig
from training.ct_nodule.dataset import phantom_config
from training.evaluation.froc import Detection, FrocResult, Truth, froc, markdown
from training.phantoms.ct import CTPhantom, make_chest_ct
from training.phantoms.nodules import NoduleTruth

logger = logging.getLogger(__name__)

MIN_EVAL_MM = 4.0
BANDS = (("3-6 mm", 3.0, 6.0), ("6-10 mm", 6.0, 10.0), ("> 10 mm", 10.0, 1e9))


@dataclass(frozen=True, slots=True)
class Match:
    truth: NoduleTruth
    probability: float
    mean_mm: float
    type: str
    category: str


def truth_category(t: NoduleTruth) -> str:
    facts = NoduleFacts(
        type=NoduleType(t.kind),
        mean_diameter_mm=t.mean_diameter_mm,
        solid_part_mm=t.solid_part_mm or 0.0,
        juxtapleural_or_perifissural=t.location in ("juxtapleural", "perifissural"),
        smooth_margin=t.shape == "round",
        spiculated=t.shape == "spiculated",
    )
    return lung_rads(facts)


def evaluate_phantoms(
    phantoms: list[CTPhantom], run: RunFn, threshold: float
) -> tuple[dict[str, float], FrocResult, list[Match], dict[str, list[Detection]]]:
    truths: dict[str, list[Truth]] = {}
    excluded: dict[str, list[Truth]] = {}
    dets: dict[str, list[Detection]] = {}
    matches: list[Match] = []
    for ph in tqdm(phantoms, desc="held-out", unit="case"):
        sid = str(ph.seed)
        analysis = analyze_volume(ph.volume, run, min_probability=0.01)
        truths[sid] = [
            Truth(t.center_lps, t.mean_diameter_mm, t.kind)
            for t in ph.nodules
            if t.mean_diameter_mm >= MIN_EVAL_MM
        ]
        excluded[sid] = [
            Truth(t.center_lps, max(t.mean_diameter_mm, 4.0))
            for t in ph.nodules
            if t.mean_diameter_mm < MIN_EVAL_MM
        ]
        found = []
        for n in analysis.nodules:
            c = ph.volume.index_to_lps(n.detection.center_kji)
            found.append(((float(c[0]), float(c[1]), float(c[2])), n))
        dets[sid] = [Detection(c, n.detection.probability) for c, n in found]
        for t in ph.nodules:
            hits = [
                n
                for c, n in found
                if np.linalg.norm(np.subtract(c, t.center_lps))
                <= max(t.mean_diameter_mm / 2.0, 2.0)
                and n.detection.probability >= threshold
            ]
            if hits:
                n = max(hits, key=lambda h: h.detection.probability)
                matches.append(
                    Match(
                        t,
                        n.detection.probability,
                        n.measurements.axes.mean_mm,
                        n.measurements.type.value,
                        n.category,
                    )
                )
    result = froc(truths, dets, excluded=excluded, bootstrap=1000)
    metrics = {
        "cpm": result.cpm,
        "cpm_ci_low": result.cpm_ci[0],
        "cpm_ci_high": result.cpm_ci[1],
        "sensitivity_at_1fp": result.sensitivities[3],
        "n_scans": float(result.n_scans),
        "n_nodules": float(result.n_nodules),
    }
    for fp, sens in zip(result.fp_rates, result.sensitivities, strict=True):
        metrics[f"sensitivity_at_{fp:g}fp"] = sens
    for name, lo, hi in BANDS:
        band_t = {s: [t for t in ts if lo <= t.diameter_mm < hi] for s, ts in truths.items()}
        band_x = {
            s: [t for t in truths[s] if not lo <= t.diameter_mm < hi] + excluded[s] for s in truths
        }
        if sum(len(v) for v in band_t.values()):
            metrics[f"cpm_{name}"] = froc(band_t, dets, excluded=band_x, bootstrap=0).cpm
    for kind in ("solid", "part_solid", "ground_glass", "calcified"):
        kt = {s: [t for t in ts if t.tag == kind] for s, ts in truths.items()}
        kx = {s: [t for t in truths[s] if t.tag != kind] + excluded[s] for s in truths}
        if sum(len(v) for v in kt.values()):
            metrics[f"cpm_{kind}"] = froc(kt, dets, excluded=kx, bootstrap=0).cpm
    big = [m for m in matches if m.truth.mean_diameter_mm >= 6.0]
    n_big = sum(1 for ph in phantoms for t in ph.nodules if t.mean_diameter_mm >= 6.0)
    if n_big:
        metrics["sensitivity_ge6mm_at_threshold"] = len(big) / n_big
    if big:
        err = np.array([abs(m.mean_mm - m.truth.mean_diameter_mm) for m in big])
        metrics["mean_diameter_abs_error_mm"] = float(err.mean())
        metrics["share_diameter_within_1_5mm"] = float((err <= 1.5).mean())
        metrics["type_accuracy"] = float(np.mean([m.type == m.truth.kind for m in big]))
        metrics["lung_rads_accuracy"] = float(
            np.mean([m.category == truth_category(m.truth) for m in big])
        )
    return metrics, result, matches, dets


def froc_png(result: FrocResult, path: Path) -> None:
    """A small FROC plot (log2 FP axis) drawn with PIL."""
    w, h, pad = 480, 320, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad // 2, w - pad // 2, h - pad], outline="black")

    def xy(fp: float, s: float) -> tuple[float, float]:
        x = pad + (np.log2(max(fp, 0.125)) + 3) / 6 * (w - 1.5 * pad)
        return x, h - pad - s * (h - 1.5 * pad)

    pts = [xy(f, s) for f, s in zip(result.curve_fp, result.curve_sens, strict=True) if f <= 8]
    if len(pts) > 1:
        d.line(pts, fill="blue", width=2)
    for f, s in zip(result.fp_rates, result.sensitivities, strict=True):
        x, y = xy(f, s)
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill="red")
        d.text((x - 8, h - pad + 4), f"{f:g}", fill="black")
    d.text((pad, 2), f"FROC, CPM {result.cpm:.3f}", fill="black")
    img.save(path)


def held_out_phantoms(cfg: NoduleTrainingConfig, seeds: list[int] | None = None) -> list[CTPhantom]:
    return [
        make_chest_ct(s, phantom_config(s, cfg.data)) for s in (seeds or cfg.data.held_out_list)
    ]


def choose_threshold(
    phantoms: list[CTPhantom],
    dets: dict[str, list[Detection]],
    fp_per_scan: float = 0.25,
    floor: float = 0.5,
) -> float:
    """The lowest threshold (>= ``floor``) whose false positives stay <= ``fp_per_scan``
    (at most 0.99 unless the floor is higher)."""
    fps = []
    for ph in phantoms:
        for d in dets.get(str(ph.seed), []):
            if not any(
                np.linalg.norm(np.subtract(d.center, t.center_lps)) <= max(t.mean_diameter_mm, 4.0)
                for t in ph.nodules
            ):
                fps.append(d.probability)
    allowed = int(fp_per_scan * len(phantoms))
    ranked = sorted(fps, reverse=True)
    if len(ranked) <= allowed:
        return floor
    return float(max(floor, min(0.99, ranked[allowed] + 1e-3)))


def write_report(out_dir: Path, metrics: dict[str, float], result: FrocResult) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    lines = ["# CT nodule held-out evaluation", "", markdown(result), "", "## All metrics", ""]
    lines += [f"- {k}: {v:.4g}" for k, v in metrics.items()]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    froc_png(result, out_dir / "froc.png")


def onnx_runner(model_dir: Path, threads: int = 2) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(
        str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit, mask_logit = sess.run(None, {"patch": x.astype(np.float32)})
        return logit, mask_logit

    return run
