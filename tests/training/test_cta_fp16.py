"""The shipped CTA vessel model's fp16 variant (served on CUDA/TensorRT) draws the same
lumen as fp32 on a held-out phantom; half-precision batch norms did not (Dice 0.957)."""

from __future__ import annotations

from models.registry import ModelRegistry
from training.cta.export import FP16_MIN_MASK_AGREEMENT, fp16_check


def test_shipped_fp16_variant_matches_fp32_mask() -> None:
    artifact = ModelRegistry().load("cta_vessels")
    assert artifact.fp16_path is not None, "cta_vessels ships no fp16 variant"
    assert "model.fp16.onnx" in artifact.card.sha256  # the registry verifies it
    error, agreement = fp16_check(
        artifact.directory / "model.onnx", artifact.fp16_path, 900,
        artifact.card.operating_threshold,
    )
    assert agreement >= FP16_MIN_MASK_AGREEMENT
    assert error < 0.25  # logits; 0.03 measured for 1.2.0
