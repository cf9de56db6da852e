"""Measurement-only diagnostic of the CT nodule stage (issue 4): each truth nodule is
measured at its true centre, skipping the candidate generator and the detector's
thresholds, so measurement changes can be judged in seconds per case.

For every truth nodule >= ``--min-mm`` a candidate is put at the truth centre with the
truth radius; the shipped network scores that one patch, its mask is grown on HU
(``nodule_mask``), refit (``refine.refit``) and assessed (``analysis.assess``) exactly as
in the pipeline. ``--truth-mask`` measures the phantom's own instance mask instead (what
the measurement code makes of a perfect segmentation). The report adds the diameter
figure against the truth measured on each slice's largest piece of the nodule
(``largest_piece_mm``): spiculated truths otherwise span spicule dots on an off-body
slice. ``--full`` runs the whole pipeline (``evaluate_phantoms``) and reports on its
matched nodules instead.

Phantoms are cached under ``--cache`` (outside the repository). Example::

    nice -n 10 python -m training.ct_nodule.diagnose_measure --seeds 9000-9023
"""

from __future__ import annotations

import argparse
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from inference.ct_nodule.analysis import AssessedNodule, assess
from inference.ct_nodule.candidates import Candidate
from inference.ct_nodule.detector import Detection, RunFn, _sigmoid, nodule_mask
from inference.ct_nodule.lungs import LungMask, segment_lungs
from inference.ct_nodule.patches import extract_patch, patch_spacing
from inference.ct_nodule.refine import refit
from models.registry import ModelRegistry
from training.ct_nodule.config import load_config
from training.ct_nodule.dataset import phantom_config
from training.ct_nodule.evaluate import onnx_runner, truth_category
from training.phantoms.ct import CTPhantom, make_chest_ct
from training.phantoms.measure import axial_size
from training.phantoms.nodules import NoduleTruth

CONFIG = Path("training/configs/ct_nodule.toml")


@dataclass(frozen=True, slots=True)
class Row:
    seed: int
    truth: NoduleTruth
    nodule: AssessedNodule | None
    # the truth's mean diameter on the largest piece of each slice (``largest_piece_mm``)
    piece_mm: float | None = None

    @property
    def truth_cat(self) -> str:
        return truth_category(self.truth)


def load_phantom(seed: int, cache: Path) -> tuple[CTPhantom, LungMask]:
    path = cache / f"{seed}.pkl"
    if path.exists():
        with path.open("rb") as f:
            ph, lung = pickle.load(f)  # our own cache, written below
        return ph, lung
    cfg = load_config(CONFIG)
    ph = make_chest_ct(seed, phantom_config(seed, cfg.data))
    lung = segment_lungs(ph.volume)
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump((ph, lung), f, protocol=pickle.HIGHEST_PROTOCOL)
    return ph, lung


def detection_at_truth(ph: CTPhantom, t: NoduleTruth, run: RunFn) -> Detection | None:
    """The pipeline's mask for a candidate at the truth centre with the truth radius."""
    vol = ph.volume
    centre = vol.lps_to_index(t.center_lps)
    kji = (float(centre[0]), float(centre[1]), float(centre[2]))
    cand = Candidate(kji, max(1.5, t.mean_diameter_mm / 2.0), 0.0)
    x = extract_patch(vol.array, kji, patch_spacing(cand.radius_mm), vol.spacing)[None, None]
    logit, mask_logit = run(x)
    seg = nodule_mask(vol, cand, _sigmoid(mask_logit[0, 0]))
    if seg is None:
        return None
    box, mask = seg
    c = np.asarray(ndimage.center_of_mass(mask)) + np.array([b.start for b in box])
    det = Detection(
        float(_sigmoid(logit[:, 0])[0]), box, mask, (float(c[0]), float(c[1]), float(c[2]))
    )
    out = refit(vol, [det], run)
    return out[0] if out else None


