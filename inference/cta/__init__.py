"""Head/neck CTA: vessel segmentation, centrelines, naming, stenosis grading, renders."""

from inference.cta.pipeline import CTAPipeline

__all__ = ["CTAPipeline"]
