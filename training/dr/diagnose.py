"""Where a DR nodule model loses nodules and where its false alarms sit (held-out sets).

For every shown nodule >= ``--min-mm`` it records the best score of a candidate on it
(IoU > 0.2, the NODE21 hit rule; 0 when no decoded peak overlaps it) and what it lies on:
the median display value of a ring 0.8-1.6 diameters out (dark open lung near 0.2-0.4,
heart, spine and upper abdomen above 0.65) and, for CT-projection DRRs, the phantom's own
``behind`` label (none / rib / heart, ``training.dr.drr_cache.META_COLUMNS``). It then
prints hit rates at a threshold (the card's 1 FP/image one by default) by size band and by
background, and, for choosing an operating threshold, the >= 10 mm sensitivity against
the share of nodule-free films that would carry a finding.

A nodule counts as hit here when any candidate on it reaches the threshold; the FROC of
:mod:`training.dr.evaluate` matches greedily, which differs only where one candidate
overlaps two nodules (rare: phantom nodules are placed apart).

    nice -n 10 python -m training.dr.diagnose [--model models/dr_nodule/1.4.0/model.onnx]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.dr.data import Sample, synth_sample
from training.dr.drr_cache import BEHIND, load_dir, load_meta
from training.dr.evaluate import Box
from training.dr.heldout import HeldOutReport, Runner, evaluate, predict

F32 = npt.NDArray[np.float32]
SIZE_BANDS = (10.0, 15.0, 20.0, 31.0)
BACKGROUND_BANDS = (0.0, 0.35, 0.5, 0.65, 1.01)
THRESHOLDS = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


@dataclass(frozen=True, slots=True)
class NoduleOutcome:
    diameter_mm: float
    background: float  # median display value around the nodule, 0..1
    score: float  # best candidate score on it; 0.0 when no candidate overlaps it
    behind: str | None = None  # DRR phantoms only: none / rib / heart


@dataclass(frozen=True, slots=True)
class Band:
    label: str
    n: int
    hit: float  # share reaching the threshold
    no_candidate: float  # share without any decoded peak on it


def background_level(image: F32, row: float, col: float, diameter: float) -> float:
    """Median of the ring 0.8-1.6 diameters from the centre (input pixels)."""
    h, w = image.shape
    reach = int(1.7 * diameter) + 2
    r0, r1 = max(0, int(row) - reach), min(h, int(row) + reach + 1)
    c0, c1 = max(0, int(col) - reach), min(w, int(col) + reach + 1)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    dist = np.hypot(rr - row, cc - col)
    ring = (dist > 0.8 * diameter) & (dist <= 1.6 * diameter)
    if not ring.any():
        return float(image[int(np.clip(row, 0, h - 1)), int(np.clip(col, 0, w - 1))])
    return float(np.median(image[rr[ring], cc[ring]]))


def outcomes(
    run: Runner,
    samples: Sequence[Sample],
    behind: Sequence[Sequence[str]] | None = None,
    min_mm: float = 10.0,
) -> list[NoduleOutcome]:
    """One outcome per shown nodule >= ``min_mm`` (``behind``: per sample, per shown nodule)."""
    out = []
    for i, s in enumerate(samples):
        boxes = [(Box.around(c.row, c.col, c.diameter), c.score) for c in predict(run, s)]
        for j, (r, c, d, mm) in enumerate(s.nodules):
            if mm < min_mm:
                continue
            truth = Box.around(r, c, d)
            score = max((sc for b, sc in boxes if b.iou(truth) > 0.2), default=0.0)
            label = behind[i][j] if behind is not None else None
            out.append(NoduleOutcome(mm, background_level(s.image, r, c, d), score, label))
    return out


def bands(
    items: Sequence[NoduleOutcome],
    threshold: float,
    key: Callable[[NoduleOutcome], float],
    edges: Sequence[float],
    unit: str = "",
) -> list[Band]:
    """Hit rates in the half-open bands ``[edges[k], edges[k + 1])`` of ``key``."""
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = [o for o in items if lo <= key(o) < hi]
        rows.append(_band(f"{lo:g}-{hi:g}{unit}", sel, threshold))
    return rows


def by_label(items: Sequence[NoduleOutcome], threshold: float) -> list[Band]:
    """Hit rates by the DRR ``behind`` label (items without one are left out)."""
    labels = sorted({o.behind for o in items if o.behind is not None})
    return [_band(lb, [o for o in items if o.behind == lb], threshold) for lb in labels]


def _band(label: str, sel: Sequence[NoduleOutcome], threshold: float) -> Band:
    n = len(sel)
    if not n:
        return Band(label, 0, float("nan"), float("nan"))
    hit = sum(o.score >= threshold for o in sel) / n
    return Band(label, n, hit, sum(o.score == 0.0 for o in sel) / n)


def nodule_free_flagged(report: HeldOutReport, threshold: float) -> tuple[int, int]:
    """(films flagged, films) among held-out films without any nodule, shown or not."""
    with_truth = {t.image for t in report.truths}
    free = [i for i in range(report.n_images) if i not in with_truth]
    best: dict[int, float] = {}
    for d in report.detections:
        best[d.image] = max(best.get(d.image, 0.0), d.score)
    return sum(best.get(i, 0.0) >= threshold for i in free), len(free)


def _print_bands(title: str, rows: Sequence[Band]) -> None:
    print(title)
    for b in rows:
        print(f"  {b.label:>12}: {b.n:4d} nodules, hit {b.hit:.2f}, none {b.no_candidate:.2f}")


def _report(
    name: str,
    run: Runner,
    samples: list[Sample],
    threshold: float,
    behind: Sequence[Sequence[str]] | None = None,
) -> None:
    items = outcomes(run, samples, behind)
    hits = sum(o.score >= threshold for o in items)
    print(f"{name}: {len(samples)} films, {hits}/{len(items)} nodules >= 10 mm at {threshold:.4f}")
    size = bands(items, threshold, lambda o: o.diameter_mm, SIZE_BANDS, " mm")
    _print_bands(" by diameter", size)
    ground = bands(items, threshold, lambda o: o.background, BACKGROUND_BANDS)
    _print_bands(" by background", ground)
    if behind is not None:
        _print_bands(" by what lies behind (phantom label)", by_label(items, threshold))
    report = evaluate(run, samples)
    print(" operating threshold trade-off (>= 10 mm sensitivity; nodule-free films flagged)")
    for t in THRESHOLDS:
        flagged, free = nodule_free_flagged(report, t)
        print(f"  {t:.2f}: {report.sensitivity_at(t, 10.0):.3f}; {flagged}/{free}")


def main(argv: Sequence[str] | None = None) -> int:
    from models.registry import ModelRegistry
    from training.dr.export import ort_runner

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="dr_nodule", help="registry model (name[@version])")
    parser.add_argument("--model", type=Path, default=None, help="an ONNX file instead")
    parser.add_argument("--seeds", type=int, nargs=2, default=(900000, 900400))
    parser.add_argument("--drr-dir", type=Path, default=Path("var/training/dr_drr_m256"))
    parser.add_argument("--drr-seeds", type=int, nargs=2, default=(500000, 500060))
    args = parser.parse_args(argv)
    # thresholds come from the registry model's card, also when --model names another file
    artifact = ModelRegistry().load(args.spec)
    path = args.model or artifact.onnx_path
    run = ort_runner(path)
    m = artifact.card.metrics
    samples = [synth_sample(s) for s in range(*args.seeds)]
    if samples:  # --seeds 0 0: the DRR set only
        _report("analytic", run, samples, m["ge10mm_threshold_at_1_fp"])
    seeds = [s for s in range(*args.drr_seeds) if (args.drr_dir / f"{s}.npz").is_file()]
    if seeds:
        drr = load_dir(args.drr_dir, seeds)
        behind = []
        for s in seeds:
            meta = load_meta(args.drr_dir / f"{s}.npz")
            shown = meta[0] if meta is not None else np.zeros((0, 4))
            behind.append([BEHIND[int(row[2])] for row in shown])
        _report("DRR", run, drr, m["drr_ge10mm_threshold_at_1_fp"], behind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
