"""FROC and CPM exactly as LUNA16 defines them, with a bootstrap 95 % CI.

A detection hits a nodule when its distance to the nodule centre is at most the
nodule's radius (diameter / 2). Per scan at most 100 marks (highest probability) count.
Detections that hit an excluded nodule (e.g. outside the size band evaluated) are
neither true nor false positives. Sensitivity is read off the FROC curve at 1/8, 1/4,
1/2, 1, 2, 4 and 8 false positives per scan (linear interpolation) and CPM is their mean.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MAX_MARKS = 100


@dataclass(frozen=True, slots=True)
class Truth:
    """One annotated nodule: world centre (mm) and diameter (mm)."""

    center: tuple[float, float, float]
    diameter_mm: float
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Detection:
    center: tuple[float, float, float]
    probability: float


@dataclass(frozen=True, slots=True)
class FrocResult:
    fp_rates: tuple[float, ...]
    sensitivities: tuple[float, ...]
    cpm: float
    ci_low: tuple[float, ...] = ()
    ci_high: tuple[float, ...] = ()
    cpm_ci: tuple[float, float] = (float("nan"), float("nan"))
    n_scans: int = 0
    n_nodules: int = 0
    curve_fp: tuple[float, ...] = field(default_factory=tuple)
    curve_sens: tuple[float, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class _ScanScores:
    """Per scan: best probability per nodule (-inf if missed) and the FP probabilities."""

    nodule_best: npt.NDArray[np.float64]
    fp_probs: npt.NDArray[np.float64]


def _score_scan(
    truths: Sequence[Truth], detections: Sequence[Detection], excluded: Sequence[Truth]
) -> _ScanScores:
    marks = sorted(detections, key=lambda d: -d.probability)[:MAX_MARKS]
    best = np.full(len(truths), -np.inf)
    fps = []
    centres = np.array([t.center for t in truths]).reshape(-1, 3)
    radii = np.array([t.diameter_mm / 2.0 for t in truths])
    ex_c = np.array([t.center for t in excluded]).reshape(-1, 3)
    ex_r = np.array([t.diameter_mm / 2.0 for t in excluded])
    for det in marks:
        p = np.asarray(det.center)
        hits = np.linalg.norm(centres - p, axis=1) <= radii if len(truths) else np.zeros(0, bool)
        if hits.any():
            best[hits] = np.maximum(best[hits], det.probability)
            continue
        if len(excluded) and (np.linalg.norm(ex_c - p, axis=1) <= ex_r).any():
            continue
        fps.append(det.probability)
    return _ScanScores(best, np.asarray(fps, dtype=np.float64))


def _curve(
    scores: Sequence[_ScanScores],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """FROC curve points (FPs per scan, sensitivity) over every threshold, ascending FP."""
    best = np.concatenate([s.nodule_best for s in scores]) if scores else np.zeros(0)
    fps = np.concatenate([s.fp_probs for s in scores]) if scores else np.zeros(0)
    n_nod = max(len(best), 1)
    thresholds = np.unique(np.r_[best[np.isfinite(best)], fps])[::-1]
    fp_sorted = np.sort(fps)
    best_sorted = np.sort(best[np.isfinite(best)])
    fp_at = (len(fp_sorted) - np.searchsorted(fp_sorted, thresholds, side="left")) / len(scores)
    tp_at = (len(best_sorted) - np.searchsorted(best_sorted, thresholds, side="left")) / n_nod
    return np.r_[0.0, fp_at], np.r_[0.0, tp_at]


def _sens_at(
    fp_curve: npt.NDArray[np.float64], sens_curve: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Sensitivity at each FP rate, interpolating linearly between operating points.

    A vertical step (several thresholds with the same FP count) arrives at its lowest
    sensitivity and leaves at its highest, so a rate that falls exactly on it reads the
    highest and rates between steps interpolate from leaving to arriving points.
    """
    uniq = np.unique(fp_curve)
    lo = np.array([sens_curve[fp_curve == u].min() for u in uniq])
    hi = np.array([sens_curve[fp_curve == u].max() for u in uniq])
    out = np.empty(len(FP_RATES))
    for n, rate in enumerate(FP_RATES):
        i = int(np.searchsorted(uniq, rate, side="right")) - 1
        if uniq[i] == rate or i == len(uniq) - 1:
            out[n] = hi[i]
        else:
            w = (rate - uniq[i]) / (uniq[i + 1] - uniq[i])
            out[n] = hi[i] + w * (lo[i + 1] - hi[i])
    return out


