"""Loaders from public formats (LUNA16, NODE21, NIfTI, DICOM SEG) and signed review findings."""

from training.loaders.types import BoxLabel, CTCase, DRCase, NoduleLabel

__all__ = ["BoxLabel", "CTCase", "DRCase", "NoduleLabel"]
