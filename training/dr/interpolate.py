"""Weight-space interpolation of a fine-tuned DR model with its starting point (WiSE-FT).

Fine-tuning on a new domain (CT-projection DRRs) costs some accuracy on the old one
(analytic phantoms). Averaging the weights of the start and the fine-tuned model,
``(1 - alpha) * start + alpha * tuned``, keeps most of the gain on the new domain and
gives back much of the old one (Wortsman et al., "Robust fine-tuning of zero-shot
models", CVPR 2022). Batch-norm statistics are interpolated like the weights. ``alpha``
is chosen on the calibration seeds of the config (never trained on, not held out):
the largest mean of (DRR, analytic) >= 10 mm sensitivity over the FP rates.

    nice -n 10 python -m training.dr.interpolate --config training/dr/finetune3.toml \
        --start var/training/dr_nodule_v110/model.pt \
        --tuned var/training/dr_nodule_ft4/model.pt --out var/training/dr_nodule_wise/model.pt
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.dr.data import Sample, synth_sample
from training.dr.drr_cache import load_dir
from training.dr.export import load_net
from training.dr.heldout import evaluate
from training.dr.net import DRNoduleNet
from training.dr.train import TrainConfig

logger = logging.getLogger(__name__)

ALPHAS = (0.3, 0.5, 0.7, 1.0)


def mix(start: DRNoduleNet, tuned: DRNoduleNet, alpha: float) -> DRNoduleNet:
    a, b = start.state_dict(), tuned.state_dict()
    out = {}
    for k, v in b.items():
        out[k] = v if not v.is_floating_point() else (1 - alpha) * a[k] + alpha * v
    net = DRNoduleNet(int(b["enc1.1.0.weight"].shape[0]))  # width = channels of enc1
    net.load_state_dict(out)
    return net.eval()


def score(net: DRNoduleNet, analytic: list[Sample], drr: list[Sample]) -> tuple[float, float]:
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            h, d = net(torch.from_numpy(x))
        return h.numpy(), d.numpy()

    drr_sens = evaluate(run, drr).large.sensitivity
    ana_sens = evaluate(run, analytic).large.sensitivity
    return float(np.mean(list(drr_sens.values()))), float(np.mean(list(ana_sens.values())))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--start", type=Path, required=True)
    parser.add_argument("--tuned", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    cfg = TrainConfig.load(args.config)
    analytic = [synth_sample(s) for s in range(*cfg.calibration_seeds)]
    drr = load_dir(Path(cfg.drr_dir), range(*cfg.drr_calibration_seeds))
    start, tuned = load_net(args.start), load_net(args.tuned)
    best, best_alpha = -1.0, 1.0
    for alpha in ALPHAS:
        d, a = score(mix(start, tuned, alpha), analytic, drr)
        logger.info("alpha", extra={"alpha": alpha, "drr": round(d, 4), "analytic": round(a, 4)})
        print(f"alpha {alpha}: DRR {d:.4f}, analytic {a:.4f}")
        if (d + a) / 2 > best:
            best, best_alpha = (d + a) / 2, alpha
    net = mix(start, tuned, best_alpha)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "width": 16, "step": 0, "alpha": best_alpha}, args.out)
    print(f"chosen alpha {best_alpha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
