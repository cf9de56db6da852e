"""Chest CT pulmonary nodule triage: series selection to Lung-RADS, Fleischner and key images."""

from inference.ct_nodule.pipeline import CTNodulePipeline

__all__ = ["CTNodulePipeline"]
