"""ONNX export of NoduleNet: parity with torch, fp16 variant, card, registry round trip;
and the shipped model: sha256, parity of its fp16 variant, and held-out regression."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.networks import NoduleNet
from models.registry import ModelRegistry
from training.ct_nodule.config import DataConfig, NoduleTrainingConfig, load_config
from training.ct_nodule.export import PARITY_LIMIT, export, write_card
from training.ct_nodule.train import checkpoint_path

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ct_nodule.toml"


def test_export_parity_fp16_and_card(tmp_path: Path) -> None:
    cfg = NoduleTrainingConfig(
        name="ct_nodule_test",
        version="0.0.1",
        work_dir=tmp_path / "work",
        data=DataConfig(train_seeds=(1, 2), held_out_seeds=(3, 4)),
    )
    checkpoint_path(cfg).parent.mkdir(parents=True)
    torch.manual_seed(0)
    model = NoduleNet()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    torch.save({"model": model.state_dict(), "epoch": 1}, checkpoint_path(cfg))
    out_dir, parity, fp16_err = export(cfg, tmp_path / "models")
    assert parity < PARITY_LIMIT
    assert fp16_err < 0.05
    assert (out_dir / "model.onnx").stat().st_size < 20 * 2**20
    card = write_card(cfg, out_dir, parity, fp16_err, {"cpm": 0.5}, 0.5)
    assert "not clinically validated" in (out_dir / "CARD.md").read_text()
    artifact = ModelRegistry(tmp_path / "models").load("ct_nodule_test@0.0.1")
    assert artifact.card == card
    assert artifact.fp16_path is not None


def test_shipped_model_verifies_and_fp16_agrees() -> None:
    import onnxruntime as ort

    cfg = load_config(CONFIG)
    artifact = ModelRegistry().load(f"{cfg.name}@{cfg.version}")
    card = artifact.card
    assert card.statement == "trained on synthetic data; not clinically validated"
    assert card.parity_max_abs_error is not None and card.parity_max_abs_error < PARITY_LIMIT
    assert set(card.training_data.seeds).isdisjoint(card.training_data.held_out_seeds)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 1, 16, 16, 16)).astype(np.float32)
    a = ort.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])
    assert artifact.fp16_path is not None
    b = ort.InferenceSession(str(artifact.fp16_path), providers=["CPUExecutionProvider"])
    for ra, rb in zip(a.run(None, {"patch": x}), b.run(None, {"patch": x}), strict=True):
        assert np.abs(ra - rb).max() < 0.05


@pytest.mark.slow
def test_held_out_regression() -> None:
    """Fails when a retrained model regresses on two fixed held-out phantoms."""
    from training.ct_nodule.evaluate import evaluate_phantoms, held_out_phantoms, onnx_runner

    cfg = load_config(CONFIG)
    artifact = ModelRegistry().load(f"{cfg.name}@{cfg.version}")
    phantoms = held_out_phantoms(cfg, cfg.data.held_out_list[:2])
    metrics, _, _, _ = evaluate_phantoms(
        phantoms, onnx_runner(artifact.directory), artifact.card.operating_threshold
    )
    # ct_nodule 1.2.0 on seeds 9000-9001: CPM 0.917, diameters within 1.5 mm 0.889 (0.778
    # before the mask refit of inference/ct_nodule/refine.py). Since the phantom draws
    # spicules that show (f52ef8b) 0.846 (11 of 13 nodules >= 4 mm; of the other two one
    # lies outside the lung mask and one beyond the 400-candidate cap, out of any network's
    # reach), diameters 1.0; the 1.3.0 candidates of training/configs/ct_nodule_v13b.toml
    # and _v13c.toml score 0.846 too
    assert metrics["cpm"] >= 0.84
    assert metrics.get("share_diameter_within_1_5mm", 1.0) >= 0.75
