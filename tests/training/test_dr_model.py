"""The shipped DR nodule model: verified artifact, small, fp16 agrees, card meets acceptance."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from models.card import SYNTHETIC_STATEMENT
from models.registry import ModelRegistry
from training.dr.data import synth_sample
from training.dr.synth import SynthConfig


@pytest.fixture(scope="module")
def artifact():  # type: ignore[no-untyped-def]
    return ModelRegistry().load("dr_nodule")


def run(path: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    dtype = np.float16 if "float16" in sess.get_inputs()[0].type else np.float32
    h, d = sess.run(["heatmap", "diameter"], {"image": x.astype(dtype)})
    return np.asarray(h, np.float32), np.asarray(d, np.float32)


def test_artifact_is_small_and_documented(artifact) -> None:  # type: ignore[no-untyped-def]
    assert artifact.onnx_path.stat().st_size <= 20 * 1024 * 1024
    card = artifact.card
    assert card.statement == SYNTHETIC_STATEMENT
    assert card.parity_max_abs_error is not None and card.parity_max_abs_error < 1e-3
    assert 0.0 < card.operating_threshold < 1.0
    assert (artifact.directory / "CARD.md").is_file()
    assert card.metrics["n_nodules_ge10mm"] >= 100  # the held-out set is not trivial
    assert card.metrics["ge10mm_threshold_at_1_fp"] < card.operating_threshold


# Known shortfall of dr_nodule 1.4.0: >= 10 mm sensitivity at 1 FP/image 0.77 on the analytic
# held-out set (400 films) and 0.70 on the CT-projection DRR held-out set (60 films)
# (1.3.0: 0.75 and 0.64). strict: when a model reaches the bar this XPASSes and fails, so
# the marker must then go.
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="dr_nodule 1.4.0: ge10mm sensitivity 0.77 (analytic), 0.70 (DRR) at 1 FP"
)
def test_card_meets_acceptance(artifact) -> None:  # type: ignore[no-untyped-def]
    # acceptance (issue 3): nodules >= 10 mm, sensitivity >= 0.80 at 1 FP per image, on
    # the analytic and on the CT-projection DRR held-out films
    assert artifact.card.metrics["ge10mm_sens_at_1_fp"] >= 0.80
    assert artifact.card.metrics["drr_ge10mm_sens_at_1_fp"] >= 0.80


def test_card_holds_the_figures_of_1_4_0(artifact) -> None:  # type: ignore[no-untyped-def]
    # Regression floor at the figures dr_nodule 1.4.0 reached (a retrained model must not
    # fall below): analytic held-out (400 films) and CT-projection DRR held-out (60 films,
    # visible nodules only), NODE21 counting. 1.4.0: analytic 0.64 / 0.67 / 0.70 / 0.77 at
    # 0.125 / 0.25 / 0.5 / 1 FP, AUC >= 10 mm 0.888; DRR 0.51 / 0.53 / 0.62 / 0.70, AUC
    # >= 10 mm 0.844 (1.3.0: 0.61 / 0.66 / 0.70 / 0.75, 0.879; 0.40 / 0.49 / 0.55 / 0.64, 0.847).
    m = artifact.card.metrics
    assert m["n_images"] >= 400 and m["drr_n_images"] >= 60 and m["drr_n_nodules_ge10mm"] >= 40
    assert m["ge10mm_sens_at_1_fp"] >= 0.77 and m["ge10mm_sens_at_0.125_fp"] >= 0.63
    assert m["image_auc_ge10mm"] >= 0.88
    assert m["drr_ge10mm_sens_at_1_fp"] >= 0.70 and m["drr_ge10mm_sens_at_0.25_fp"] >= 0.53
    assert m["drr_image_auc_ge10mm"] >= 0.84
    # the operating point keeps false positives <= 0.25 per film on both sets
    assert m["fp_per_image_at_operating"] <= 0.25 and m["drr_fp_per_image_at_operating"] <= 0.25


def test_outputs_and_fp16_variant_agree(artifact) -> None:  # type: ignore[no-untyped-def]
    x = synth_sample(931000, SynthConfig(nodule_diameters=(18.0,))).image[None, None]
    h, d = run(str(artifact.onnx_path), x)
    assert h.shape == d.shape == (1, 1, 64, 64)
    assert h.min() >= 0.0 and h.max() <= 1.0 and d.min() > 0.0
    if artifact.fp16_path is None:
        pytest.skip("no fp16 variant shipped")
    h16, _ = run(str(artifact.fp16_path), x)
    assert np.abs(h16 - h).max() < 0.02


def test_shift_averaged_is_the_mean_of_the_moved_back_passes() -> None:
    import torch

    from training.dr.net import DRNoduleNet, ShiftAveraged

    torch.manual_seed(0)
    net = DRNoduleNet(8).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        h, d = ShiftAveraged(net, (0, 8)).eval()(x)
        h0, d0 = net(x)
        moved = torch.nn.functional.pad(x[:, :, :-8, :-8], (8, 0, 8, 0))
        h8, d8 = net(moved)
    assert h.shape == h0.shape == (2, 1, 16, 16)
    # cells both passes cover: the mean; the last two rows/columns only the unmoved pass
    torch.testing.assert_close(h[:, :, :14, :14], (h0[:, :, :14, :14] + h8[:, :, 2:, 2:]) / 2)
    torch.testing.assert_close(d[:, :, :14, :14], (d0[:, :, :14, :14] + d8[:, :, 2:, 2:]) / 2)
    torch.testing.assert_close(h[:, :, 14:, :], h0[:, :, 14:, :])
    with pytest.raises(ValueError, match="multiples"):
        ShiftAveraged(net, (0, 6))
