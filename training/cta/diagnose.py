"""Per-stenosis diagnostic of the CTA pipeline on project phantoms (issue 5).

For each ground-truth stenosis: the vessel found, measured and true %, grade, and where
the error comes from (measured vs true lumen diameter at the lesion and at the
reference, the reference the grader chose, how far the centreline and the called
narrowest point sit from the truth). Also named vessels, occlusions and false calls.

``nice -n 10 python -m training.cta.diagnose --seeds 601 602 --occlusion-seeds 611``

The acceptance set (tests/inference/test_cta_project.py) is the default; the wider
20-lesion set is ``--seeds 601 602 603 604 605 606 607 608 609 610 --occlusion-seeds
611 612 613 614`` (add ``--reuse-segmentation`` to iterate on the stages after the
network; the cache is keyed by seed, so clear it after changing the phantom).

The stages have been tuned on 601-614, so they flatter the pipeline: check a change on
seeds nobody tuned on too, e.g. ``--seeds 701 702 703 704 705 706 707 708 709 710
--occlusion-seeds`` (measured before f8b4bcb: 11/20 within 10 points there against
14/20 on 601-610, and 8 occlusion calls on open vessels, 5 of them stenosed) and a set
nobody looked at before a change, e.g. ``--seeds 801 ... 810 --occlusion-seeds 811 812``.
Several runs with different seeds share one ``--cache`` (and its segmentations), and
can run side by side.

``--synthetic`` runs the same report on the small synthetic phantoms of
training.cta.synth instead, e.g. the pipeline test's fixed set: ``--synthetic --seeds
501 502 503 504 505 --occlusion-seeds 511 512`` (three stenoses per case, or one and an
occlusion, as tests/inference/test_cta_pipeline.py draws them).
"""

from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NAMED = ("CCA_L", "CCA_R", "ICA_L", "ICA_R", "ECA_L", "ECA_R", "VA_L", "VA_R", "BA",
         "M1_L", "M1_R", "A1_L", "A1_R", "P1_L", "P1_R")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Summary:
    named: list[int]
    errors: list[float]
    grades: list[bool]
    occlusions: list[bool]
    false_calls: list[str]

    def line(self) -> str:
        e = np.asarray(self.errors)
        return (
            f"named {np.mean(self.named) if self.named else 0:.1f}/15"
            f" min {min(self.named, default=0)}"
            f" | within10 {(e <= 10).mean() if e.size else 0:.0%} ({(e <= 10).sum()}/{e.size})"
            f" | grade {np.mean(self.grades) if self.grades else 0:.0%}"
            f" | occl {sum(self.occlusions)}/{len(self.occlusions)}"
            f" | false >=50 % or occlusion {len(self.false_calls)} {self.false_calls}"
        )


def percent_error(finding: Any, truth_percent: float) -> float:
    """|measured - true| %; no stenosis finding reads "below REPORT_MIN_PERCENT"."""
    from inference.cta.stenosis import REPORT_MIN_PERCENT

    if finding is None:
        return max(0.0, truth_percent - REPORT_MIN_PERCENT)
    return abs((finding.measurement("stenosis_percent") or 0.0) - truth_percent)


def phantom(seed: int, cache: Path, **cfg: Any) -> Any:
    from training.phantoms.cta import CTAConfig, make_head_neck_cta

    key = "_".join(f"{k}{v}" for k, v in sorted(cfg.items()))
    path = cache / f"cta_{seed}_{key}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    p = make_head_neck_cta(seed, CTAConfig.small(phase="arterial", **cfg))
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(p))
    return p


@dataclass(frozen=True, slots=True)
class TruthVessel:
    points_lps: np.ndarray
    radius_mm: np.ndarray


@dataclass(frozen=True, slots=True)
class TruthStenosis:
    vessel: str
    percent: float
    length_mm: float
    min_diameter_mm: float
    reference_diameter_mm: float
    center_lps: tuple[float, float, float]
    reference_lps: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class SyntheticCase:
    """A training.cta.synth phantom in the project phantom's truth shape."""

    seed: str  # "synth<seed>": its segmentation cache never meets a project seed's
    volume: Any
    stenoses: tuple[TruthStenosis, ...]
    occlusions: tuple[Any, ...]
    vessels: dict[str, TruthVessel]


#: the synthetic phantoms' stenosis is against the vessel's calibre this far beyond it
SYNTH_REFERENCE_MM = 12.0