def truth_detection(ph: CTPhantom, t: NoduleTruth) -> Detection:
    """The phantom's own mask of this nodule as a detection."""
    lab = ph.instance_mask == t.index + 1
    (box,) = ndimage.find_objects(lab.astype(np.uint8))
    grown = tuple(
        slice(max(0, s.start - 2), min(n, s.stop + 2)) for s, n in zip(box, lab.shape, strict=True)
    )
    mask = lab[grown]
    c = np.asarray(ndimage.center_of_mass(mask)) + np.array([s.start for s in grown])
    centre = (float(c[0]), float(c[1]), float(c[2]))
    return Detection(1.0, (grown[0], grown[1], grown[2]), mask, centre)


def largest_piece_mm(ph: CTPhantom, t: NoduleTruth) -> float:
    """The truth's mean diameter with each axial slice cut to its largest 8-connected
    piece of the nodule's mask.

    The truth (``training/phantoms/measure.axial_size``) takes the slice with the longest
    axis over all of the mask's pieces on it: on a slice above or below a spiculated
    nodule's body its spicules cross as separate dots, and the axis between two of them
    (e.g. 42.2 x 2.7 mm for a 22 mm nodule, 9019/7) is no diameter a reader would take.
    """
    lab = ph.instance_mask == t.index + 1
    (box,) = ndimage.find_objects(lab.astype(np.uint8))
    mask = lab[box]
    pieces = np.zeros_like(mask)
    for k in range(mask.shape[0]):
        parts, n = ndimage.label(mask[k], np.ones((3, 3), dtype=bool))
        if n:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            pieces[k] = parts == int(np.argmax(sizes))
    _, dy, dx = ph.volume.spacing
    return axial_size(pieces, dy, dx).mean_diameter_mm


def rows_for(
    seeds: Sequence[int], run: RunFn, cache: Path, min_mm: float, use_truth_mask: bool
) -> list[Row]:
    rows = []
    for seed in seeds:
        ph, lung = load_phantom(seed, cache)
        for t in ph.nodules:
            if t.mean_diameter_mm < min_mm:
                continue
            det = truth_detection(ph, t) if use_truth_mask else detection_at_truth(ph, t, run)
            nodule = assess(ph.volume, lung, det) if det else None
            rows.append(Row(seed, t, nodule, largest_piece_mm(ph, t)))
    return rows


def full_rows(
    seeds: Sequence[int], run: RunFn, cache: Path, threshold: float, min_mm: float
) -> list[Row]:
    """Rows from the whole pipeline: each truth's matched nodule (as evaluate.py matches)."""
    from inference.ct_nodule.analysis import analyze_volume

    rows = []
    for seed in seeds:
        ph, _ = load_phantom(seed, cache)
        analysis = analyze_volume(ph.volume, run, min_probability=0.01)
        found = [(ph.volume.index_to_lps(n.detection.center_kji), n) for n in analysis.nodules]
        for t in ph.nodules:
            if t.mean_diameter_mm < min_mm:
                continue
            hits = [
                n
                for c, n in found
                if np.linalg.norm(np.subtract(c, t.center_lps))
                <= max(t.mean_diameter_mm / 2.0, 2.0)
                and n.detection.probability >= threshold
            ]
            best = max(hits, key=lambda h: h.detection.probability) if hits else None
            rows.append(Row(seed, t, best, largest_piece_mm(ph, t)))
        print(f"seed {seed} done", flush=True)
    return rows


def _table(title: str, pairs: list[tuple[str, str]]) -> str:
    truths = sorted({a for a, _ in pairs})
    found = sorted({b for _, b in pairs})
    count = Counter(pairs)
    w = max(12, *(len(x) + 1 for x in found))
    lines = [title, "truth \\ measured".ljust(22) + "".join(f.rjust(w) for f in found)]
    for a in truths:
        lines.append(a.ljust(22) + "".join(str(count[(a, b)] or ".").rjust(w) for b in found))
    return "\n".join(lines)


