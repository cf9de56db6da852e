"""Chest DR/CR nodule triage pipeline."""

from inference.dr.pipeline import DRNodulePipeline

__all__ = ["DRNodulePipeline"]