def synthetic_case(seed: int, occlusion: bool, cache: Path) -> SyntheticCase:
    from training.cta.synth import SynthConfig, make_synthetic_cta

    cfg = SynthConfig(n_stenoses=1, occlusion=True) if occlusion else SynthConfig(n_stenoses=3)
    path = cache / f"synth_{seed}_{cfg.n_stenoses}_{int(cfg.occlusion)}.pkl"
    if path.exists():
        p = pickle.loads(path.read_bytes())
    else:
        p = make_synthetic_cta(seed, cfg)
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(p))
    vessels = {n: TruthVessel(p.centerlines[n], p.radii[n]) for n in p.centerlines}
    stenoses = []
    for st in p.stenoses:
        v = vessels[st.vessel]
        i, _ = _nearest(v.points_lps, np.asarray(st.center_lps))
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(v.points_lps, axis=0), axis=1))]
        near = np.abs(arc - arc[i]) <= st.length_mm / 2
        j = int(np.argmin(np.abs(arc - arc[i] - SYNTH_REFERENCE_MM)))
        stenoses.append(
            TruthStenosis(
                st.vessel,
                st.percent,
                st.length_mm,
                2.0 * float(v.radius_mm[near].min()),
                2.0 * float(v.radius_mm[j]),
                st.center_lps,
                tuple(float(x) for x in v.points_lps[j]),  # type: ignore[arg-type]
            )
        )
    return SyntheticCase(f"synth{seed}", p.volume, tuple(stenoses), p.occlusions, vessels)


def analyse(p: Any, pipe: Any, cache: Path | None) -> Any:
    """``analyze_volume``; with ``cache`` the network's segmentation is reused between
    runs (for iterating on the stages after it)."""
    import inference.cta.analysis as analysis

    if cache is None:
        return analysis.analyze_volume(p.volume, pipe.predict, logit_threshold=pipe.logit_threshold)
    path = cache / f"seg_{p.seed}_{len(p.stenoses)}_{len(p.occlusions)}.pkl"
    real = analysis.segment

    def cached(*args: Any, **kw: Any) -> Any:
        if path.exists():
            return pickle.loads(path.read_bytes())
        out = real(*args, **kw)
        path.write_bytes(pickle.dumps(out))
        return out

    analysis.segment = cached  # type: ignore[assignment]
    try:
        return analysis.analyze_volume(p.volume, pipe.predict, logit_threshold=pipe.logit_threshold)
    finally:
        analysis.segment = real


def _nearest(points: np.ndarray, x: np.ndarray) -> tuple[int, float]:
    d = np.linalg.norm(points - x, axis=1)
    i = int(np.argmin(d))
    return i, float(d[i])


def truth_diameter(p: Any, vessel: str, at: np.ndarray) -> tuple[float, float]:
    """True lumen diameter at the truth centreline point nearest ``at``, and that distance."""
    v = p.vessels[vessel]
    i, dist = _nearest(v.points_lps, at)
    return 2.0 * float(v.radius_mm[i]), dist


