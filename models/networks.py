"""Network definitions (torch; imported by training only, the service runs the ONNX export).

``NoduleNet``: a small 3-D U-Net with a classification head for candidate patches. Input
``(batch, 1, 16, 16, 16)`` HU mapped to [-1, 1]; outputs ``logit`` (batch, 1), the
nodule-versus-not score, and ``mask_logit`` (batch, 1, 16, 16, 16), the nodule's voxels.
Skips are added rather than concatenated to keep the full-resolution layers cheap on CPU.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
    )


class NoduleNet(nn.Module):
    """Candidate classifier + segmenter; about 50 k parameters, ~0.15 GMAC per patch."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.enc1 = _conv(1, w1)
        self.enc2 = _block(w1, w2)
        self.enc3 = _block(w2, w3)
        self.pool = nn.MaxPool3d(2)
        self.lat3 = nn.Conv3d(w3, w2, 1)
        self.dec2 = _conv(w2, w2)
        self.lat2 = nn.Conv3d(w2, w1, 1)
        self.dec1 = _conv(w1, w1)
        self.seg = nn.Conv3d(w1, 1, 1)
        self.head = nn.Sequential(
            nn.Linear(2 * w3 + w2, 32), nn.ReLU(inplace=True), nn.Linear(32, 1)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(e2 + nn.functional.interpolate(self.lat3(e3), scale_factor=2.0))
        d1 = self.dec1(e1 + nn.functional.interpolate(self.lat2(d2), scale_factor=2.0))
        mask_logit = self.seg(d1)
        # the head sees the bottleneck and the decoder's centre, where the candidate sits
        q = d2.shape[2] // 4
        centre = d2[:, :, q : 3 * q, q : 3 * q, q : 3 * q].mean(dim=(2, 3, 4))
        pooled = torch.cat([e3.mean(dim=(2, 3, 4)), e3.amax(dim=(2, 3, 4)), centre], dim=1)
        return self.head(pooled), mask_logit
