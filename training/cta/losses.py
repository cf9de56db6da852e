"""Soft clDice loss (Shit et al., "clDice - a Novel Topology-Preserving Loss Function for
Tubular Structure Segmentation", CVPR 2021).

The soft skeleton is the paper's iterative morphological one: min-pooling erodes,
max-pooling dilates, and what an opening removes at each erosion depth is skeleton.
Topology precision = share of the predicted soft skeleton inside the true mask,
topology sensitivity = share of the true skeleton inside the predicted probabilities;
the loss is 1 - their harmonic mean. Dice + CE alone is dominated by the thick arch and
carotids, where most voxels are; this term counts every millimetre of centreline alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _erode(x: torch.Tensor) -> torch.Tensor:
    # three 1-D min-pools, then their minimum: a cross-shaped (6-neighbour) erosion
    a = -F.max_pool3d(-x, (3, 1, 1), 1, (1, 0, 0))
    b = -F.max_pool3d(-x, (1, 3, 1), 1, (0, 1, 0))
    c = -F.max_pool3d(-x, (1, 1, 3), 1, (0, 0, 1))
    return torch.minimum(torch.minimum(a, b), c)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool3d(x, 3, 1, 1)


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Soft skeleton of probabilities ``x`` (N, 1, z, y, x) in [0, 1]."""
    skel = F.relu(x - _dilate(_erode(x)))
    for _ in range(iterations):
        x = _erode(x)
        delta = F.relu(x - _dilate(_erode(x)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def soft_cldice_loss(
    logits: torch.Tensor, target: torch.Tensor, iterations: int = 5, smooth: float = 1.0
) -> torch.Tensor:
    """1 - soft clDice between sigmoid(``logits``) and the binary ``target``."""
    prob = torch.sigmoid(logits)
    skel_pred = soft_skeleton(prob, iterations)
    skel_true = soft_skeleton(target, iterations)
    tprec = ((skel_pred * target).sum() + smooth) / (skel_pred.sum() + smooth)
    tsens = ((skel_true * prob).sum() + smooth) / (skel_true.sum() + smooth)
    return 1.0 - 2.0 * tprec * tsens / (tprec + tsens)
