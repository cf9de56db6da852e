"""DR phantom radiographs and training targets: deterministic, truthful, framed like the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.dr.detect import INPUT_SIZE, STRIDE
from training.dr.data import Sample, augment, jitter, synth_sample, targets
from training.dr.drr_cache import load, reprepare, sample_from_display, save
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

    root = Path(__file__).resolve().parents[2] / "training/dr"
    for name in (
        "config.toml",
        "finetune.toml",
        "finetune2.toml",
        "finetune3.toml",
        "finetune4.toml",
        "finetune9.toml",
        "finetune10.toml",
        "finetune11.toml",
        "finetune12.toml",
    ):
        cfg = TrainConfig.load(root / name)
        assert set(range(*cfg.train_seeds)).isdisjoint(range(*cfg.held_out_seeds))
        assert set(range(*cfg.train_seeds)).isdisjoint(range(*cfg.calibration_seeds))
        drr_sets = (cfg.drr_train_seeds, cfg.drr_held_out_seeds, cfg.drr_calibration_seeds)
        for i, a in enumerate(drr_sets):
            for b in drr_sets[i + 1 :]:
                assert set(range(*a)).isdisjoint(range(*b)), name


def test_training_phantom_options_reach_the_phantom() -> None:
    from training.dr.train import TrainConfig

    root = Path(__file__).resolve().parents[2] / "training/dr"
    cfg = TrainConfig.load(root / "finetune11.toml")
    assert cfg.synth().diameter_mm == (8.0, 24.0) and cfg.prep_knee is None
    cfg = TrainConfig.load(root / "finetune9.toml")
    assert cfg.synth().headroom and cfg.prep_knee == 0.85
    assert TrainConfig.load(root / "config.toml").synth().diameter_mm == (5.0, 30.0)


def test_hidden_nodules_are_soft_targets_without_a_peak() -> None:
    image = np.zeros((INPUT_SIZE, INPUT_SIZE), np.float32)
    s = Sample(image, ((100.0, 60.0, 12.0, 15.0),), ((180.0, 180.0, 16.0, 20.0),))
    heat, _, weight = targets(s)
    assert int((heat == 1.0).sum()) == 1  # only the shown nodule is a positive
    cr, cc = round((180 - 1.5) / STRIDE), round((180 - 1.5) / STRIDE)
    # near 1 at the hidden centre: the focal loss's (1 - target)^4 silences the penalty
    assert 0.95 < heat[cr, cc] < 1.0
    assert weight[cr, cc] == 0.0  # and no size target


def test_jitter_moves_the_truth_with_the_image() -> None:
    image = np.zeros((INPUT_SIZE, INPUT_SIZE), np.float32)
    yy, xx = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE]
    image[(yy - 70) ** 2 + (xx - 190) ** 2 <= 36] = 1.0
    s = Sample(image, ((70.0, 190.0, 12.0, 15.0),), ((70.0, 190.0, 12.0, 15.0),))
    rng = np.random.default_rng(3)
    moved = [jitter(s, rng) for _ in range(8)]
    assert any(m.nodules[0][:2] != (70.0, 190.0) for m in moved)
    for m in moved:
        (r, c, d, mm), (hidden,) = m.nodules[0], m.hidden
        assert hidden == (r, c, d, mm) and mm == 15.0 and 12 * 0.85 <= d <= 12 * 1.15
        bright = np.argwhere(m.image > 0.5).mean(axis=0)
        assert np.hypot(bright[0] - r, bright[1] - c) < 1.0


def test_drr_cache_keeps_hidden_nodules(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    s = Sample(image, ((1.0, 2.0, 3.0, 4.0),), ((5.0, 6.0, 7.0, 8.0),))
    save(s, tmp_path / "1.npz")
    back = load(tmp_path / "1.npz")
    assert back.nodules == s.nodules and back.hidden == s.hidden
    assert np.abs(back.image - image).max() < 1e-3  # stored as float16


def test_drr_cache_prepares_again_from_display_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 3000, (300, 280)).astype(np.float32).round()
    values[100:112, 140:152] = 4000.0  # a dense disc beyond the 99.5th percentile
    boxes = np.array([[100.0, 140.0, 112.0, 152.0, 9.6, 1.0], [10, 10, 20, 20, 5.0, 0.0]])
    s = sample_from_display(values, 0.8, boxes)
    save(s, tmp_path / "1.npz", raw=(values, 0.8, boxes))
    again = reprepare(tmp_path / "1.npz")
    assert again.nodules == s.nodules and again.hidden == s.hidden
    assert np.abs(again.image - s.image).max() < 1e-6
    kneed = reprepare(tmp_path / "1.npz", knee=0.85)
    ((r, c, _, _),) = kneed.nodules
    assert kneed.image[int(r), int(c)] < 1.0 and s.image[int(r), int(c)] == 1.0


def test_headroom_phantom_keeps_its_draws_and_loses_the_white_plateau() -> None:
    plain = make_synth_chest(900003)
    assert np.array_equal(plain.image, make_synth_chest(900003, SynthConfig()).image)
    roomy = make_synth_chest(900003, SynthConfig(headroom=True))
    assert roomy.nodules == plain.nodules
    assert float((plain.image == 4095).mean()) > 0.003  # the clipped top of the film
    assert float((roomy.image == 4095).mean()) < 0.0005


def test_phantom_marks_faint_nodules_not_visible() -> None:
    from training.phantoms import NoduleSpec
    from training.phantoms.dr import VISIBLE_CONTRAST, ChestDRConfig, make_chest_dr

    specs = (
        NoduleSpec(22.0, "solid", "round", "lung", side="right"),
        NoduleSpec(8.0, "ground_glass", "round", "lung", side="left"),
    )
    cfg = ChestDRConfig(
        size_px=384, ct_matrix=144, ct_pixel_mm=2.9, ct_slice_mm=3.0, nodule_specs=specs, view="PA"
    )
    dr = make_chest_dr(7, cfg)
    by_kind = {n.kind: n for n in dr.nodules}
    assert by_kind["solid"].visible and by_kind["solid"].contrast > 2 * VISIBLE_CONTRAST
    assert not by_kind["ground_glass"].visible
    assert 0.0 <= by_kind["ground_glass"].contrast < VISIBLE_CONTRAST


def test_calcified_training_nodules_are_denser() -> None:
    """``p_calcified`` (training only) draws bone-like nodules: at the same place and size
    the calcified one stands out more than the soft-tissue one."""

    def shadow(p_calcified: float) -> float:
        cfg = SynthConfig(
            matrix=(300, 300), p_collimation=0, nodule_diameters=(15.0,), p_calcified=p_calcified
        )
        chest = make_synth_chest(8, cfg)
        (n,) = chest.nodules
        yy, xx = np.mgrid[: chest.image.shape[0], : chest.image.shape[1]]
        rr = np.hypot(yy - n.center_rc[0], xx - n.center_rc[1])
        img = chest.image.astype(np.float64)
        inner = img[rr < n.diameter_px / 4].mean()
        ring = img[(rr > n.diameter_px * 0.7) & (rr < n.diameter_px)].mean()
        return float(inner - ring)

    soft, calcified = shadow(0.0), shadow(1.0)
    assert calcified > soft > 0
