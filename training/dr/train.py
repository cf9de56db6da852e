"""Train the DR nodule model on phantom radiographs (CPU-friendly, resumable).

    nice -n 10 python -m training.dr.train --config training/dr/config.toml \
        --out var/training/dr_nodule [--resume] [--max-minutes 25]

Checkpoints (``last.pt``: weights, optimiser, step) go to ``--out`` every
``checkpoint_every`` steps and at the end; ``--resume`` continues from ``last.pt``.
"""

from __future__ import annotations

import argparse
import logging
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.dr.data import Sample, augment, jitter, synth_sample, targets
from training.dr.drr_cache import has_raw, load_dir, reprepare
from training.dr.net import DRNoduleNet
from training.dr.synth import SynthConfig

logger = logging.getLogger(__name__)

DRR_FULL_SHARE_AT = 30  # DRR images needed before ``drr_fraction`` applies in full


@dataclass(frozen=True, slots=True)
class TrainConfig:
    name: str
    version: str
    train_seeds: tuple[int, int]
    held_out_seeds: tuple[int, int]
    matrix: tuple[int, int]
    batch_size: int
    steps: int
    lr: float
    weight_decay: float
    size_loss_weight: float
    width: int
    seed: int
    checkpoint_every: int
    # Optional fine-tuning on cached CT-projection DRRs (training/dr/drr_cache.py).
    init: str = ""  # checkpoint to start from
    drr_dir: str = "var/training/dr_drr"
    drr_train_seeds: tuple[int, int] = (0, 0)
    drr_held_out_seeds: tuple[int, int] = (0, 0)
    drr_fraction: float = 0.0  # share of each batch drawn from the DRR pool
    # Fresh phantoms drawn in a helper process while the network trains (no repeats: a
    # small pool is memorised within a few epochs). Seeds count up from ``fresh_seed0``.
    fresh_fraction: float = 0.0
    fresh_seed0: int = 1_000_000
    jitter_fraction: float = 0.0  # share of samples rotated / scaled / shifted (data.jitter)
    # Apart from training and held-out: the exporter fits the diameter calibration here.
    calibration_seeds: tuple[int, int] = (0, 0)
    drr_calibration_seeds: tuple[int, int] = (0, 0)
    # Optional NODE21 copy (training.loaders.node21): image folder and box csv; the share
    # of each batch drawn from it and how many images to load (0: all).
    node21_images: str = ""
    node21_boxes: str = ""
    node21_fraction: float = 0.0
    node21_limit: int = 0
    # Export only: ship the network and its left-right mirror averaged in one graph
    # (training.dr.net.FlipAveraged); training is unchanged.
    flip_average: bool = False
    # Export only: also average over copies moved by these many pixels along the diagonal
    # (training.dr.net.ShiftAveraged; multiples of 4, with 0); () leaves it out.
    shift_average: tuple[int, ...] = ()
    # Analytic training phantoms only (training.dr.synth.SynthConfig); held-out ones keep
    # the defaults.
    synth_p_calcified: float = 0.0
    synth_p_thin_lung: float = 0.0
    # Nodules under this diameter (mm) are soft targets in training, neither rewarded nor
    # punished (as hidden ones): whether firing on small spots is what costs the large ones.
    min_target_mm: float = 0.0
    # Preparation: a soft knee above this [0, 1] level instead of the clip at the 99.5th
    # percentile (inference.dr.image.normalise; 0: clip, as models up to 1.4.0), and
    # analytic training phantoms drawn with display headroom (SynthConfig.headroom).
    knee: float = 0.0
    synth_headroom: bool = False
    # Analytic training nodules' diameter range (mm, drawn log-uniform; the held-out
    # films keep SynthConfig's 5-30): a narrower range puts more of them at 10-15 mm.
    synth_diameter_mm: tuple[float, float] = (5.0, 30.0)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        for key in (
            "train_seeds",
            "held_out_seeds",
            "matrix",
            "drr_train_seeds",
            "drr_held_out_seeds",
            "calibration_seeds",
            "drr_calibration_seeds",
            "shift_average",
            "synth_diameter_mm",
        ):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def synth(self) -> SynthConfig:
        return SynthConfig(
            matrix=self.matrix,
            p_calcified=self.synth_p_calcified,
            p_thin_lung=self.synth_p_thin_lung,
            headroom=self.synth_headroom,
            diameter_mm=self.synth_diameter_mm,
        )

    @property
    def prep_knee(self) -> float | None:
        return self.knee or None

    def drr_samples(self, seeds: range) -> list[Sample]:
        """Cached DRR entries of ``drr_dir`` prepared as this config prepares films (with
        a knee, only entries that kept their display values)."""
        directory = Path(self.drr_dir)
        if self.prep_knee is None:
            return load_dir(directory, seeds)
        paths = [directory / f"{s}.npz" for s in seeds]
        return [reprepare(p, self.prep_knee) for p in paths if p.is_file() and has_raw(p)]


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), per positive."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1.0).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def build_pool(cfg: TrainConfig, cache_dir: Path | None = None) -> list[Sample]:
    """The synthetic training pool, drawn once (and cached beside the checkpoints)."""
    seeds = range(*cfg.train_seeds)
    cache = None
    if cache_dir is not None:
        name = f"pool_{seeds.start}_{seeds.stop}_{cfg.matrix[0]}_{cfg.matrix[1]}"
        if cfg.synth_p_calcified or cfg.synth_p_thin_lung:
            name += f"_c{cfg.synth_p_calcified:g}_t{cfg.synth_p_thin_lung:g}"
        if cfg.knee or cfg.synth_headroom:
            name += f"_k{cfg.knee:g}_h{int(cfg.synth_headroom)}"
        if cfg.synth_diameter_mm != (5.0, 30.0):
            name += "_d{:g}-{:g}".format(*cfg.synth_diameter_mm)
        cache = cache_dir / f"{name}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                images, nodules, counts = z["images"], z["nodules"], z["counts"]
            out, k = [], 0
            for img, n in zip(images, counts, strict=True):
                rows = tuple(tuple(float(v) for v in r) for r in nodules[k : k + n])
                out.append(Sample(img.astype(np.float32), rows))  # type: ignore[arg-type]
                k += n
            return out
    pool = [
        synth_sample(s, cfg.synth(), cfg.prep_knee)
        for s in tqdm(seeds, desc="phantoms", unit="img")
    ]
    if cache is not None:
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            images=np.stack([s.image for s in pool]).astype(np.float16),
            nodules=np.asarray([n for s in pool for n in s.nodules], np.float64).reshape(-1, 4),
            counts=np.asarray([len(s.nodules) for s in pool], np.int64),
        )
        tmp.replace(cache)
    return pool


