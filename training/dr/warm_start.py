"""Warm-start checkpoint for DRNoduleNet from a shipped ONNX file (batch norm folded).

The exporter folds each batch norm into the convolution before it, so the ONNX file
holds ``W', b'`` per layer. To train on from there, each folded layer becomes the
convolution ``W'`` followed by a batch norm that adds ``b'`` and, given the channel
statistics ``mu, var`` of ``W' x`` on calibration images, is the identity in both modes:
``running_mean = mu``, ``running_var = var``, ``gamma = sqrt(var + eps)``,
``beta = mu + b'``. The network then computes exactly what the ONNX file computes.

    git show 89830af:models/dr_nodule/1.1.0/model.onnx > var/training/dr_nodule_1.1.0.onnx
    nice -n 10 python -m training.dr.warm_start var/training/dr_nodule_1.1.0.onnx \
        var/training/dr_nodule_v110/model.pt
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.dr.data import synth_sample
from training.dr.net import DRNoduleNet, FlipAveraged, ShiftAveraged


def _conv_order(net: DRNoduleNet) -> list[nn.Conv2d]:
    """Convolutions in execution order (the order of the ONNX graph's Conv nodes)."""
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, *_: order.append(mod))  # type: ignore[arg-type]
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    return order


def _folded_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # a weight used twice (a flip-averaged export) reaches its second Conv through Identity
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in init:
            init[node.output[0]] = init[node.input[0]]
    out = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = init[node.input[1]]
            b = init[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
            out.append((w, b))
    return out


def flip_averaged(path: Path) -> bool:
    """Whether the file is a flip-averaged export (training.dr.net.FlipAveraged): every
    convolution appears twice, the film's pass and the mirror's."""
    folded = _folded_weights(path)
    half = len(folded) // 2
    return len(folded) == 2 * half > 0 and all(
        np.array_equal(w1, w2) and np.array_equal(b1, b2)
        for (w1, b1), (w2, b2) in zip(folded[:half], folded[half:], strict=True)
    )


def shift_average(path: Path) -> tuple[int, ...]:
    """The shifts of a shift-averaged export (training.dr.net.ShiftAveraged), else ()."""
    from training.dr.export import SHIFT_METADATA

    for entry in onnx.load(str(path)).metadata_props:
        if entry.key == SHIFT_METADATA:
            return tuple(int(v) for v in entry.value.split(","))
    return ()


def as_exported(net: DRNoduleNet, path: Path) -> nn.Module:
    """``net`` wrapped as the file ``path`` runs it: flip- and / or shift-averaged."""
    model: nn.Module = FlipAveraged(net) if flip_averaged(path) else net
    shifts = shift_average(path)
    return ShiftAveraged(model, shifts) if shifts else model


def from_onnx(path: Path, calibration: torch.Tensor, width: int = 16) -> DRNoduleNet:
    """The network of ``path``; of a flip-averaged export, the network that runs twice."""
    net = DRNoduleNet(width)
    convs = _conv_order(net)
    folded = _folded_weights(path)
    if flip_averaged(path):
        folded = folded[: len(folded) // 2]
    if len(convs) != len(folded):
        raise ValueError(f"{path}: {len(folded)} Conv nodes, network has {len(convs)}")
    bn_after = {m[0]: m[1] for m in net.modules() if isinstance(m, nn.Sequential) and len(m) >= 2}
    stats: dict[nn.Conv2d, torch.Tensor] = {}
    with torch.no_grad():
        for conv, (w, b) in zip(convs, folded, strict=True):
            if tuple(conv.weight.shape) != w.shape:
                raise ValueError(f"{path}: weight {w.shape} for {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bn = bn_after.get(conv)
            if isinstance(bn, nn.BatchNorm2d):  # identity norm plus the folded bias, for now
                assert bn.running_mean is not None and bn.running_var is not None
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(b)))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            elif conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(np.array(b)))
        hooks = [
            c.register_forward_hook(lambda mod, _i, y: stats.__setitem__(mod, y))  # type: ignore[arg-type]
            for c in convs
            if isinstance(bn_after.get(c), nn.BatchNorm2d)
        ]
        net.eval()(calibration)
        for h in hooks:
            h.remove()
        for conv, y in stats.items():
            bn = bn_after[conv]
            assert isinstance(bn, nn.BatchNorm2d)
            assert bn.running_mean is not None and bn.running_var is not None
            mu, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
            bn.running_mean.copy_(mu)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.add_(mu)
    return net


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images = np.stack([synth_sample(s).image for s in range(800000, 800016)])
    net = from_onnx(args.onnx, torch.from_numpy(images[:, None]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "width": 16, "step": 0}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