def report_case(p: Any, a: Any, findings: list[Any], s: Summary) -> None:
    from inference.cta.stenosis import grade_of

    names = set(a.naming.vessels)
    s.named.append(len(names & set(NAMED)))
    truth_occ = {o.vessel for o in p.occlusions}
    for f in findings:
        if f.kind == "occlusion" and f.attribute("vessel") not in truth_occ:
            print(f"  FALSE occlusion call {f.attribute('vessel')} ({f.attribute('reason')})")
            s.false_calls.append(f"{p.seed}:{f.attribute('vessel')} occlusion")
    missing = sorted(set(NAMED) - names)
    occl = sorted(c.vessel for c in a.naming.occlusions)
    untraced = sorted(c.vessel for c in a.naming.not_traced)
    print(
        f"seed {p.seed}: named {len(names & set(NAMED))} missing {missing} occl-calls {occl}"
        + (f" not-traced {untraced}" if untraced else "")
    )
    by = {f.attribute("vessel"): f for f in findings if f.kind == "stenosis"}
    truth_vessels = {st.vessel for st in p.stenoses}
    for st in p.stenoses:
        f = by.get(st.vessel)
        pct = (f.measurement("stenosis_percent") or 0.0) if f else 0.0
        grade = f.attribute("grade") if f else "mild"
        s.errors.append(percent_error(f, st.percent))
        s.grades.append(grade == grade_of(st.percent))
        line = (
            f"  {st.vessel:5s} truth {st.percent:5.1f}% len {st.length_mm:4.1f} "
            f"dmin {st.min_diameter_mm:.2f} dref {st.reference_diameter_mm:.2f} | "
            f"got {pct:5.1f}% {grade:14s}"
        )
        prof = a.profiles.get(st.vessel)
        call = a.stenoses.get(st.vessel)
        if prof is None:
            print(line + " | vessel not named")
            continue
        c = np.asarray(st.center_lps)
        ic, off = _nearest(prof.points, c)
        w = int(3.0 / 0.5)
        lo, hi = max(0, ic - w), min(len(prof.diameter_mm), ic + w + 1)
        dmeas = float(prof.diameter_mm[lo:hi].min())
        r = np.asarray(st.reference_lps)
        ir, _ = _nearest(prof.points, r)
        dref_meas = float(prof.diameter_mm[ir])
        line += f" | at-lesion meas {dmeas:.2f} (cl off {off:.1f} mm) | at-ref meas {dref_meas:.2f}"
        if prof.blur_mm is not None:
            # the image's blur along the vessel at the lesion (inference.cta.blur), which
            # is taken out of severe waists
            line += f" | blur {prof.blur_mm[ic]:.2f} mm"
        if call is not None:
            cp = prof.points[call.index]
            line += (
                f" | call dmin {call.min_diameter_mm:.2f} ref {call.reference_mm:.2f}"
                f" at {np.linalg.norm(cp - c):.1f} mm from truth"
            )
        print(line)
    for name, f in by.items():
        if name in truth_vessels:
            continue
        pct = f.measurement("stenosis_percent") or 0.0
        call = a.stenoses.get(name)
        extra = ""
        if call is not None:
            prof = a.profiles[name]
            at = prof.points[call.index]
            dt, dist = truth_diameter(p, name, at) if name in p.vessels else (float("nan"), 0.0)
            extra = (
                f" dmin {call.min_diameter_mm:.2f} ref {call.reference_mm:.2f} truth-d {dt:.2f}"
                f" (off {dist:.1f}) len {call.length_mm} n {len(prof.diameter_mm)}"
            )
        flag = "FALSE" if pct >= 50 else "     "
        print(f"  {flag} {name:5s} {pct:5.1f}% {f.attribute('grade')}{extra}")
        if pct >= 50:
            s.false_calls.append(f"{p.seed}:{name}")


def calibre_bias(p: Any, a: Any) -> None:
    """Median measured/true diameter per vessel (away from lesions)."""
    out = []
    for name, prof in sorted(a.profiles.items()):
        if name not in p.vessels:
            continue
        v = p.vessels[name]
        ratios = []
        for q, dm in zip(prof.points, prof.diameter_mm, strict=True):
            i, dist = _nearest(v.points_lps, q)
            if dist < 1.5:
                ratios.append(dm / (2.0 * v.radius_mm[i]))
        if ratios:
            out.append(f"{name} {np.median(ratios):.2f}")
    print("  calibre meas/true: " + ", ".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="*", default=[601, 602, 603, 604])
    parser.add_argument("--occlusion-seeds", type=int, nargs="*", default=[611, 612])
    parser.add_argument("--cache", type=Path, default=Path("var/diag/cta"))
    parser.add_argument("--bias", action="store_true")
    parser.add_argument("--reuse-segmentation", action="store_true")
    parser.add_argument("--synthetic", action="store_true", help="training.cta.synth phantoms")
    args = parser.parse_args()

    import tempfile

    from countyread.settings import Settings
    from inference.cta import CTAPipeline

    pipe = CTAPipeline.create(Settings(data_dir=Path(tempfile.mkdtemp())))
    s = Summary([], [], [], [], [])
    for seed in args.seeds:
        if args.synthetic:
            p = synthetic_case(seed, False, args.cache)
        else:
            p = phantom(seed, args.cache, n_stenoses=2, n_occlusions=0)
        a = analyse(p, pipe, args.cache if args.reuse_segmentation else None)
        report_case(p, a, pipe.findings(a, p.volume, "1.2.3"), s)
        if args.bias:
            calibre_bias(p, a)
    for seed in args.occlusion_seeds:
        if args.synthetic:
            p = synthetic_case(seed, True, args.cache)
        else:
            p = phantom(seed, args.cache, n_stenoses=0, n_occlusions=1)
        a = analyse(p, pipe, args.cache if args.reuse_segmentation else None)
        findings = pipe.findings(a, p.volume, "1.2.3")
        found = {str(f.attribute("vessel")) for f in findings if f.kind == "occlusion"}
        for occ in p.occlusions:
            s.occlusions.append(occ.vessel in found)
            print(f"seed {seed}: occlusion truth {occ.vessel} found {sorted(found)}")
        report_case(p, a, findings, Summary([], [], [], [], s.false_calls))
    print(s.line())


if __name__ == "__main__":
    main()
