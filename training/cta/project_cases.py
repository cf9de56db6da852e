"""Cache project phantom CTAs (training.phantoms.cta) at the network spacing for training.

``nice -n 10 python -m training.cta.project_cases --seeds 300 312 --out var/training/cta/project``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from inference.cta.grid import resample, work_grid
from training.cta.data import Case, normalise
from training.cta.model import SPACING_MM

#: vessel_labels values of arteries (named, arch, subclavian, branches, communicating)
ARTERY_LABELS = tuple(range(1, 25))


def make_project_case(seed: int) -> tuple[Case, str]:
    from training.phantoms.cta import CTAConfig, make_head_neck_cta

    p = make_head_neck_cta(seed, CTAConfig.small(phase="arterial"))
    grid = work_grid(p.volume, SPACING_MM)
    hu = resample(p.volume, grid)
    artery = np.isin(p.vessel_labels, ARTERY_LABELS).astype(np.float32)
    label = resample(p.volume.with_array(artery), grid) > 0.5
    bone = hu > 200
    bone &= ~label
    return Case(normalise(hu), label.astype(np.uint8), bone), p.phase


def load_cases(directory: Path) -> list[Case]:
    out = []
    for path in sorted(directory.glob("case_*.npz")):
        z = np.load(path)
        out.append(Case(z["image"], z["label"], z["bone"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs=2, default=(300, 312))
    parser.add_argument("--out", type=Path, default=Path("var/training/cta/project"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in range(*args.seeds):
        target = args.out / f"case_{seed}.npz"
        if target.exists():
            continue
        case, _ = make_project_case(seed)
        np.savez_compressed(target, image=case.image, label=case.label, bone=case.bone)


if __name__ == "__main__":
    main()
