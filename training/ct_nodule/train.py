"""Train NoduleNet on phantom patches: resumable, checkpoint per epoch, tqdm progress."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.networks import NoduleNet
from training.ct_nodule.config import NoduleTrainingConfig
from training.ct_nodule.dataset import build_case

logger = logging.getLogger(__name__)


def load_cases(cfg: NoduleTrainingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = Path(cfg.work_dir) / "cases"
    out.mkdir(parents=True, exist_ok=True)
    xs, ms, ys = [], [], []
    for seed in tqdm(cfg.data.train_list, desc="cases", unit="case"):
        with np.load(build_case(seed, cfg.data, out)) as d:
            y = d["labels"]
            neg = np.flatnonzero(y == 0)
            rng = np.random.default_rng(seed)
            drop = rng.permutation(neg)[cfg.data.max_negatives_per_case :]
            keep = np.setdiff1d(np.arange(len(y)), drop)
            xs.append(d["patches"][keep])
            ms.append(d["masks"][keep])
            ys.append(y[keep])
    return np.concatenate(xs), np.concatenate(ms), np.concatenate(ys)


def _augment(
    x: torch.Tensor, m: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips on every axis and in-plane transposition (the same for patch and mask)."""
    for axis in (2, 3, 4):
        if torch.rand(1, generator=gen).item() < 0.5:
            x, m = x.flip(axis), m.flip(axis)
    if torch.rand(1, generator=gen).item() < 0.5:
        x, m = x.transpose(3, 4), m.transpose(3, 4)
    return x, m


def _dice_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logit)
    inter = (p * target).sum(dim=(1, 2, 3, 4))
    denom = p.sum(dim=(1, 2, 3, 4)) + target.sum(dim=(1, 2, 3, 4))
    return (1 - (2 * inter + 1) / (denom + 1)).mean()


def checkpoint_path(cfg: NoduleTrainingConfig) -> Path:
    return Path(cfg.work_dir) / "checkpoint.pt"


def train(cfg: NoduleTrainingConfig) -> Path:
    """Train (resuming from the last checkpoint) and return the checkpoint path."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    x_all, m_all, y_all = load_cases(cfg)
    logger.info("training set", extra={"patches": len(y_all), "positives": int(y_all.sum())})
    model = NoduleNet()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(y_all) / tc.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=tc.learning_rate, total_steps=tc.epochs * steps_per_epoch
    )
    start = 0
    ckpt = checkpoint_path(cfg)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["epoch"])
        logger.info("resumed", extra={"epoch": start})
    pos_weight = torch.tensor(
        [(len(y_all) - y_all.sum()) / max(1, y_all.sum())], dtype=torch.float32
    )
    bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    seg_bce = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(tc.seed)
    for epoch in range(start, tc.epochs):
        model.train()
        order = np.random.default_rng([tc.seed, epoch]).permutation(len(y_all))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch")
        running = 0.0
        for step in bar:
            idx = np.sort(order[step * tc.batch_size : (step + 1) * tc.batch_size])
            x = torch.from_numpy(x_all[idx].astype(np.float32)).unsqueeze(1)
            m = torch.from_numpy(m_all[idx].astype(np.float32)).unsqueeze(1)
            y = torch.from_numpy(y_all[idx].astype(np.float32)).unsqueeze(1)
            x, m = _augment(x, m, gen)
            logit, mask_logit = model(x)
            pos = y[:, 0] > 0
            loss = bce(logit, y) + tc.seg_weight * seg_bce(mask_logit, m)
            if pos.any():
                loss = loss + tc.seg_weight * _dice_loss(mask_logit[pos], m[pos])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss.detach())
            running = 0.9 * running + 0.1 * value if step else value
            bar.set_postfix(loss=f"{running:.3f}")
        tmp = ckpt.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch + 1,
            },
            tmp,
        )
        tmp.replace(ckpt)
        logger.info("epoch done", extra={"epoch": epoch + 1, "loss": round(running, 4)})
    return ckpt
