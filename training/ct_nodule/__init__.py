"""CT nodule network: phantom dataset, training, ONNX export and evaluation."""

__all__ = ["config", "dataset"]
