"""Loaders from public formats (LUNA16, NODE21, NIfTI) and review findings to one typed form."""

from training.loaders.types import BoxLabel, CTCase, DRCase, NoduleLabel

__all__ = ["BoxLabel", "CTCase", "DRCase", "NoduleLabel"]
