"""DRNoduleNet: a small 2-D encoder-decoder giving a nodule-centre heatmap and diameters.

About 0.15 M parameters (~0.6 MB fp32 ONNX) and ~0.1 GMAC per 256 x 256 input, so it
trains on a shared 2-core CPU and runs in tens of milliseconds. Outputs at stride 4
(``inference.dr.detect.STRIDE``):
``heatmap`` (sigmoid probability of a nodule centre) and ``diameter`` (input pixels).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Up(nn.Module):
    """Nearest-neighbour upsampling, 1x1 projection, skip addition, 3x3 refinement."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.proj = nn.Conv2d(cin, cout, 1)
        self.refine = _conv(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.refine(self.proj(self.up(x)) + skip)


class DRNoduleNet(nn.Module):
    size_a: torch.Tensor
    size_b: torch.Tensor

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        # stride-4 stem: a nodule >= 5 mm spans >= 3 input pixels, so nothing is lost
        self.enc1 = nn.Sequential(_conv(1, c1 // 2, 2), _conv(c1 // 2, c1, 2), _conv(c1, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.enc3 = nn.Sequential(
            _conv(c2, c3, 2), _conv(c3, c3, dilation=2), _conv(c3, c3, dilation=2), _conv(c3, c3)
        )
        self.up2 = _Up(c3, c2)
        self.up1 = _Up(c2, c1)
        self.head = nn.Sequential(_conv(c1, c1), nn.Conv2d(c1, 2, 1))
        # Start the heatmap near the background rate so focal loss is stable (CenterNet).
        last = self.head[1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.constant_(last.bias, 0.0)
        with torch.no_grad():
            last.bias[0] = -4.0
            last.bias[1] = 2.0  # exp(2) ~ 7 px, a typical nodule at 256 px
        # Diameter calibration log d -> a + b log d, fitted after training on held-apart
        # images (training.dr.export): the L1 regression shrinks the largest nodules
        # toward the typical size. Not in the state dict: the exporter sets it.
        self.register_buffer("size_a", torch.zeros(()), persistent=False)
        self.register_buffer("size_b", torch.ones(()), persistent=False)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw heatmap logits and log-diameters, (B, 1, H/4, W/4) each."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d = self.up1(self.up2(e3, e2), e1)
        out = self.head(d)
        return out[:, :1], out[:, 1:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat, log_d = self.logits(x)
        log_d = self.size_a + self.size_b * log_d
        return torch.sigmoid(heat), torch.exp(log_d.clamp(-1.0, 5.0))


class FlipAveraged(nn.Module):
    """The network and its left-right mirror image averaged (test-time flip augmentation).

    Exported as one ONNX graph, so the service runs it as any model: heatmap and diameter
    maps are the means of the film's and the mirrored film's (mirrored back). A chest
    film's two halves differ (heart, aortic knob), and a nodule the network half-misses on
    one side is often found on the mirrored film; the mean keeps what both agree on.
    """

    def __init__(self, net: DRNoduleNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1, d1 = self.net(x)
        h2, d2 = self.net(torch.flip(x, dims=(3,)))
        return (h1 + torch.flip(h2, dims=(3,))) / 2, (d1 + torch.flip(d2, dims=(3,))) / 2


class ShiftAveraged(nn.Module):
    """``inner`` on the film and on copies moved down and right by whole output cells,
    the outputs moved back and averaged (test-time shift augmentation).

    The stem has stride 4 and the deepest features stride 16, so a film moved by 4, 8 or
    12 pixels meets the network at another phase of its stride-16 grid; a faint nodule
    that falls badly on one phase is scored from the others. Moves are along the diagonal
    (one graph, one batched pass); the cells a moved copy does not cover (the top and left
    edge strips, the film's padding) keep the mean of the copies that do.
    """

    def __init__(self, inner: nn.Module, shifts: tuple[int, ...] = (0, 4, 8, 12)) -> None:
        super().__init__()
        if any(s % 4 or s < 0 for s in shifts) or 0 not in shifts:
            raise ValueError(f"shifts must be multiples of the stride 4 and include 0: {shifts}")
        self.inner = inner
        self.shifts = shifts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        moved = [
            nn.functional.pad(x[:, :, : x.shape[2] - s, : x.shape[3] - s], (s, 0, s, 0)) if s else x
            for s in self.shifts
        ]
        heat, diam = self.inner(torch.cat(moved, dim=0))
        h_sum = torch.zeros_like(heat[:n])
        d_sum = torch.zeros_like(diam[:n])
        count = torch.zeros_like(heat[:n])
        for k, s in enumerate(self.shifts):
            c = s // 4
            h, d = heat[k * n : (k + 1) * n], diam[k * n : (k + 1) * n]
            if c:
                h = nn.functional.pad(h[:, :, c:, c:], (0, c, 0, c))
                d = nn.functional.pad(d[:, :, c:, c:], (0, c, 0, c))
            ones = torch.ones_like(heat[:n])
            covered = nn.functional.pad(ones[:, :, c:, c:], (0, c, 0, c)) if c else ones
            h_sum = h_sum + h
            d_sum = d_sum + d
            count = count + covered
        return h_sum / count, d_sum / count
