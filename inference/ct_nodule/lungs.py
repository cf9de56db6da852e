"""Lung mask from HU alone: air inside the body, filled, closed toward the pleura.

Runs on a coarse (~2 mm) strided copy of the volume so it costs well under a second on
a 600-slice CT; the result is a boolean mask on that coarse grid plus the body midline
that separates right from left (LPS: +x is the patient's left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from countyread.domain import Volume
from countyread.errors import NotAnalyzableError

AIR_THRESHOLD_HU = -400
MIN_LUNG_ML = 100.0
CLOSING_MM = 10.0
# Border-touching air that is still lung: contact with the field-of-view edge on under
# this share of its voxels (room air around the patient: several %; a lung clipped by a
# narrow field of view: about 0.02 %) and median HU above ROOM_AIR_HU.
CLIPPED_CONTACT = 0.02
ROOM_AIR_HU = -960.0


@dataclass(frozen=True, slots=True)
class LungMask:
    """Lung region on a coarse grid: ``mask[k, j, i]`` covers volume voxel (k*sk, j*sj, i*si)."""

    mask: npt.NDArray[np.bool_]
    stride: tuple[int, int, int]
    midline_x: float  # LPS x of the body midline
    volume_ml: float

    def contains(self, kji: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Whether fractional volume indices (N x 3) fall inside the coarse mask."""
        idx = np.round(np.asarray(kji) / np.asarray(self.stride)).astype(int)
        idx = np.clip(idx, 0, np.asarray(self.mask.shape) - 1)
        return self.mask[idx[:, 0], idx[:, 1], idx[:, 2]]

    def upsampled_bbox(self, shape: tuple[int, int, int], margin: int = 2) -> tuple[slice, ...]:
        """Bounding box of the mask in full-volume indices, grown by ``margin`` coarse voxels."""
        nz = (
            np.nonzero(self.mask.any(axis=(1, 2)))[0],
            np.nonzero(self.mask.any(axis=(0, 2)))[0],
            np.nonzero(self.mask.any(axis=(0, 1)))[0],
        )
        out = []
        for axis, idx in enumerate(nz):
            lo = max(0, (int(idx[0]) - margin) * self.stride[axis])
            hi = min(shape[axis], (int(idx[-1]) + 1 + margin) * self.stride[axis])
            out.append(slice(lo, hi))
        return tuple(out)


def strides_for(
    spacing: tuple[float, float, float], target_mm: float = 2.5
) -> tuple[int, int, int]:
    return tuple(max(1, round(target_mm / s)) for s in spacing)  # type: ignore[return-value]


def segment_lungs(volume: Volume) -> LungMask:
    """Both lungs (with airways), filled and closed; NotAnalyzableError if none in view."""
    stride = strides_for(volume.spacing)
    coarse = volume.array[:: stride[0], :: stride[1], :: stride[2]]
    step = np.asarray(volume.spacing) * np.asarray(stride)
    voxel_ml = float(np.prod(step)) / 1000.0
    air = coarse < AIR_THRESHOLD_HU
    body = ~air
    # Air outside the patient touches the in-plane border of the field of view; lungs do
    # not (the trachea may leave through the top slice, so z borders are not used).
    labels, n = ndimage.label(air)
    border = np.unique(
        np.r_[
            labels[:, 0, :].ravel(),
            labels[:, -1, :].ravel(),
            labels[:, :, 0].ravel(),
            labels[:, :, -1].ravel(),
        ]
    )
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    sizes = counts[1:] * voxel_ml
    outside = border[border > 0]
    # A lung cut by a field of view narrower than the patient also touches the border,
    # but along a sliver of its surface, and holds parenchyma (~-850 HU), not room air.
    edge = np.zeros(air.shape, dtype=bool)
    edge[:, 0, :] = edge[:, -1, :] = edge[:, :, 0] = edge[:, :, -1] = True
    contact = np.bincount(labels[edge], minlength=n + 1)
    clipped = [
        lab
        for lab in outside
        if contact[lab] < CLIPPED_CONTACT * counts[lab]
        and counts[lab] * voxel_ml >= MIN_LUNG_ML / 4
        and float(np.median(coarse[labels == lab])) > ROOM_AIR_HU
    ]
    sizes[np.setdiff1d(outside, clipped) - 1] = 0.0
    keep = np.zeros(n + 1, dtype=bool)
    for lab in np.argsort(sizes)[::-1][:3] + 1:
        keep[lab] = sizes[lab - 1] >= MIN_LUNG_ML / 4
    lungs = keep[labels]
    total_ml = float(lungs.sum()) * voxel_ml
    if total_ml < MIN_LUNG_ML:
        raise NotAnalyzableError("no lungs in the field of view")
    # Drop small air pockets the top-3 rule kept (bowel gas below the diaphragm is smaller
    # than either lung in a chest CT and sits far from the lung's bulk).
    lab2, n2 = ndimage.label(lungs)
    if n2 > 1:
        s2 = np.bincount(lab2.ravel(), minlength=n2 + 1)[1:]
        lungs = np.isin(lab2, 1 + np.flatnonzero(s2 >= 0.15 * s2.max()))
    # Vessels and nodules are holes in the air mask on each axial slice: fill them.
    filled = np.empty_like(lungs)
    for k in range(lungs.shape[0]):
        filled[k] = ndimage.binary_fill_holes(lungs[k])
    # Closing brings juxtapleural nodules (indentations of the pleura) into the mask.
    # Closing with a ~CLOSING_MM ball made of iterated small steps (fast on any grid).
    iterations = max(1, round(CLOSING_MM / float(np.mean(step))))
    struct = ndimage.generate_binary_structure(3, 2)
    pad = iterations + 1
    closed = ndimage.binary_closing(np.pad(filled, pad), struct, iterations=iterations)
    closed = closed[pad:-pad, pad:-pad, pad:-pad] & body | filled
    body_cols = np.nonzero(body.any(axis=(0, 1)))[0]
    mid_i = (
        (body_cols[0] + body_cols[-1]) / 2.0 * stride[2] if len(body_cols) else volume.shape[2] / 2
    )
    midline = volume.index_to_lps([volume.shape[0] / 2, volume.shape[1] / 2, mid_i])
    return LungMask(closed, stride, float(midline[0]), total_ml)
