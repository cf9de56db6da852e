"""A small, fast chest CT phantom (96 x 96, 3.6 mm pixels) for training-side tests."""

from __future__ import annotations

from collections.abc import Sequence

from training.phantoms import ChestCTConfig, CTPhantom, NoduleSpec, make_chest_ct


def small_chest_ct(specs: Sequence[NoduleSpec], seed: int = 5) -> CTPhantom:
    cfg = ChestCTConfig(
        matrix=96,
        pixel_spacing_mm=3.6,
        slice_thickness_mm=2.5,
        coverage_mm=100.0,
        vessel_points_per_tree=300,
        nodule_specs=tuple(specs),
    )
    return make_chest_ct(seed, cfg)
