"""Vessel segmentation on the 1 mm grid: tiled ONNX inference, clean-up, bone separation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

logger = logging.getLogger(__name__)

#: The network's input mapping (must match the model card / training.cta.model).
HU_WINDOW = (-200.0, 1200.0)
HU_CENTER = 200.0
HU_SCALE = 400.0
#: Voxels below this cannot be contrast lumen; tiles without any are skipped.
CANDIDATE_HU = 150.0
TILE = 64
MARGIN = 8
MIN_COMPONENT_MM3 = 60.0
BONE_HU = 200.0


def logit_of(probability: float) -> float:
    """The model card's operating threshold (a probability) as a logit threshold."""
    p = min(max(probability, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Segmentation:
    vessels: BOOL  # cleaned lumen mask on the work grid
    bone: BOOL  # bone (and calcium) not part of the lumen, for bone-removed renders
    tiles_run: int
    tiles_total: int


def normalise(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x = np.clip(hu, *HU_WINDOW)
    return ((x - HU_CENTER) / HU_SCALE).astype(np.float32)


def _starts(n: int, core: int) -> list[int]:
    return list(range(0, max(n - MARGIN, 1), core))


def predict_tiled(
    hu: npt.NDArray[np.float32], predict: Predict, logit_threshold: float = 0.0
) -> tuple[BOOL, int, int]:
    """Run the network on overlapping tiles that contain candidate (bright) voxels.

    Each tile keeps only its core (a MARGIN of context each side is discarded), so
    seams carry no border artefacts; tiles with no voxel above CANDIDATE_HU cannot hold
    a contrast-filled lumen and are not run at all (most of the head and neck).
    """
    shape = hu.shape
    core = TILE - 2 * MARGIN
    bright = hu > CANDIDATE_HU
    out = np.zeros(shape, dtype=bool)
    padded = np.pad(hu, MARGIN, mode="edge")
    run = total = 0
    for k in _starts(shape[0], core):
        for j in _starts(shape[1], core):
            for i in _starts(shape[2], core):
                total += 1
                ck = slice(k, min(k + core, shape[0]))
                cj = slice(j, min(j + core, shape[1]))
                ci = slice(i, min(i + core, shape[2]))
                if not bright[ck, cj, ci].any():
                    continue
                run += 1
                tile = padded[k : k + TILE, j : j + TILE, i : i + TILE]
                pad = [(0, TILE - s) for s in tile.shape]
                if any(p[1] for p in pad):
                    tile = np.pad(tile, pad, mode="edge")
                logits = predict(normalise(tile)[None, None])[0, 0]
                dk, dj, di = ck.stop - ck.start, cj.stop - cj.start, ci.stop - ci.start
                sub = logits[MARGIN : MARGIN + dk, MARGIN : MARGIN + dj, MARGIN : MARGIN + di]
                out[ck, cj, ci] = sub > logit_threshold
    return out, run, total


def clean_vessels(mask: BOOL, voxel_mm3: float) -> BOOL:
    """Drop small components (noise, calcium specks) and thin isolated ones.

    A component in which no voxel lies deeper than one voxel inside is a sheet or a
    line one voxel thick: the rim of a bone cortex, never a lumen on its own.
    """
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes * voxel_mm3 >= MIN_COMPONENT_MM3
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    if box is not None:
        dt = ndimage.distance_transform_cdt(mask[box], metric="taxicab")
        depth = ndimage.maximum(dt, labels[box], index=np.arange(n + 1))
        keep &= np.asarray(depth) >= 2
    keep[0] = False
    return np.asarray(keep[labels])


def separate_bone(hu: npt.NDArray[np.float32], vessels: BOOL) -> BOOL:
    """Bone = bright voxels that are not lumen, grown by one voxel but never into lumen.

    The network decides which bright voxels are lumen where a vessel touches bone
    (transverse foramina, carotid canal, skull base); this turns the rest into a mask
    that the MIP and volume rendering suppress.
    """
    bone = (hu > BONE_HU) & ~vessels
    bone = ndimage.binary_dilation(bone, iterations=1)
    bone &= ~ndimage.binary_dilation(vessels, iterations=1)
    return np.asarray(bone)


def segment(
    hu: npt.NDArray[np.float32], predict: Predict, voxel_mm3: float, logit_threshold: float = 0.0
) -> Segmentation:
    """Vessel lumen mask; ``bone`` is left empty for :func:`separate_bone` (timed apart)."""
    raw, run, total = predict_tiled(hu, predict, logit_threshold)
    vessels = clean_vessels(raw, voxel_mm3)
    return Segmentation(vessels, np.zeros(0, dtype=bool), run, total)


def calcified_plaques(hu: npt.NDArray[np.float32], vessels: BOOL, calcium_hu: float) -> BOOL:
    """Small very bright blobs against the lumen: calcium, not bone (bone pieces are big)."""
    bright = (hu > calcium_hu) & ~vessels
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.zeros_like(vessels)
    sizes = np.bincount(labels.ravel())
    near = ndimage.binary_dilation(vessels, iterations=2)
    touching = np.zeros(n + 1, dtype=bool)
    touching[np.unique(labels[near & bright])] = True
    keep = touching & (sizes <= 60)
    keep[0] = False
    return np.asarray(keep[labels])
