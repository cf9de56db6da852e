"""Warm-start checkpoint for the CTA vessel UNet from a shipped ONNX file.

Training checkpoints live under var/ and do not survive a fresh machine; the shipped
``model.onnx`` does. The exporter folds the batch norm of each residual unit into the
convolution before it (``W' = W gamma / sigma``, ``b'`` the folded shift), names those
initializers ``onnx::Conv_*`` and keeps the others (residual convolutions, transposed
convolutions and their batch norms) under their state-dict names. PReLU slopes lose
their names too. So: named initializers load by name; folded convolutions and PReLU
slopes load in execution order (the ONNX graph is in the order torch ran the modules).

A folded layer becomes convolution ``W'`` (bias 0) and a batch norm that is the identity
plus ``b'`` in eval mode yet also close to it in train mode: with ``mu, var`` the
channel statistics of ``W' x`` on calibration patches, ``running_mean = mu``,
``running_var = var``, ``gamma = sqrt(var + eps)``, ``beta = mu + b'`` (so eval mode
gives ``W' x + b'`` exactly, and batch statistics near ``mu, var`` give nearly that).

    nice -n 10 python -m training.cta.warm_start models/cta_vessels/1.2.0/model.onnx \
        var/training/cta/warm_1.2.0/checkpoint.pt
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

from training.cta.model import build_net

#: calibration patches: 16 cubes of this edge from synthetic training case 100
CALIBRATION_SEED = 100
CALIBRATION_PATCH = 32


def _execution_order(net: nn.Module, kinds: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, *_: order.append(mod))  # type: ignore[arg-type]
        for m in net.modules()
        if isinstance(m, kinds)
    ]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, 32, 32, 32))
    for h in hooks:
        h.remove()
    return order


def _batch_norm_after(net: nn.Module) -> dict[nn.Module, nn.BatchNorm3d]:
    """conv -> the batch norm of the same MONAI Convolution block (``conv``, ``adn.N``)."""
    out: dict[nn.Module, nn.BatchNorm3d] = {}
    for m in net.modules():
        conv, adn = getattr(m, "conv", None), getattr(m, "adn", None)
        norm = getattr(adn, "N", None) if adn is not None else None
        if isinstance(conv, nn.Conv3d) and isinstance(norm, nn.BatchNorm3d):
            out[conv] = norm
    return out


def from_onnx(path: Path, calibration: torch.Tensor) -> nn.Module:
    """The network of ``path`` as a trainable torch module (same outputs in eval mode)."""
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    net = build_net()
    state = net.state_dict()
    named = {k: v for k, v in init.items() if k in state}
    for k, v in named.items():
        if tuple(state[k].shape) != v.shape:
            raise ValueError(f"{path}: {k} is {v.shape}, network has {tuple(state[k].shape)}")
        state[k] = torch.from_numpy(np.array(v))
    net.load_state_dict(state)
    names = {m: n for n, m in net.named_modules()}
    folded = [
        (init[node.input[1]], init[node.input[2]])
        for node in model.graph.node
        if node.op_type == "Conv" and f"{node.input[1]}" not in named
    ]
    slopes = [init[node.input[1]] for node in model.graph.node if node.op_type == "PRelu"]
    convs = [m for m in _execution_order(net, (nn.Conv3d,)) if f"{names[m]}.weight" not in named]
    prelus = _execution_order(net, (nn.PReLU,))
    if len(convs) != len(folded) or len(prelus) != len(slopes):
        raise ValueError(
            f"{path}: {len(folded)} folded Conv / {len(slopes)} PRelu nodes, network has "
            f"{len(convs)} / {len(prelus)}"
        )
    bn_after = _batch_norm_after(net)
    with torch.no_grad():
        for prelu, a in zip(prelus, slopes, strict=True):
            assert isinstance(prelu, nn.PReLU)
            prelu.weight.copy_(torch.from_numpy(np.array(a)).reshape(prelu.weight.shape))
        for conv, (w, b) in zip(convs, folded, strict=True):
            assert isinstance(conv, nn.Conv3d) and conv.bias is not None
            if tuple(conv.weight.shape) != w.shape:
                raise ValueError(f"{path}: weight {w.shape} for {names[conv]}")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            conv.bias.zero_()
            bn = bn_after[conv]
            assert bn.running_mean is not None and bn.running_var is not None
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(b)))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        # channel statistics of each folded W' x, then the identity-in-both-modes norm
        stats: dict[nn.Module, torch.Tensor] = {}
        hooks = [
            c.register_forward_hook(lambda mod, _i, y: stats.__setitem__(mod, y))  # type: ignore[arg-type]
            for c in convs
        ]
        net.eval()(calibration)
        for h in hooks:
            h.remove()
        for conv in convs:
            y = stats[conv]
            bn = bn_after[conv]
            assert bn.running_mean is not None and bn.running_var is not None
            mu, var = y.mean(dim=(0, 2, 3, 4)), y.var(dim=(0, 2, 3, 4), unbiased=False)
            bn.running_mean.copy_(mu)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.add_(mu)
    return net


def calibration_patches(n: int = 16) -> torch.Tensor:
    from training.cta.data import make_case, sample_patches

    case = make_case(CALIBRATION_SEED)
    x, _ = sample_patches([case], np.random.default_rng(0), n, CALIBRATION_PATCH, 0.7)
    return torch.from_numpy(x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = from_onnx(args.onnx, calibration_patches())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the layout training.cta.train reads through ``init_from``
    torch.save({"net": net.state_dict(), "iteration": 0}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
