"""Train NoduleNet on phantom patches: resumable, checkpoint per epoch, tqdm progress."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.networks import NoduleNet
from training.ct_nodule.config import DataConfig, NoduleTrainingConfig
from training.ct_nodule.dataset import build_cases
from training.ct_nodule.real_data import build_real_cases
from training.ct_nodule.warm_start import warm_start

logger = logging.getLogger(__name__)


def load_cases(cfg: NoduleTrainingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phantom cases, then real ones (``[[real]]`` sources), subsampled by ``_select``."""
    data = cfg.data
    out = Path(cfg.work_dir) / "cases"
    paths = build_cases(data.train_list, data, out)
    seeds = list(data.train_list)
    if cfg.real:
        real = build_real_cases(cfg.real, data, out)
        paths += real
        seeds += [data.train_seeds[1] + 1 + n for n in range(len(real))]
    xs, ms, ys = [], [], []
    for seed, path in zip(tqdm(seeds, desc="cases", unit="case"), paths, strict=True):
        with np.load(path) as d:
            keep = _select(d["labels"], d["scores"] if "scores" in d.files else None, data, seed)
            xs.append(d["patches"][keep])
            ms.append(d["masks"][keep])
            ys.append(d["labels"][keep])
    return np.concatenate(xs), np.concatenate(ms), np.concatenate(ys)


def _select(y: np.ndarray, scores: np.ndarray | None, data: DataConfig, seed: int) -> np.ndarray:
    """All positives; of the negatives the hardest (highest reference-model score, when
    the case carries scores) plus a random share, ``max_negatives_per_case`` in all."""
    neg = np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    hard = np.zeros(0, dtype=int)
    if data.hard_negatives_per_case and scores is not None:
        hard = neg[np.argsort(-scores[neg], kind="stable")][: data.hard_negatives_per_case]
    rest = rng.permutation(np.setdiff1d(neg, hard))
    n_rest = max(0, data.max_negatives_per_case - len(hard))
    keep = np.concatenate([np.flatnonzero(y == 1), hard, rest[:n_rest]])
    return np.sort(keep)


def _augment(
    x: torch.Tensor, m: torch.Tensor, gen: torch.Generator, intensity: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips on every axis, a random axis order (the patch is isotropic), and a
    small gain/offset of the normalised HU (scanner calibration), the same for the batch."""
    for axis in (2, 3, 4):
        if torch.rand(1, generator=gen).item() < 0.5:
            x, m = x.flip(axis), m.flip(axis)
    perm = [0, 1, *(2 + torch.randperm(3, generator=gen)).tolist()]
    x, m = x.permute(perm), m.permute(perm)
    if intensity > 0:
        n = x.shape[0]
        gain = 1.0 + intensity * (2 * torch.rand(n, 1, 1, 1, 1, generator=gen) - 1)
        offset = intensity * (2 * torch.rand(n, 1, 1, 1, 1, generator=gen) - 1)
        x = (x * gain + offset).clamp(-1.0, 1.0)
    return x.contiguous(), m.contiguous()


def teacher_masks(
    model: Path, x: np.ndarray, y: np.ndarray, m: np.ndarray, batch: int = 256
) -> np.ndarray:
    """``m`` with each positive's mask replaced by ``model``'s (probability > 0.5, as the
    detector reads it); negatives keep their empty truth masks."""
    from training.ct_nodule.dataset import onnx_mask_runner

    run = onnx_mask_runner(model)
    out = m.copy()
    pos = np.flatnonzero(y == 1)
    for lo in range(0, len(pos), batch):
        idx = pos[lo : lo + batch]
        out[idx] = (run(x[idx][:, None].astype(np.float32))[:, 0] > 0.0).astype(np.uint8)
    return out


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
    if tc.mask_teacher is not None:
        m_all = teacher_masks(tc.mask_teacher, x_all, y_all, m_all)
    model = NoduleNet()
    if tc.init_from is not None:
        warm_start(model, tc.init_from, x_all, seed=tc.seed)
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
            x, m = _augment(x, m, gen, tc.intensity_jitter)
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
