"""Run the candidate network and turn its outputs into nodule masks on the volume grid.

The network's mask (on its 16^3 patch) says which object is the nodule - not the vessel
or chest wall beside it; the boundary is then taken from HU at the midpoint between the
nodule's attenuation and the surrounding lung, the partial-volume edge a radiologist's
lung-window caliper follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from countyread.domain import Volume
from inference.ct_nodule.candidates import Candidate
from inference.ct_nodule.patches import PATCH, extract_patch, patch_spacing, patch_to_volume

BATCH = 64
LUNG_HU = -850.0
# Compact cores of >= 6 mm radius: lesions >= ~12 mm (see ``detect``'s ``large_floor``).
LARGE_RADIUS_MM = 6.0

RunFn = Callable[[npt.NDArray[np.float32]], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected nodule: probability, mask cropped to ``box`` of the volume grid."""

    probability: float
    box: tuple[slice, slice, slice]
    mask: npt.NDArray[np.bool_]
    center_kji: tuple[float, float, float]

    @property
    def bbox(self) -> tuple[int, int, int, int, int, int]:
        b = self.box
        return (b[0].start, b[1].start, b[2].start, b[0].stop, b[1].stop, b[2].stop)


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    # float64: confident logits (> 17) would all round to 1.0 in float32 and tie in FROC
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -40, 40))))


