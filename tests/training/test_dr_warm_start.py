"""Warm start from the shipped DR ONNX file: the rebuilt network computes what the file does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from models.registry import ModelRegistry
from training.dr.data import synth_sample
from training.dr.net import FlipAveraged
from training.dr.warm_start import as_exported, flip_averaged, from_onnx


def test_rebuilt_network_matches_the_onnx_heatmap() -> None:
    path = ModelRegistry().load("dr_nodule").onnx_path
    calibration = np.stack([synth_sample(s).image for s in range(800000, 800004)])[:, None]
    net = from_onnx(path, torch.from_numpy(calibration))
    x = np.stack([synth_sample(s).image for s in (900000, 900001)])[:, None]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    heat, _ = sess.run(["heatmap", "diameter"], {"image": x})
    # a flip- (and shift-) averaged file runs the network on the film and on its mirror
    # image (and on moved copies)
    model = as_exported(net, path)
    with torch.no_grad():
        ours, _ = model.eval()(torch.from_numpy(x))
        assert np.abs(ours.numpy() - heat).max() < 1e-4
        # batch norm was re-derived from the calibration statistics, so a training-mode
        # pass over the calibration batch itself is the same function too
        train_mode, _ = net.train()(torch.from_numpy(calibration))
        eval_mode, _ = net.eval()(torch.from_numpy(calibration))
    assert np.abs(train_mode.numpy() - eval_mode.numpy()).max() < 1e-3


def test_flip_averaged_export_rebuilds_its_network(tmp_path: Path) -> None:
    from training.dr.export import export_onnx
    from training.dr.net import DRNoduleNet

    torch.manual_seed(1)
    net = DRNoduleNet(16).eval()
    plain, twice = tmp_path / "plain.onnx", tmp_path / "flip.onnx"
    export_onnx(net, plain)
    export_onnx(FlipAveraged(net).eval(), twice)
    assert not flip_averaged(plain) and flip_averaged(twice)
    calibration = torch.rand(4, 1, 64, 64)
    x = torch.rand(1, 1, 256, 256)
    rebuilt = from_onnx(twice, calibration).eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt.logits(x)[0], net.logits(x)[0], atol=1e-4)
    sess = ort.InferenceSession(str(twice), providers=["CPUExecutionProvider"])
    heat, _ = sess.run(["heatmap", "diameter"], {"image": x.numpy()})
    with torch.no_grad():
        mirrored = net(torch.flip(x, dims=(3,)))[0].flip(dims=(3,))
        assert np.allclose(heat, ((net(x)[0] + mirrored) / 2).numpy(), atol=1e-5)


def test_interpolation_ends_are_the_two_models() -> None:
    from training.dr.interpolate import mix
    from training.dr.net import DRNoduleNet

    torch.manual_seed(0)
    a, b = DRNoduleNet(16).eval(), DRNoduleNet(16).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        for alpha, ref in ((0.0, a), (1.0, b)):
            assert torch.allclose(mix(a, b, alpha)(x)[0], ref(x)[0], atol=1e-6)
        half = mix(a, b, 0.5).state_dict()
    k = "enc1.0.0.weight"
    assert torch.allclose(half[k], (a.state_dict()[k] + b.state_dict()[k]) / 2)
