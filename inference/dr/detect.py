"""Network input framing and heatmap decoding for the DR nodule model (no I/O, numpy only).

The network sees the prepared radiograph letterboxed into ``INPUT_SIZE`` squared pixels
(long side scaled to fit, centred, zero padding) and returns, at stride ``STRIDE``, a
nodule-centre probability map and a diameter map in input pixels (CenterNet style).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

F32 = npt.NDArray[np.float32]

INPUT_SIZE = 256
STRIDE = 4
MIN_SCORE = 0.05  # candidates below this are never reported, whatever the threshold
MAX_DETECTIONS = 10


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a working image was placed in the network input."""

    scale: float  # input pixels per working pixel
    offset: tuple[int, int]  # (row, col) of the working image's origin in the input
    size: int

    def to_working(self, rc: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Input-pixel (row, col) coordinates (N x 2) to working-image coordinates."""
        pts = np.atleast_2d(np.asarray(rc, dtype=np.float64))
        return (pts - np.asarray(self.offset, dtype=np.float64) + 0.5) / self.scale - 0.5

    def to_input(self, rc: npt.ArrayLike) -> npt.NDArray[np.float64]:
        pts = np.atleast_2d(np.asarray(rc, dtype=np.float64))
        return (pts + 0.5) * self.scale - 0.5 + np.asarray(self.offset, dtype=np.float64)


def letterbox(pixels: F32, size: int = INPUT_SIZE) -> tuple[F32, Letterbox]:
    """Scale the long side to ``size`` (antialiased), centre, pad with zeros."""
    h, w = pixels.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F").resize(
            (nw, nh), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    out = np.zeros((size, size), dtype=np.float32)
    r0, c0 = (size - nh) // 2, (size - nw) // 2
    out[r0 : r0 + nh, c0 : c0 + nw] = resized
    # per-axis scale differs by < 1 px over the image; one scale keeps the mapping simple
    return out, Letterbox(scale, (r0, c0), size)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One decoded peak, in network-input pixels."""

    row: float
    col: float
    diameter: float
    score: float


def decode(
    heatmap: F32,
    diameters: F32,
    *,
    min_score: float = MIN_SCORE,
    max_detections: int = MAX_DETECTIONS,
) -> list[Candidate]:
    """Local maxima of the heatmap, best first, with overlapping ones suppressed.

    ``heatmap`` and ``diameters`` are (H, W) at stride ``STRIDE``. A peak closer to a
    stronger kept peak than half the larger diameter is the same nodule and dropped.
    """
    peaks = (heatmap == ndimage.maximum_filter(heatmap, size=3)) & (heatmap >= min_score)
    rows, cols = np.nonzero(peaks)
    order = np.argsort(-heatmap[rows, cols], kind="stable")
    kept: list[Candidate] = []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        dr, dc = _subpixel(heatmap, r, c)
        cand = Candidate(
            row=(r + dr) * STRIDE + (STRIDE - 1) / 2,
            col=(c + dc) * STRIDE + (STRIDE - 1) / 2,
            diameter=float(max(diameters[r, c], 1.0)),
            score=float(heatmap[r, c]),
        )
        if any(
            np.hypot(cand.row - k.row, cand.col - k.col) < max(cand.diameter, k.diameter) / 2
            for k in kept
        ):
            continue
        kept.append(cand)
        if len(kept) >= max_detections:
            break
    return kept


def _subpixel(h: F32, r: int, c: int) -> tuple[float, float]:
    """Parabolic peak refinement along each axis (stays within half a cell)."""

    def offset(a: float, b: float, m: float) -> float:
        den = a - 2 * m + b
        return float(np.clip(0.5 * (a - b) / den, -0.5, 0.5)) if den < 0 else 0.0

    H, W = h.shape
    dr = offset(h[r - 1, c], h[r + 1, c], h[r, c]) if 0 < r < H - 1 else 0.0
    dc = offset(h[r, c - 1], h[r, c + 1], h[r, c]) if 0 < c < W - 1 else 0.0
    return dr, dc
