"""Warm start NoduleNet from a shipped ONNX export (fine-tuning instead of a cold start).

The exporter folds each batch norm into the convolution before it, so the ONNX file holds
one weight and one bias per convolution. Loading them back: the convolution takes the
folded weight, and its batch norm is set so that, on a calibration batch in training mode,
it passes the convolution output through unchanged plus the folded bias (scale = batch
standard deviation, shift = batch mean + bias; running statistics = the batch's). The
network then computes what the shipped model computes, in both modes, before training.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from countyread.errors import ModelError

logger = logging.getLogger(__name__)


def _onnx_tensors(path: Path, named: set[str]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """(folded conv weight/bias pairs in graph order, initialisers named as in ``named``).

    Convolutions whose weight keeps its state-dict name had no batch norm to fold."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    folded: list[np.ndarray] = []
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) == 3 and node.input[1] not in named:
            if node.input[1] not in inits or node.input[2] not in inits:
                raise ModelError(f"{path}: convolution {node.name} has no stored weights")
            folded += [inits[node.input[1]], inits[node.input[2]]]
    return folded, {k: v for k, v in inits.items() if k in named}


def warm_start(
    model: nn.Module, onnx_path: Path, patches: npt.NDArray[np.floating], seed: int = 0
) -> None:
    """Load ``onnx_path`` into ``model`` (in place), calibrating batch norm on ``patches``."""
    state = model.state_dict()
    folded, inits = _onnx_tensors(onnx_path, set(state))
    pairs: list[tuple[nn.Conv3d, nn.BatchNorm3d]] = []
    mods = list(model.modules())
    for a, b in itertools.pairwise(mods):
        if isinstance(a, nn.Conv3d) and isinstance(b, nn.BatchNorm3d):
            pairs.append((a, b))
    if len(folded) != 2 * len(pairs):
        raise ModelError(
            f"{onnx_path}: {len(folded) // 2} folded convolutions, network has {len(pairs)}"
        )
    named = {k: torch.from_numpy(v.copy()) for k, v in inits.items()}
    biases: dict[nn.BatchNorm3d, torch.Tensor] = {}
    with torch.no_grad():
        for (conv, bn), n in zip(pairs, range(0, len(folded), 2), strict=True):
            w = torch.from_numpy(folded[n].copy())
            if w.shape != conv.weight.shape:
                raise ModelError(f"{onnx_path}: shape {tuple(w.shape)} for {conv}")
            conv.weight.copy_(w)
            biases[bn] = torch.from_numpy(folded[n + 1].copy())
        missing = [
            k
            for k, v in model.named_parameters()
            if not any(v is c.weight for c, _ in pairs)
            and not any(v is b.weight or v is b.bias for _, b in pairs)
            and k not in named
        ]
        if missing:
            raise ModelError(f"{onnx_path}: no values for {missing}")
        model.load_state_dict({**model.state_dict(), **named})
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(patches), size=min(256, len(patches)), replace=False)
    x = torch.from_numpy(np.asarray(patches[np.sort(idx)], dtype=np.float32)).unsqueeze(1)

    def calibrate(bn: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not isinstance(bn, nn.BatchNorm3d):
            raise ModelError(f"calibration hook on {bn}")
        h = inputs[0]
        mean = h.mean(dim=(0, 2, 3, 4))
        var = h.var(dim=(0, 2, 3, 4), unbiased=False)
        # biased variance: eval mode then reproduces the calibration batch exactly
        if bn.running_mean is None or bn.running_var is None:
            raise ModelError(f"{bn} keeps no running statistics")
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean + biases[bn])

    hooks = [bn.register_forward_pre_hook(calibrate) for _, bn in pairs]
    was_training = model.training
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    model.train(was_training)
    logger.info("warm start", extra={"model": str(onnx_path), "convolutions": len(pairs)})