def node21_pool(cfg: TrainConfig) -> list[Sample]:
    """The NODE21 samples of the config (none unless a share and both paths are given)."""
    if not (cfg.node21_fraction and cfg.node21_images and cfg.node21_boxes):
        return []
    from training.dr.node21_source import load_samples

    limit = cfg.node21_limit or None
    return load_samples(Path(cfg.node21_images), Path(cfg.node21_boxes), limit)


def flip(s: Sample) -> Sample:
    """Mirror left-right (more anatomy variety from a small pool); truth mirrored too."""
    width = s.image.shape[1]
    nodules = tuple((r, width - 1 - c, d, mm) for r, c, d, mm in s.nodules)
    hidden = tuple((r, width - 1 - c, d, mm) for r, c, d, mm in s.hidden)
    return Sample(np.ascontiguousarray(s.image[:, ::-1]), nodules, hidden)


class FreshSamples:
    """Phantoms made ahead in one worker process, ``depth`` requests in flight."""

    def __init__(self, seed0: int, depth: int = 48) -> None:
        import multiprocessing

        self._pool = multiprocessing.get_context("fork").Pool(1)
        self._next = seed0
        self._pending: list[Any] = []
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        self._pending.append(self._pool.apply_async(synth_sample, (self._next,)))
        self._next += 1

    def take(self) -> Sample:
        sample: Sample = self._pending.pop(0).get()
        self._submit()
        return sample

    def close(self) -> None:
        self._pool.terminate()


