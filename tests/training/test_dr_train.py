"""Training and export scripts end to end on a tiny configuration (slow: torch + ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.registry import ModelRegistry

pytestmark = pytest.mark.slow

TINY = """
name = "dr_nodule"
version = "0.0.1"
train_seeds = [0, 6]
held_out_seeds = [900000, 900004]
matrix = [200, 240]
batch_size = 2
steps = 4
lr = 0.001
weight_decay = 0.0
size_loss_weight = 0.5
width = 8
seed = 1
checkpoint_every = 2
"""


def test_train_resume_export(tmp_path: Path) -> None:
    from training.dr import export, train

    config = tmp_path / "tiny.toml"
    config.write_text(TINY, encoding="utf-8")
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--out", str(out), "--max-minutes", "0"]) == 0
    first = train.torch.load(out / "last.pt", weights_only=False)["step"]
    assert first == 1  # stopped at the time limit after one step, checkpoint written
    assert train.main(["--config", str(config), "--out", str(out), "--resume"]) == 0
    assert train.torch.load(out / "last.pt", weights_only=False)["step"] == 4
    assert (out / "pool_0_6_200_240.npz").is_file()  # the pool is cached for the next run
    models = tmp_path / "models"
    assert (
        export.main(
            [
                "--config",
                str(config),
                "--checkpoint",
                str(out / "model.pt"),
                "--models-dir",
                str(models),
            ]
        )
        == 0
    )
    artifact = ModelRegistry(models).load("dr_nodule@0.0.1")
    card = json.loads((artifact.directory / "card.json").read_text())
    assert card["parity_max_abs_error"] < 1e-3
    assert "ge10mm_sens_at_1_fp" in card["metrics"]
    assert (artifact.directory / "CARD.md").read_text().startswith("# dr_nodule 0.0.1")
