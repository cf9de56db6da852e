"""Key images of the CT nodule pipeline: axial lung-window slice with contour and caliper,
a zoomed patch, and one coronal lung MIP overview with every finding marked."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume
from inference.ct_nodule.detector import Detection
from inference.ct_nodule.lungs import LungMask
from inference.ct_nodule.measure import NoduleMeasurements
from inference.render import (
    LUNG_WINDOW,
    RGB,
    add_caption,
    draw_contour,
    draw_line,
    draw_marks,
    resample_for_display,
    window,
)

CONTOUR = (255, 64, 64)
CALIPER = (64, 255, 64)
ZOOM_MM = 40.0


def _full_mask_slice(volume: Volume, det: Detection, k_local: int) -> npt.NDArray[np.bool_]:
    full = np.zeros(volume.shape[1:], dtype=bool)
    if 0 <= k_local < det.mask.shape[0]:  # a spicule's tip may lie beyond the mask's slices
        full[det.box[1], det.box[2]] = det.mask[k_local]
    return full


def _key_slice(volume: Volume, det: Detection, m: NoduleMeasurements) -> tuple[int, int]:
    """The volume slice of the long axis and its index relative to the mask's box."""
    k = min(max(det.box[0].start + m.axes.slice_index, 0), volume.shape[0] - 1)
    return k, k - det.box[0].start


def axial_image(volume: Volume, det: Detection, m: NoduleMeasurements, caption: list[str]) -> RGB:
    k, k_local = _key_slice(volume, det, m)
    img = window(volume.array[k], *LUNG_WINDOW)
    img = draw_contour(img, _full_mask_slice(volume, det, k_local), CONTOUR)
    (r0, c0), (r1, c1) = m.axes.endpoints
    off = (det.box[1].start, det.box[2].start)
    img = draw_line(img, (r0 + off[0], c0 + off[1]), (r1 + off[0], c1 + off[1]), CALIPER)
    _, dy, dx = volume.spacing
    img = resample_for_display(img, dy, dx)
    return add_caption(img, caption)


def zoom_image(volume: Volume, det: Detection, m: NoduleMeasurements, label: str) -> RGB:
    k, k_local = _key_slice(volume, det, m)
    _, dy, dx = volume.spacing
    cr = (det.box[1].start + det.box[1].stop) // 2
    cc = (det.box[2].start + det.box[2].stop) // 2
    hr = max(int(ZOOM_MM / 2 / dy), (det.box[1].stop - det.box[1].start))
    hc = max(int(ZOOM_MM / 2 / dx), (det.box[2].stop - det.box[2].start))
    r0, r1 = max(0, cr - hr), min(volume.shape[1], cr + hr)
    c0, c1 = max(0, cc - hc), min(volume.shape[2], cc + hc)
    img = window(volume.array[k, r0:r1, c0:c1], *LUNG_WINDOW)
    mask = _full_mask_slice(volume, det, k_local)[r0:r1, c0:c1]
    scale = 320.0 / max(1, img.shape[0])
    big = resample_for_display(img, dy, dx, scale)
    mask_big = resample_for_display(
        np.repeat(mask[..., None].astype(np.uint8) * 255, 3, 2), dy, dx, scale
    )
    big = draw_contour(big, mask_big[..., 0] > 127, CONTOUR)
    return add_caption(big, [label])


def lung_mip(volume: Volume, lung: LungMask, chunk: int = 32) -> npt.NDArray[np.int16]:
    """Coronal MIP of the lungs only (outside set to air): vessels and nodules stand out
    instead of ribs and table. Built slab by slab so no full-size copy is made."""
    sk, sj, si = lung.stride
    rows = np.minimum(np.arange(volume.shape[1]) // sj, lung.mask.shape[1] - 1)
    cols = np.minimum(np.arange(volume.shape[2]) // si, lung.mask.shape[2] - 1)
    out = np.full((volume.shape[0], volume.shape[2]), -1024, dtype=np.int16)
    for k0 in range(0, volume.shape[0], chunk):
        k1 = min(volume.shape[0], k0 + chunk)
        ks = np.minimum(np.arange(k0, k1) // sk, lung.mask.shape[0] - 1)
        inside = lung.mask[np.ix_(ks, rows, cols)]
        slab = np.where(inside, volume.array[k0:k1], np.int16(-1024))
        out[k0:k1] = slab.max(axis=1)
    return out


def coronal_overview(
    volume: Volume, lung: LungMask, dets: list[Detection], labels: list[str]
) -> RGB:
    """Coronal lung MIP (lung window) with a circle per finding; superior at the top."""
    proj = lung_mip(volume, lung)[::-1]  # (slice, column), flipped so the head is up
    img = window(proj, *LUNG_WINDOW)
    dz, _, dx = volume.spacing
    img = resample_for_display(img, dz, dx, 1.0)
    sz = img.shape[0] / volume.shape[0]
    sx = img.shape[1] / volume.shape[2]
    pts, radii = [], []
    for d in dets:
        k, _, i = d.center_kji
        pts.append(((volume.shape[0] - 1 - k) * sz, i * sx))
        radii.append(max(d.mask.shape[2] * sx / 2.0, 8.0))
    img = draw_marks(img, pts, radii, labels)
    return add_caption(img, ["Coronal lung MIP, lung window: AI findings"])
