"""DR phantom radiographs and training targets: deterministic, truthful, framed like the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.dr.detect import INPUT_SIZE, STRIDE
from training.dr.data import augment, synth_sample, targets
from training.dr.synth import SynthConfig, make_synth_chest

SMALL = SynthConfig(matrix=(200, 240))


def test_same_seed_same_image_other_seed_other_image() -> None:
    a, b = make_synth_chest(3, SMALL), make_synth_chest(3, SMALL)
    assert np.array_equal(a.image, b.image) and a.nodules == b.nodules
    c = make_synth_chest(4, SMALL)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_nodule_truth_is_where_the_image_is_denser() -> None:
    clean = make_synth_chest(21, SynthConfig(matrix=(300, 300), p_collimation=0, p_no_nodule=1))
    with_nodule = make_synth_chest(
        21, SynthConfig(matrix=(300, 300), p_collimation=0, nodule_diameters=(20.0,))
    )
    assert not clean.nodules and len(with_nodule.nodules) == 1
    n = with_nodule.nodules[0]
    assert n.diameter_mm == 20.0
    assert n.diameter_px == pytest.approx(20.0 / with_nodule.spacing_mm)
    r, c = (round(v) for v in n.center_rc)
    h, w = with_nodule.image.shape
    assert 0 <= r < h and 0 <= c < w
    r0, _, r1, _ = n.bbox_rc
    assert r1 - r0 == pytest.approx(n.diameter_px)


def test_sample_and_targets_line_up() -> None:
    s = synth_sample(5, SynthConfig(matrix=(300, 300), nodule_diameters=(15.0, 25.0)))
    assert s.image.shape == (INPUT_SIZE, INPUT_SIZE)
    assert s.image.min() >= 0.0 and s.image.max() <= 1.0
    heat, logd, weight = targets(s)
    g = INPUT_SIZE // STRIDE
    assert heat.shape == logd.shape == weight.shape == (g, g)
    assert int((heat == 1.0).sum()) == 2
    for r, c, d, mm in s.nodules:
        cr = round((r - (STRIDE - 1) / 2) / STRIDE)
        cc = round((c - (STRIDE - 1) / 2) / STRIDE)
        assert heat[cr, cc] == 1.0
        assert np.exp(logd[cr, cc]) == pytest.approx(d, rel=1e-5)
        assert mm in (15.0, 25.0)
    assert heat[weight == 0].max() < 0.31


def test_augment_keeps_range_and_shape() -> None:
    s = synth_sample(6, SMALL)
    out = augment(s.image, np.random.default_rng(0))
    assert out.shape == s.image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_config_file_parses() -> None:
    from training.dr.train import TrainConfig

    cfg = TrainConfig.load(Path(__file__).resolve().parents[2] / "training/dr/config.toml")
    assert set(range(*cfg.train_seeds)).isdisjoint(range(*cfg.held_out_seeds))