def score_candidates(
    volume: Volume, cands: list[Candidate], run: RunFn
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Probabilities (N) and mask probabilities (N x P x P x P) of every candidate."""
    if not cands:
        return np.zeros(0), np.zeros((0, PATCH, PATCH, PATCH))
    probs, masks = [], []
    for start in range(0, len(cands), BATCH):
        chunk = cands[start : start + BATCH]
        x = np.stack(
            [
                extract_patch(
                    volume.array, c.center_kji, patch_spacing(c.radius_mm), volume.spacing
                )
                for c in chunk
            ]
        )[:, None]
        logit, mask_logit = run(x)
        probs.append(_sigmoid(logit[:, 0]))
        masks.append(_sigmoid(mask_logit[:, 0]))
    return np.concatenate(probs), np.concatenate(masks)


def nodule_mask(
    volume: Volume, cand: Candidate, mask_prob: npt.NDArray[np.floating]
) -> tuple[tuple[slice, slice, slice], npt.NDArray[np.bool_]] | None:
    """The nodule's voxels near one candidate, or None when the network drew nothing."""
    s = patch_spacing(cand.radius_mm)
    box, prob = patch_to_volume(mask_prob, cand.center_kji, s, volume.spacing, volume.shape)
    region = prob > 0.5
    if region.sum() < 2:
        return None
    hu = ndimage.gaussian_filter(volume.array[box].astype(np.float32), 0.6)
    ring = ndimage.binary_dilation(region, iterations=2) & ~region
    lung_vals = hu[ring & (hu < -600)]
    bg = float(np.median(lung_vals)) if lung_vals.size > 10 else LUNG_HU
    inside = hu[region]
    nod = (
        float(np.median(inside[inside > bg + 150]))
        if (inside > bg + 150).any()
        else float(inside.max())
    )
    thr = float(np.clip((bg + nod) / 2.0, -760.0, -250.0))
    grown = ndimage.binary_dilation(region, iterations=1) & (hu > thr)
    lab, n = ndimage.label(grown)
    if n == 0:
        return None
    overlap = np.bincount(lab[region], minlength=n + 1)
    overlap[0] = 0
    keep = lab == int(np.argmax(overlap))
    return box, keep


def detect(
    volume: Volume,
    cands: list[Candidate],
    run: RunFn,
    min_probability: float = 0.05,
    large_floor: float | None = None,
) -> list[Detection]:
    """Score, segment and merge candidates; detections sorted by probability.

    ``large_floor`` (if given) is a lower probability floor for large candidates, used on
    thick-slice series that lie outside the network's training distribution (<= 2.5 mm).
    """
    probs, mask_probs = score_candidates(volume, cands, run)
    found: list[Detection] = []
    for n in np.argsort(-probs):
        p = float(probs[n])
        floor = min_probability
        if large_floor is not None and cands[n].radius_mm >= LARGE_RADIUS_MM:
            floor = min(min_probability, large_floor)
        if p < floor:
            continue
        seg = nodule_mask(volume, cands[n], mask_probs[n])
        if seg is None:
            continue
        box, mask = seg
        centre_local = np.asarray(ndimage.center_of_mass(mask))
        centre = centre_local + np.array([b.start for b in box])
        if any(_inside(d, centre) or _inside_mask_overlap(d, box, mask) for d in found):
            continue
        found.append(
            Detection(p, box, mask, (float(centre[0]), float(centre[1]), float(centre[2])))
        )
    return merge_fragments(found, float(np.prod(volume.spacing)))


def _shared_voxels(
    box_a: tuple[slice, ...], mask_a: npt.NDArray[np.bool_],
    box_b: tuple[slice, ...], mask_b: npt.NDArray[np.bool_],
) -> int:
    """Voxels two box-cropped masks share, in volume coordinates."""
    lo = [max(x.start, y.start) for x, y in zip(box_a, box_b, strict=True)]
    hi = [min(x.stop, y.stop) for x, y in zip(box_a, box_b, strict=True)]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return 0
    pa = mask_a[tuple(slice(low - s.start, h - s.start)
                      for low, h, s in zip(lo, hi, box_a, strict=True))]
    pb = mask_b[tuple(slice(low - s.start, h - s.start)
                      for low, h, s in zip(lo, hi, box_b, strict=True))]
    return int((pa & pb).sum())


def _union(a: Detection, b: Detection) -> Detection:
    lo = [min(x.start, y.start) for x, y in zip(a.box, b.box, strict=True)]
    hi = [max(x.stop, y.stop) for x, y in zip(a.box, b.box, strict=True)]
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    mask = np.zeros(tuple(h - low for low, h in zip(lo, hi, strict=True)), dtype=bool)
    for d in (a, b):
        at = tuple(slice(s.start - o, s.stop - o) for s, o in zip(d.box, lo, strict=True))
        mask[at] |= d.mask
    c = np.asarray(ndimage.center_of_mass(mask)) + np.asarray(lo, dtype=np.float64)
    return Detection(max(a.probability, b.probability), box, mask,
                     (float(c[0]), float(c[1]), float(c[2])))


#: Two masks that share at least this much tissue are one lesion (a 5 mm sphere: more
#: than a vessel crossing a nodule's edge shares with it).
MERGE_OVERLAP_MM3 = 65.0


def merge_fragments(found: list[Detection], voxel_mm3: float) -> list[Detection]:
    """One detection per lesion larger than its network patch.

    A mass bigger than the patch of each candidate on it comes back as several masks
    that overlap only in part - each patch sees a piece - so ``detect``'s rule (a quarter
    of the smaller mask) keeps them apart, and a radiologist would see one tumour listed
    as four nodules (the real CT in ../shared/realdata did). Masks that share at least
    ``MERGE_OVERLAP_MM3`` are joined into one; small neighbouring nodules, which share
    nothing, and a vessel touching a nodule's edge stay separate.
    """
    min_voxels = MERGE_OVERLAP_MM3 / voxel_mm3
    out = list(found)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if _shared_voxels(a.box, a.mask, b.box, b.mask) >= min_voxels:
                    out[i] = _union(out[i], out[j])
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(out, key=lambda d: -d.probability)


def _inside(d: Detection, centre: npt.NDArray[np.float64]) -> bool:
    idx = np.round(centre).astype(int) - np.array([b.start for b in d.box])
    if np.any(idx < 0) or np.any(idx >= d.mask.shape):
        return False
    return bool(d.mask[tuple(idx)])


def _inside_mask_overlap(d: Detection, box: tuple[slice, ...], mask: npt.NDArray[np.bool_]) -> bool:
    """Whether two cropped masks share at least a quarter of the smaller one."""
    inter = _shared_voxels(d.box, d.mask, box, mask)
    return inter >= 0.25 * min(int(d.mask.sum()), int(mask.sum()))
