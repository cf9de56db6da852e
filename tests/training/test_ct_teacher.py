"""Segmentation targets from a shipped model's masks (``TrainConfig.mask_teacher``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from training.ct_nodule.config import load_config
from training.ct_nodule.train import teacher_masks

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "models" / "ct_nodule" / "1.2.0" / "model.onnx"


def _ball_patch(radius: float) -> np.ndarray:
    """A solid nodule (0 HU -> 0.33 after the [-1000, 500] mapping) in lung (-1 ... -0.7)."""
    z, y, x = np.mgrid[:16, :16, :16] - 7.5
    return np.where(np.sqrt(z**2 + y**2 + x**2) <= radius, 0.33, -0.8).astype(np.float16)


def test_positives_take_the_teachers_mask_and_negatives_keep_theirs() -> None:
    x = np.stack([_ball_patch(4.0), _ball_patch(3.0), _ball_patch(5.0)])
    y = np.array([1, 0, 1], np.uint8)
    truth = np.zeros((3, 16, 16, 16), np.uint8)
    truth[1, 4:8] = 1  # a negative's stored mask must come back as it was
    got = teacher_masks(TEACHER, x, y, truth)
    sess = ort.InferenceSession(str(TEACHER), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"patch": x[:, None].astype(np.float32)})[1][:, 0] > 0.0
    assert np.array_equal(got[[0, 2]], want[[0, 2]])
    assert np.array_equal(got[1], truth[1])
    assert 0 < got[0].sum() < got[2].sum()  # the teacher outlines balls of both sizes
    assert not np.array_equal(got[0], truth[0])
    assert got.dtype == np.uint8


def test_the_shipped_candidate_config_names_its_teacher() -> None:
    cfg = load_config(ROOT / "training" / "configs" / "ct_nodule_v13c.toml")
    assert cfg.train.mask_teacher == cfg.train.init_from
    assert cfg.train.mask_teacher is not None and (ROOT / cfg.train.mask_teacher).is_file()
