"""Warm start of NoduleNet from an ONNX export with folded batch norm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from countyread.errors import ModelError
from models.networks import NoduleNet
from training.ct_nodule.warm_start import warm_start


def _export(model: torch.nn.Module, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, 16, 16, 16),),
        str(path),
        input_names=["patch"],
        output_names=["logit", "mask_logit"],
        dynamic_axes={"patch": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def test_warm_started_network_computes_what_the_onnx_file_computes(tmp_path: Path) -> None:
    torch.manual_seed(3)
    src = NoduleNet()
    with torch.no_grad():  # non-trivial statistics, so folding changes the weights
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    _export(src, tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (64, 16, 16, 16)).astype(np.float32)
    dst = NoduleNet()
    warm_start(dst, tmp_path / "m.onnx", x)
    dst.eval()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"patch": x[:8, None]})
    with torch.no_grad():
        got = [t.numpy() for t in dst(torch.from_numpy(x[:8, None]))]
    for w, g in zip(want, got, strict=True):
        assert np.abs(w - g).max() < 1e-3
    assert np.abs(want[0]).max() > 1e-2  # the comparison is not between two zeros


def test_wrong_network_is_refused(tmp_path: Path) -> None:
    _export(NoduleNet(width=4), tmp_path / "small.onnx")
    with pytest.raises(ModelError):
        warm_start(NoduleNet(), tmp_path / "small.onnx", np.zeros((4, 16, 16, 16), np.float32))
