"""Shipped ONNX models, their cards, and the registry that loads them."""
