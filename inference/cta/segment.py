"""Vessel segmentation on the 1 mm grid: tiled ONNX inference, clean-up, bone separation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

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
#: Network pieces this small still seed the refinement: a basilar artery cut off from
#: the vertebrals by the skull base can come out of the network as a 40 mm3 stub that
#: the growth turns back into the whole vessel; the size rule applies after growth.
SEED_MIN_MM3 = 20.0
BONE_HU = 200.0
#: Refinement (:func:`refine`): the growth threshold sits this far from tissue to lumen,
#: i.e. half-way (the partial-volume edge of a lumen); cortical bone is anything this
#: far above the lumen (and never below CORTEX_MIN_HU), and the growth keeps out of a
#: 1.5 voxel shell round it, where blur lifts soft tissue into the contrast range.
GROW_FRACTION = 0.5
CORTEX_ABOVE_LUMEN_HU = 200.0
CORTEX_MIN_HU = 600.0
#: Grown pieces thicker than this (inscribed radius, voxels) are marrow, thyroid or a
#: venous sinus, not a head/neck artery (ICA / VA / BA radii are 1-3.5 mm).
MAX_GROWN_RADIUS_VOX = 4.0
#: Inside the bone shell the HU alone cannot tell lumen from blurred cortex, so there
#: the growth also needs some network evidence: a logit above this (p ~ 0.05).
SHELL_MIN_LOGIT = -3.0
SKIPPED_LOGIT = -30.0
#: A piece under MIN_COMPONENT_MM3 (after growth) is kept when it continues a kept
#: vessel across a short gap: the network cuts an artery at a tight stenosis and the
#: part beyond it can be small (issue 5: a 34-56 mm3 distal M1 with logits up to 8,
#: 3 mm from its M1, dropped, so the 56 % stenosis went ungraded). It needs confident
#: network evidence, a gap of at most FRAGMENT_GAP_MM to the kept mask, and an
#: elongated shape whose long axis points at that gap (FRAGMENT_FACING_COS): a bone
#: corner the network marks (a 55 mm3 piece of vertebral cortex, logits ~8, 12 mm from
#: any vessel, in every phantom of the synthetic fixed set) stays out.
FRAGMENT_MIN_LOGIT = 5.0
FRAGMENT_GAP_MM = 6.0
FRAGMENT_FACING_COS = 0.7
FRAGMENT_ELONGATION = 2.0
#: A calcified plaque is at most this many voxels above calcium HU (a 4 mm blob);
#: bone pieces are bigger.
PLAQUE_MAX_VOXELS = 60


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
    grown_voxels: int = 0  # lumen voxels added by :func:`refine`


def normalise(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x = np.clip(hu, *HU_WINDOW)
    return ((x - HU_CENTER) / HU_SCALE).astype(np.float32)


def _starts(n: int, core: int) -> list[int]:
    return list(range(0, max(n - MARGIN, 1), core))


def predict_logits(
    hu: npt.NDArray[np.float32], predict: Predict
) -> tuple[npt.NDArray[np.float16], int, int]:
    """Run the network on overlapping tiles that contain candidate (bright) voxels.

    Each tile keeps only its core (a MARGIN of context each side is discarded), so
    seams carry no border artefacts; tiles with no voxel above CANDIDATE_HU cannot hold
    a contrast-filled lumen and are not run at all (most of the head and neck); their
    logits read SKIPPED_LOGIT. float16 halves the memory of a full-size volume.
    """
    shape = hu.shape
    core = TILE - 2 * MARGIN
    bright = hu > CANDIDATE_HU
    out = np.full(shape, SKIPPED_LOGIT, dtype=np.float16)
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
                out[ck, cj, ci] = np.clip(sub, -60000, 60000)
    return out, run, total


def predict_tiled(
    hu: npt.NDArray[np.float32], predict: Predict, logit_threshold: float = 0.0
) -> tuple[BOOL, int, int]:
    """The network's own mask: tiled logits above the operating threshold."""
    logits, run, total = predict_logits(hu, predict)
    return np.asarray(logits > logit_threshold), run, total


def clean_vessels(mask: BOOL, voxel_mm3: float, min_mm3: float = MIN_COMPONENT_MM3) -> BOOL:
    """Drop small components (noise, calcium specks) and thin isolated ones.

    A component in which no voxel lies deeper than one voxel inside is a sheet or a
    line one voxel thick: the rim of a bone cortex, never a lumen on its own.
    """
    return clean_vessels_by_size(mask, voxel_mm3, (min_mm3,))[0]


