"""Train the CTA vessel network on phantoms (resumable), then export and evaluate it.

``nice -n 10 python -m training.cta.train --config training/cta/config.toml``
"""

from __future__ import annotations

import argparse
import logging
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from tqdm import tqdm

from training.cta.data import make_case, positive_pool, sample_patches
from training.cta.losses import soft_cldice_loss
from training.cta.model import build_net
from training.cta.project_cases import load_cases

logger = logging.getLogger(__name__)


def train(config_path: Path, resume: bool = True) -> Path:
    cfg = tomllib.loads(config_path.read_text(encoding="utf-8"))
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(0)
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    net = build_net()
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg["lr"]), weight_decay=1e-4)
    iterations = int(cfg["iterations"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=float(cfg["lr"]), total_steps=iterations
    )
    start = 0
    init = cfg.get("init_from")
    if init and not (resume and ckpt.is_file()):
        # fine-tuning: weights from an earlier run, a fresh optimiser and schedule
        net.load_state_dict(torch.load(init, weights_only=False)["net"])
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = int(state["iteration"])
    seeds = range(*cfg["train_seeds"])
    t0 = time.perf_counter()
    # synth_resampled: synthetic cases drawn at random spacings and resampled to 1 mm,
    # as the pipeline meets every series (training.cta.data.make_case)
    resampled = bool(cfg.get("synth_resampled", False))
    cases = [make_case(s, resampled) for s in seeds]
    if cfg.get("project_cases"):
        # project phantoms (training.phantoms.cta), cached by training.cta.project_cases
        cases += load_cases(Path(cfg["project_cases"]))
    # thin_power > 0: centre positive patches per millimetre of vessel, not per voxel
    thin_power = float(cfg.get("thin_power", 0.0))
    pools = [positive_pool(c.label, thin_power) for c in cases] if thin_power > 0 else None
    logger.info("cases ready", extra={"n": len(cases), "s": round(time.perf_counter() - t0, 1)})
    loss_fn = DiceCELoss(sigmoid=True)
    cl_weight = float(cfg.get("cldice_weight", 0.0))
    cl_iters = int(cfg.get("cldice_iterations", 5))
    rng = np.random.default_rng(start)
    net.train()
    bar = tqdm(range(start, iterations), initial=start, total=iterations, desc="cta")
    for it in bar:
        x, y = sample_patches(
            cases,
            rng,
            int(cfg["batch"]),
            int(cfg["patch"]),
            float(cfg["positive_fraction"]),
            pools,
        )
        opt.zero_grad()
        logits, target = net(torch.from_numpy(x)), torch.from_numpy(y)
        loss = loss_fn(logits, target)
        if cl_weight > 0:
            loss = (1 - cl_weight) * loss + cl_weight * soft_cldice_loss(logits, target, cl_iters)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (it + 1) % 100 == 0 or it + 1 == iterations:
            torch.save(
                {
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "iteration": it + 1,
                },
                ckpt,
            )
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("training/cta/config.toml"))
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    train(args.config, resume=not args.fresh)


if __name__ == "__main__":
    main()
