"""Evaluation metrics: LUNA16 FROC/CPM for CT nodules."""

__all__ = ["froc"]