def clean_vessels_by_size(mask: BOOL, voxel_mm3: float, min_mm3: tuple[float, ...]) -> list[BOOL]:
    """:func:`clean_vessels` for several size limits from one labelling."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return [mask for _ in min_mm3]
    sizes = np.bincount(labels.ravel())
    thick = np.ones(n + 1, dtype=bool)
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    if box is not None:
        dt = ndimage.distance_transform_cdt(mask[box], metric="taxicab")
        depth = ndimage.maximum(dt, labels[box], index=np.arange(n + 1))
        thick = np.asarray(depth) >= 2
    out = []
    for limit in min_mm3:
        keep = (sizes * voxel_mm3 >= limit) & thick
        keep[0] = False
        out.append(np.asarray(keep[labels]))
    return out


def _tissue_hu(hu: npt.NDArray[np.float32]) -> float:
    sub = hu[::4, ::4, ::4]
    soft = sub[(sub > -100) & (sub < 150)]
    return float(np.median(soft)) if soft.size else 40.0


def refine(
    hu: npt.NDArray[np.float32],
    vessels: BOOL,
    weak: BOOL | None = None,
    reference: BOOL | None = None,
) -> tuple[BOOL, int]:
    """Grow the network's lumen into connected contrast-filled voxels it missed.

    The network loses lumen next to bone (transverse foramina, carotid canal, skull
    base) and thin intracranial arteries. A lumen is what this series' contrast makes
    bright, so the lumen HU is measured on the network's confident core (its mask
    eroded by one voxel) and the mask grows (hysteresis: seeds = the network's mask)
    into connected voxels above half-way between tissue and lumen. Three guards keep
    the growth in arteries: it stops below cortical bone (> lumen + 200 HU) and a
    1.5 voxel shell round it (blur lifts that shell into the contrast range); marrow,
    thyroid and other blobs are refused by thickness (inscribed radius above
    MAX_GROWN_RADIUS_VOX); and calcium (above the cortex threshold) is never lumen.
    Inside the shell a voxel may join only where ``weak`` (weak network evidence,
    logit > SHELL_MIN_LOGIT) holds: a vertebral artery in its foramen runs within
    1-2 mm of the cortex ring for the whole cervical spine.
    Veins in the arterial phase (60-140 HU) stay below the growth threshold.
    ``reference`` (default: ``vessels``) is the mask the lumen HU is measured on.
    """
    core = ndimage.binary_erosion(vessels if reference is None else reference)
    if core.sum() < 50:
        return vessels, 0
    lumen = float(np.median(hu[core]))
    tissue = _tissue_hu(hu)
    if lumen - tissue < 150.0:  # no arterial contrast: nothing to grow into
        return vessels, 0
    low = tissue + GROW_FRACTION * (lumen - tissue)
    cortex = hu > max(lumen + CORTEX_ABOVE_LUMEN_HU, CORTEX_MIN_HU)
    shell = ndimage.binary_dilation(cortex, structure=ndimage.generate_binary_structure(3, 2))
    allowed = ~shell if weak is None else ~shell | weak
    candidate = (hu > low) & allowed
    candidate |= vessels
    full = np.ones((3, 3, 3), dtype=bool)
    labels, n_labels = ndimage.label(candidate, structure=full)
    attached = np.zeros(n_labels + 1, dtype=bool)
    attached[np.unique(labels[vessels])] = True
    attached[0] = False
    grown = attached[labels]
    added = grown & ~vessels
    del labels, candidate, shell
    box = ndimage.find_objects(added.astype(np.uint8))
    if not box or box[0] is None:
        return vessels, 0
    sub = added[box[0]]
    pieces, n = ndimage.label(sub, structure=full)
    depth = ndimage.distance_transform_edt(sub)
    thick = np.asarray(ndimage.maximum(depth, pieces, index=np.arange(n + 1)))
    keep = thick <= MAX_GROWN_RADIUS_VOX
    keep[0] = False
    out = vessels.copy()
    out[box[0]] |= keep[pieces]
    gained = int(out.sum() - vessels.sum())
    logger.debug(
        "lumen refinement",
        extra={"lumen_hu": round(lumen), "threshold_hu": round(low), "grown_voxels": gained},
    )
    return out, gained


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
    hu: npt.NDArray[np.float32],
    predict: Predict,
    voxel_mm3: float,
    logit_threshold: float = 0.0,
    do_refine: bool = True,
) -> Segmentation:
    """Vessel lumen mask; ``bone`` is left empty for :func:`separate_bone` (timed apart).

    ``refine`` grows the network's mask (:func:`refine`); off only to measure the
    network alone.
    """
    logits, run, total = predict_logits(hu, predict)
    raw = np.asarray(logits > logit_threshold)
    if not do_refine:
        return Segmentation(clean_vessels(raw, voxel_mm3), np.zeros(0, dtype=bool), run, total)
    # the lumen HU (and whether there is contrast at all) from full-size pieces only
    seeds, reference = clean_vessels_by_size(raw, voxel_mm3, (SEED_MIN_MM3, MIN_COMPONENT_MM3))
    grown_mask, _ = refine(hu, seeds, np.asarray(logits > SHELL_MIN_LOGIT), reference)
    # every piece grew from a seed at least two voxels thick: only the size rule is left
    labels, n = ndimage.label(grown_mask, structure=np.ones((3, 3, 3), dtype=bool))
    keep = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3 >= MIN_COMPONENT_MM3
    keep[0] = False
    vessels = np.asarray(keep[labels])
    vessels |= continuing_fragments(labels, keep, logits, voxel_mm3)
    grown = int(vessels.sum()) - int((vessels & raw).sum())
    return Segmentation(vessels, np.zeros(0, dtype=bool), run, total, grown)


def continuing_fragments(
    labels: npt.NDArray[np.int32],
    keep: BOOL,
    logits: npt.NDArray[np.float16],
    voxel_mm3: float,
) -> BOOL:
    """The small pieces (``labels`` not in ``keep``) that continue a kept vessel across a
    short gap; see FRAGMENT_MIN_LOGIT. Isotropic voxels of ``voxel_mm3`` assumed."""
    out = np.zeros(labels.shape, dtype=bool)
    small = np.flatnonzero(~keep)
    small = small[small > 0]
    if not len(small) or not keep.any():
        return out
    voxel_mm = voxel_mm3 ** (1.0 / 3.0)
    peak = np.asarray(ndimage.maximum(logits.astype(np.float32), labels, index=small))
    sizes = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)[small] * voxel_mm3
    small = small[(peak > FRAGMENT_MIN_LOGIT) & (sizes >= SEED_MIN_MM3)]
    if not len(small):
        return out
    kept = np.argwhere(keep[labels])
    if not len(kept):
        return out
    tree = cKDTree(kept)
    for lab in small:
        pts = np.argwhere(labels == lab).astype(np.float64)
        dist, idx = tree.query(pts)
        gap_mm = float(dist.min()) * voxel_mm
        if gap_mm > FRAGMENT_GAP_MM:
            continue
        centre = pts.mean(axis=0)
        evals, evecs = np.linalg.eigh(np.cov((pts - centre).T))
        # a piece along the vessel: its long axis well above the others
        if evals[-1] < FRAGMENT_ELONGATION**2 * max(float(evals[-2]), 1e-6):
            continue
        # the gap (nearest piece voxel to nearest kept voxel) runs along that axis
        m = int(np.argmin(dist))
        gap = kept[idx[m]] - pts[m]
        facing = abs(float(evecs[:, -1] @ gap)) / (float(np.linalg.norm(gap)) + 1e-9)
        if facing >= FRAGMENT_FACING_COS:
            out |= labels == lab
    return out


def calcified_plaques(hu: npt.NDArray[np.float32], vessels: BOOL, calcium_hu: float) -> BOOL:
    """Small very bright blobs at the lumen: calcium, not bone (bone pieces are big).

    The network often labels a plaque that bulges into the lumen as vessel (it is bright
    and inside the wall): blobs inside the mask count too. A vertebral artery's lumen
    lifted above calcium by the bone of its foramen is no blob of its own: it joins the
    bone ring, which is big.
    """
    bright = hu > calcium_hu
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.zeros_like(vessels)
    sizes = np.bincount(labels.ravel())
    near = ndimage.binary_dilation(vessels, iterations=2)
    touching = np.zeros(n + 1, dtype=bool)
    touching[np.unique(labels[near & bright])] = True
    keep = touching & (sizes <= PLAQUE_MAX_VOXELS)
    keep[0] = False
    return np.asarray(keep[labels])
