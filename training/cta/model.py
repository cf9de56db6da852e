"""The CTA vessel network: a small 3-D UNet (MONAI) that runs on CPU at 1 mm."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

#: network input: HU clipped to this window, then (hu - CENTER) / SCALE
HU_WINDOW = (-200.0, 1200.0)
HU_CENTER = 200.0
HU_SCALE = 400.0
SPACING_MM = 1.0


def build_net() -> torch.nn.Module:
    """Three down-steps give a ~40 mm receptive field: enough to tell a tube from a plate."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=(8, 16, 24, 32),
        strides=(2, 2, 2),
        num_res_units=1,
        # batch norm: its running statistics make tiled inference independent of what
        # else a tile holds (instance norm would renormalise each tile differently)
        norm="batch",
    )
