"""Deterministic synthetic phantoms (chest CT, chest DR, head/neck CTA) with ground truth."""

from training.phantoms.ct import ChestCTConfig, CTPhantom, make_chest_ct
from training.phantoms.cta import CTAConfig, CTAPhantom, VesselTruth, make_head_neck_cta
from training.phantoms.dr import ChestDRConfig, DRNoduleTruth, DRPhantom, make_chest_dr
from training.phantoms.nodule_shapes import NoduleSpec
from training.phantoms.nodules import NoduleTruth, insert_nodules

__all__ = [
    "CTAConfig",
    "CTAPhantom",
    "CTPhantom",
    "ChestCTConfig",
    "ChestDRConfig",
    "DRNoduleTruth",
    "DRPhantom",
    "NoduleSpec",
    "NoduleTruth",
    "VesselTruth",
    "insert_nodules",
    "make_chest_ct",
    "make_chest_dr",
    "make_head_neck_cta",
]
