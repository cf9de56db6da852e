"""Synthetic phantoms, real-data loaders, MONAI training, ONNX export and evaluation."""