def report(rows: list[Row], verbose: bool) -> str:
    matched = [r for r in rows if r.nodule is not None]
    out = []
    if verbose:
        out.append(
            "seed  idx kind         shape      location      d_true d_meas  type_meas    "
            "solid_t solid_m  margin      sol   cat_t cat_m"
        )
        for r in rows:
            t, n = r.truth, r.nodule
            if n is None:
                out.append(f"{r.seed} {t.index:3d} {t.kind:12s} {t.shape:10s} (no mask)")
                continue
            m = n.measurements
            flag = "" if n.category == r.truth_cat else "  <-- cat"
            if abs(m.axes.mean_mm - t.mean_diameter_mm) > 1.5:
                flag += "  <-- diam"
            if m.type.value != t.kind:
                flag += "  <-- type"
            out.append(
                f"{r.seed} {t.index:3d} {t.kind:12s} {t.shape:10s} {t.location:13s} "
                f"{t.mean_diameter_mm:6.1f} {m.axes.mean_mm:6.1f}  {m.type.value:12s} "
                f"{(t.solid_part_mm or 0):7.1f} {m.solid_part_mm:7.1f}  {m.margin:10s} "
                f"{m.solidity:5.3f} {r.truth_cat:>5s} {n.category:>5s}{flag}"
            )
    if not matched:
        return "\n".join([*out, "no matched nodules"])
    pairs = [(r, r.nodule) for r in matched if r.nodule is not None]
    err = np.array([abs(n.measurements.axes.mean_mm - r.truth.mean_diameter_mm) for r, n in pairs])
    type_ok = np.mean([n.measurements.type.value == r.truth.kind for r, n in pairs])
    cat_ok = np.mean([n.category == r.truth_cat for r, n in pairs])
    out.append(
        f"\nmatched {len(matched)} of {len(rows)}: diameter within 1.5 mm "
        f"{float((err <= 1.5).mean()):.3f} (mean abs error {float(err.mean()):.2f} mm), "
        f"type {type_ok:.3f}, Lung-RADS {cat_ok:.3f}"
    )
    pieces = [(n, r.piece_mm) for r, n in pairs if r.piece_mm is not None]
    if pieces:
        perr = np.array([abs(n.measurements.axes.mean_mm - d) for n, d in pieces])
        out.append(
            f"against the truth's largest piece per slice ({len(pieces)} nodules): diameter "
            f"within 1.5 mm {float((perr <= 1.5).mean()):.3f} (mean abs error "
            f"{float(perr.mean()):.2f} mm)"
        )
    out.append(_table("\ntype", [(r.truth.kind, n.measurements.type.value) for r, n in pairs]))
    out.append(
        _table("\nshape -> margin", [(r.truth.shape, n.measurements.margin) for r, n in pairs])
    )
    out.append(_table("\nLung-RADS", [(r.truth_cat, n.category) for r, n in pairs]))
    by_loc: dict[str, list[float]] = {}
    for (r, _), e in zip(pairs, err, strict=True):
        by_loc.setdefault(r.truth.location, []).append(float(e))
    shares = [
        f"{k} {float((np.array(v) <= 1.5).mean()):.2f} (n={len(v)})"
        for k, v in sorted(by_loc.items())
    ]
    out.append("\ndiameter within 1.5 mm by location: " + ", ".join(shares))
    return "\n".join(out)


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="9000-9023", help="e.g. 9000-9023 or 9000,9004")
    p.add_argument("--cache", type=Path, default=Path("/tmp/ct_measure_cache"))
    p.add_argument("--min-mm", type=float, default=6.0)
    p.add_argument("--truth-mask", action="store_true", help="measure the phantom's own mask")
    p.add_argument("--full", action="store_true", help="whole pipeline, evaluate.py matching")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per nodule")
    args = p.parse_args(list(argv) if argv is not None else None)
    artifact = ModelRegistry().load("ct_nodule")
    run = onnx_runner(artifact.directory, threads=1)
    seeds = _seeds(args.seeds)
    if args.full:
        rows = full_rows(seeds, run, args.cache, artifact.card.operating_threshold, args.min_mm)
    else:
        rows = rows_for(seeds, run, args.cache, args.min_mm, args.truth_mask)
    print(report(rows, args.verbose))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
