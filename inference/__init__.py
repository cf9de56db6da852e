"""Series selection, volume assembly, ONNX sessions and the analysis pipelines."""