def batch(
    pool: list[Sample],
    idx: np.ndarray,
    rng: np.random.Generator,
    drr: list[Sample] | None = None,
    drr_fraction: float = 0.0,
    fresh: FreshSamples | None = None,
    fresh_fraction: float = 0.0,
    jitter_fraction: float = 0.0,
    node21: list[Sample] | None = None,
    node21_fraction: float = 0.0,
    min_target_mm: float = 0.0,
) -> tuple[torch.Tensor, ...]:
    xs, hs, ds, ws = [], [], [], []
    for i in idx:
        u = rng.random()
        if drr and u < drr_fraction:
            s = drr[int(rng.integers(len(drr)))]
        elif fresh is not None and u < drr_fraction + fresh_fraction:
            s = fresh.take()
        elif node21 and u < drr_fraction + fresh_fraction + node21_fraction:
            s = node21[int(rng.integers(len(node21)))]
        else:
            s = pool[int(i)]
        if rng.random() < 0.5:
            s = flip(s)
        if rng.random() < jitter_fraction:
            s = jitter(s, rng)
        if min_target_mm:
            small = tuple(n for n in s.nodules if n[3] < min_target_mm)
            kept = tuple(n for n in s.nodules if n[3] >= min_target_mm)
            s = Sample(s.image, kept, s.hidden + small)
        h, d, w = targets(s)
        xs.append(augment(s.image, rng))
        hs.append(h)
        ds.append(d)
        ws.append(w)
    return tuple(torch.from_numpy(np.stack(a)[:, None]) for a in (xs, hs, ds, ws))


def train(cfg: TrainConfig, out: Path, resume: bool, max_minutes: float | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = DRNoduleNet(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1
    )
    step = 0
    last = out / "last.pt"
    if resume and last.is_file():
        state = torch.load(last, weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        rng = np.random.default_rng([cfg.seed, step])
        logger.info("resumed", extra={"step": step})
    if cfg.init and step == 0:
        net.load_state_dict(torch.load(cfg.init, weights_only=False)["model"])
        logger.info("initialised", extra={"from": cfg.init})
    pool = build_pool(cfg, out)
    fresh = FreshSamples(cfg.fresh_seed0 + step * cfg.batch_size) if cfg.fresh_fraction else None
    drr = cfg.drr_samples(range(*cfg.drr_train_seeds)) if cfg.drr_fraction else []
    if cfg.drr_fraction:
        logger.info("DRR pool", extra={"images": len(drr)})
    node21 = node21_pool(cfg)
    t0 = time.monotonic()
    net.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step")
    while step < cfg.steps:
        if cfg.drr_fraction and step % 50 == 0:  # the DRR cache may still be filling
            drr = cfg.drr_samples(range(*cfg.drr_train_seeds))
        # a small DRR pool gets a smaller share, so a handful of images is not overfitted
        share = cfg.drr_fraction * min(1.0, len(drr) / DRR_FULL_SHARE_AT)
        idx = rng.integers(0, len(pool), cfg.batch_size)
        x, h, d, w = batch(
            pool,
            idx,
            rng,
            drr,
            share,
            fresh,
            cfg.fresh_fraction,
            cfg.jitter_fraction,
            node21,
            cfg.node21_fraction,
            cfg.min_target_mm,
        )
        heat_logits, log_d = net.logits(x)
        l_heat = focal_loss(heat_logits, h)
        l_size = (w * (log_d - d).abs()).sum() / w.sum().clamp(min=1.0)
        loss = l_heat + cfg.size_loss_weight * l_size
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(heat=f"{l_heat.item():.3f}", size=f"{l_size.item():.3f}")
        timed_out = max_minutes is not None and time.monotonic() - t0 > max_minutes * 60
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or timed_out:
            _save(last, net, opt, sched, step)
        if timed_out:
            logger.warning("stopped at the time limit", extra={"step": step})
            break
    bar.close()
    if fresh is not None:
        fresh.close()
    final = out / "model.pt"
    torch.save({"model": net.state_dict(), "width": cfg.width, "step": step}, final)
    return final


def _save(path: Path, net: torch.nn.Module, opt: Any, sched: Any, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
        },
        tmp,
    )
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("training/dr/config.toml"))
    parser.add_argument("--out", type=Path, default=Path("var/training/dr_nodule"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    # One intra-op thread: on a shared 2-core machine two threads spin against each other
    # and a step takes ~10x longer (measured 2.7 s vs 0.3 s for a batch of 8).
    torch.set_num_threads(1)
    train(TrainConfig.load(args.config), args.out, args.resume, args.max_minutes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
