"""NODE21 as an optional DR training source, on small generated .mha files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from training.dr.node21_source import load_samples
from training.dr.train import TrainConfig, batch, node21_pool

# a 1200 x 1000 film (reduced by 2 to the working size) with a dense disc at a known box
ROWS, COLS, SPACING = 1200, 1000, (0.3, 0.25)  # (row, column) mm
BOX = (600, 400, 80, 80)  # x (column), y (row), width, height


def _write(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    arr = (1500 + rng.normal(0, 20, (ROWS, COLS))).astype(np.uint16)
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    x, y, w, h = BOX
    arr[(yy - (y + h / 2)) ** 2 + (xx - (x + w / 2)) ** 2 <= (w / 2) ** 2] = 3500
    folder.mkdir(parents=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((SPACING[1], SPACING[0]))  # ITK (x, y)
    sitk.WriteImage(img, str(folder / "c0001.mha"))
    blank = np.full((ROWS, COLS), 1500, np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(blank), str(folder / "n0002.mha"))
    csv = folder.parent / "metadata.csv"
    csv.write_text(
        f"img_name,x,y,width,height,label\nc0001.mha,{x},{y},{w},{h},1\nn0002.mha,0,0,0,0,0\n"
    )
    return csv


def test_boxes_land_on_the_disc_in_the_network_input(tmp_path: Path) -> None:
    csv = _write(tmp_path / "images")
    pos, neg = load_samples(tmp_path / "images", csv)
    assert neg.nodules == ()
    ((r, c, d, mm),) = pos.nodules
    assert mm == pytest.approx(80 * math.sqrt(SPACING[0] * SPACING[1]))
    assert d == pytest.approx(80 * 256 / 1200, rel=0.05)  # long side 1200 -> 256
    bright = np.argwhere(pos.image > 0.9).mean(axis=0)
    assert np.hypot(bright[0] - r, bright[1] - c) < 1.0
    assert len(load_samples(tmp_path / "images", csv, limit=1)) == 1


def test_config_draws_batches_from_node21(tmp_path: Path) -> None:
    csv = _write(tmp_path / "images")
    root = Path(__file__).resolve().parents[2] / "training/dr/config.toml"
    base = TrainConfig.load(root)
    assert node21_pool(base) == []  # off unless configured
    cfg = TrainConfig(
        **{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "node21_images": str(tmp_path / "images"),
            "node21_boxes": str(csv),
            "node21_fraction": 1.0,
            "node21_limit": 1,
        }
    )
    pool = node21_pool(cfg)
    assert len(pool) == 1
    rng = np.random.default_rng(0)
    _, heat, _, _ = batch([], np.zeros(4, int), rng, node21=pool, node21_fraction=1.0)
    assert (heat.numpy().reshape(4, -1).max(axis=1) == 1.0).all()  # every image is NODE21