def froc(
    truths: Mapping[str, Sequence[Truth]],
    detections: Mapping[str, Sequence[Detection]],
    scans: Iterable[str] | None = None,
    excluded: Mapping[str, Sequence[Truth]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> FrocResult:
    """LUNA16 FROC over ``scans`` (default: every scan named in truths or detections)."""
    ids = sorted(set(scans) if scans is not None else set(truths) | set(detections))
    if not ids:
        raise ValueError("no scans to evaluate")
    excluded = excluded or {}
    scores = [
        _score_scan(truths.get(s, ()), detections.get(s, ()), excluded.get(s, ())) for s in ids
    ]
    fp_c, sens_c = _curve(scores)
    sens = _sens_at(fp_c, sens_c)
    n_nod = sum(len(s.nodule_best) for s in scores)
    result = FrocResult(
        FP_RATES,
        tuple(float(v) for v in sens),
        float(sens.mean()),
        n_scans=len(ids),
        n_nodules=n_nod,
        curve_fp=tuple(float(v) for v in fp_c),
        curve_sens=tuple(float(v) for v in sens_c),
    )
    if bootstrap <= 0 or n_nod == 0:
        return result
    rng = np.random.default_rng(seed)
    boot = np.empty((bootstrap, len(FP_RATES)))
    for b in range(bootstrap):
        pick = rng.integers(0, len(ids), len(ids))
        sample = [scores[i] for i in pick]
        if sum(len(s.nodule_best) for s in sample) == 0:
            boot[b] = np.nan
            continue
        boot[b] = _sens_at(*_curve(sample))
    lo = np.nanpercentile(boot, 2.5, axis=0)
    hi = np.nanpercentile(boot, 97.5, axis=0)
    cpm_boot = np.nanmean(boot, axis=1)
    return FrocResult(
        result.fp_rates,
        result.sensitivities,
        result.cpm,
        tuple(float(v) for v in lo),
        tuple(float(v) for v in hi),
        (float(np.nanpercentile(cpm_boot, 2.5)), float(np.nanpercentile(cpm_boot, 97.5))),
        result.n_scans,
        result.n_nodules,
        result.curve_fp,
        result.curve_sens,
    )


def read_annotations_csv(path: Path) -> dict[str, list[Truth]]:
    """LUNA16 ``annotations.csv``: seriesuid, coordX, coordY, coordZ, diameter_mm."""
    out: dict[str, list[Truth]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            centre = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            out.setdefault(row["seriesuid"], []).append(Truth(centre, float(row["diameter_mm"])))
    return out


def read_candidates_csv(path: Path) -> dict[str, list[Detection]]:
    """LUNA16 submission CSV: seriesuid, coordX, coordY, coordZ, probability."""
    out: dict[str, list[Detection]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            centre = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            out.setdefault(row["seriesuid"], []).append(
                Detection(centre, float(row["probability"]))
            )
    return out


def write_annotations_csv(path: Path, truths: Mapping[str, Sequence[Truth]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        for sid, items in truths.items():
            for t in items:
                w.writerow([sid, *(f"{c:.3f}" for c in t.center), f"{t.diameter_mm:.2f}"])


def write_candidates_csv(path: Path, detections: Mapping[str, Sequence[Detection]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "probability"])
        for sid, items in detections.items():
            for d in items:
                w.writerow([sid, *(f"{c:.3f}" for c in d.center), f"{d.probability:.6f}"])


def markdown(result: FrocResult, title: str = "FROC") -> str:
    """A small markdown table of the FROC operating points."""
    lines = [f"### {title}", "", f"{result.n_scans} scans, {result.n_nodules} nodules", ""]
    lines += ["| FPs/scan | sensitivity | 95 % CI |", "|---|---|---|"]
    for i, (r, s) in enumerate(zip(result.fp_rates, result.sensitivities, strict=True)):
        ci = f"{result.ci_low[i]:.3f}-{result.ci_high[i]:.3f}" if result.ci_low else "-"
        lines.append(f"| {r:g} | {s:.3f} | {ci} |")
    lines += ["", f"CPM {result.cpm:.3f} (95 % CI {result.cpm_ci[0]:.3f}-{result.cpm_ci[1]:.3f})"]
    return "\n".join(lines)
