"""Compare DR nodule models (ONNX files) on both held-out sets, under one preparation.

For each model: sensitivity for nodules >= 10 mm at 0.125 / 0.25 / 0.5 / 1 FP per image
(NODE21 counting, :mod:`training.dr.evaluate`), the >= 10 mm image AUC, and how many
nodule-free films carry a finding at the model's own operating point (the exporter's rule:
the lowest threshold with <= 0.25 FP per image on both sets, at least 0.3). ``--knee``
prepares every film with that soft knee (``inference.dr.image.normalise``) instead of
clipping; DRR entries are prepared again from their stored display values
(``training.dr.drr_cache.reprepare``), and analytic held-out phantoms are drawn once and
kept under ``--raw-cache`` (about 0.4 s each) so that preparations can be compared.

    nice -n 10 python -m training.dr.compare models/dr_nodule/1.4.0/model.onnx [--knee 0.8]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.dr.data import Sample, cached_chest, sample_from_chest
from training.dr.diagnose import nodule_free_flagged
from training.dr.drr_cache import has_raw, load, reprepare
from training.dr.export import OPERATING_FP_RATE, operating_threshold, ort_runner
from training.dr.heldout import HeldOutReport, evaluate
from training.dr.synth import SynthConfig


@dataclass(frozen=True, slots=True)
class Summary:
    """One model on one held-out set."""

    sens_ge10mm: dict[float, float]  # FP rate -> sensitivity
    auc_ge10mm: float
    operating: float  # this set's own operating threshold (exporter's rule)
    n_nodules_ge10mm: int
    n_images: int

    def line(self, flagged: int, free: int, operating: float) -> str:
        sens = " / ".join(f"{v:.3f}" for v in self.sens_ge10mm.values())
        return (
            f">= 10 mm {sens} at {', '.join(f'{r:g}' for r in self.sens_ge10mm)} FP "
            f"({self.n_nodules_ge10mm} nodules, {self.n_images} films), AUC {self.auc_ge10mm:.3f}"
            f"; nodule-free flagged at {operating:.3f}: {flagged}/{free}"
        )


def summarise(report: HeldOutReport) -> Summary:
    return Summary(
        dict(report.large.sensitivity),
        report.auc_large,
        operating_threshold(report),
        report.large.n_truths,
        report.n_images,
    )


def analytic_set(
    seeds: range, knee: float | None, cache: Path | None, config: SynthConfig | None = None
) -> list[Sample]:
    return [sample_from_chest(cached_chest(s, cache, config), knee) for s in seeds]


def drr_set(directory: Path, seeds: range, knee: float | None) -> list[Sample]:
    """Cached DRR entries; with a knee only those that kept their display values."""
    out = []
    for s in seeds:
        path = directory / f"{s}.npz"
        if not path.is_file():
            continue
        if knee is None:
            out.append(load(path))
        elif has_raw(path):
            out.append(reprepare(path, knee))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+", help="ONNX files")
    parser.add_argument("--knee", type=float, default=None)
    parser.add_argument("--seeds", type=int, nargs=2, default=(900000, 900400))
    parser.add_argument("--drr-dir", type=Path, default=Path("var/training/dr_drr_m256"))
    parser.add_argument("--drr-seeds", type=int, nargs=2, default=(500000, 500060))
    parser.add_argument("--raw-cache", type=Path, default=Path("var/training/dr_heldout_raw"))
    parser.add_argument(
        "--headroom",
        action="store_true",
        help="analytic films drawn with display headroom (SynthConfig.headroom), kept in "
        "<raw-cache>_headroom: what the clip of the default phantoms hides",
    )
    args = parser.parse_args(argv)
    config, cache = None, args.raw_cache
    if args.headroom:
        config, cache = SynthConfig(headroom=True), cache.with_name(cache.name + "_headroom")
    analytic = analytic_set(range(*args.seeds), args.knee, cache, config)
    drr = drr_set(args.drr_dir, range(*args.drr_seeds), args.knee)
    print(
        f"preparation: {'clip' if args.knee is None else f'knee {args.knee:g}'}"
        + ("; analytic films with headroom" if args.headroom else "")
    )
    for path in args.models:
        run = ort_runner(path)
        reports = {"analytic": evaluate(run, analytic)}
        if drr:
            reports["DRR"] = evaluate(run, drr)
        summaries = {k: summarise(r) for k, r in reports.items()}
        # one operating point for both sets, as the exporter chooses it
        operating = max(s.operating for s in summaries.values())
        print(f"{path} (operating: <= {OPERATING_FP_RATE:g} FP/image on both sets)")
        for name, report in reports.items():
            flagged, free = nodule_free_flagged(report, operating)
            print(f"  {name}: {summaries[name].line(flagged, free, operating)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
