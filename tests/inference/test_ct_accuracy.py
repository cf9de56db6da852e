"""Acceptance of the CT nodule pipeline on the held-out phantoms 9000-9023 (164 nodules
>= 4 mm), one evaluation for all of it. Issue 3: LUNA16 CPM >= 0.85, sensitivity >= 0.90 at
1 FP/scan; issue 4: every nodule >= 6 mm found at the operating threshold, and of those
found >= 90 % with the mean diameter within 1.5 mm of the truth, the type right and the
Lung-RADS category right. Where each miss is lost: training/ct_nodule/diagnose.py.

Slow (the whole pipeline on 24 phantoms: 3.4 min on the quiet 2-core machine, about 13 min at load
8-10); CI runs the fixed-nodule guard in ``test_ct_measure_phantom.py`` instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import ModelRegistry
from training.ct_nodule.config import load_config
from training.ct_nodule.evaluate import evaluate_phantoms, held_out_phantoms, onnx_runner

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ct_nodule.toml"
SEEDS = list(range(9000, 9024))
TARGET = 0.9
# the metrics fixture runs the whole pipeline on 24 phantoms: beyond the 600 s default
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def metrics() -> dict[str, float]:
    cfg = load_config(CONFIG)
    artifact = ModelRegistry().load(f"{cfg.name}@{cfg.version}")
    found, _, _, _ = evaluate_phantoms(
        held_out_phantoms(cfg, SEEDS),
        onnx_runner(artifact.directory),
        artifact.card.operating_threshold,
    )
    return found


def test_type_accuracy(metrics: dict[str, float]) -> None:
    # 0.904 before issue 4's measurement work, 0.962 after (285e940)
    assert metrics["type_accuracy"] >= TARGET


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="held-out 9000-9023 (ct_nodule 1.2.0, pipeline 3087abf): 0.846 of 104 matched "
    "nodules >= 6 mm within 1.5 mm (0.798 before); spiculated nodules whose truth runs to "
    "sub-voxel spicule tips measure short",
)
def test_diameter_within_1_5_mm(metrics: dict[str, float]) -> None:
    assert metrics["share_diameter_within_1_5mm"] >= TARGET


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="held-out 9000-9023 (ct_nodule 1.2.0, pipeline 285e940): Lung-RADS 0.808 (0.721 "
    "before); 14 of the 20 misses are spiculated nodules (4X) whose spicules the image "
    "barely shows (most < 16 mm)",
)
def test_lung_rads_accuracy(metrics: dict[str, float]) -> None:
    assert metrics["lung_rads_accuracy"] >= TARGET


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # a crash is an error, not the known shortfall
    reason=(
        "ct_nodule 1.2.0 on 9000-9023: CPM 0.821, sensitivity at 1 FP/scan 0.829, "
        "104/130 nodules >= 6 mm at 0.996; 24 of 164 never detected (12 beyond the "
        "400-candidate cap, 10 without a candidate, 1 outside the lung mask, 1 merged away)"
    ),
)
def test_held_out_cpm_sensitivity_and_large_nodules(metrics: dict[str, float]) -> None:
    assert metrics["n_nodules"] == 164
    assert metrics["cpm"] >= 0.85
    assert metrics["sensitivity_at_1fp"] >= 0.90
    assert metrics["sensitivity_ge6mm_at_threshold"] == 1.0
