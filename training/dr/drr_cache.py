"""Cache CT-projection DRR phantoms (``training.phantoms.dr``) as network-ready samples.

Those phantoms project a full chest CT (about 20 s each here), so they are made once
and stored as ``<out>/<seed>.npz`` (the 256 x 256 input and the nodule truth in input
pixels), then mixed into fine-tuning and used as a second held-out set.

    nice -n 10 python -m training.dr.drr_cache --seeds 0 60 --out var/training/dr_drr
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inference.dr.detect import INPUT_SIZE, letterbox
from inference.dr.image import PixelGeometry, prepare_values
from training.dr.data import Sample

if TYPE_CHECKING:  # the phantom factory is only needed to make new cache entries
    from training.phantoms.dr import DRNoduleTruth, DRPhantom

# 512 px at 0.8 mm: the network sees 256 px anyway, and this is 20x cheaper than 2500 px.
SIZE_PX, SPACING_MM = 512, 0.8


# Per-nodule columns stored beside the truth (``meta``), in the order of the nodules and
# hidden rows: displayed contrast, local contrast-to-noise ratio (training.phantoms.dr
# ``_local_cnr``), what lies behind it (0 none, 1 rib, 2 heart) and its kind (index in KINDS).
META_COLUMNS = ("contrast", "cnr", "behind", "kind")
BEHIND = ("none", "rib", "heart")
KINDS = ("solid", "part_solid", "ground_glass", "calcified")


def phantom_meta(p: DRPhantom) -> tuple[np.ndarray, np.ndarray]:
    """``META_COLUMNS`` for the shown and for the hidden nodules, as ``sample_from_phantom``
    orders them."""

    def row(n: DRNoduleTruth) -> list[float]:
        return [
            n.contrast,
            n.cnr,
            float(BEHIND.index(n.behind)),
            float(KINDS.index(n.kind)) if n.kind in KINDS else -1.0,
        ]

    width = len(META_COLUMNS)
    shown = np.asarray([row(n) for n in p.nodules if n.visible], np.float64).reshape(-1, width)
    hidden = np.asarray([row(n) for n in p.nodules if not n.visible], np.float64).reshape(-1, width)
    return shown, hidden


def sample_from_phantom(p: DRPhantom) -> Sample:
    """Prepare as the service would a stored file of this phantom (MONOCHROME1 inverted)."""
    values = p.image.astype(np.float32)
    if p.projection.photometric == "MONOCHROME1":
        values = np.float32((1 << p.projection.bits_stored) - 1) - values
    ps = p.projection.pixel_spacing_mm
    radiograph = prepare_values(values, 1, values.shape, PixelGeometry((ps, ps), "PixelSpacing"))
    x, box = letterbox(radiograph.pixels, INPUT_SIZE)
    shown: list[tuple[float, float, float, float]] = []
    hidden: list[tuple[float, float, float, float]] = []
    for n in p.nodules:
        r0, c0, r1, c1 = n.bbox_px
        centre = ((r0 + r1) / 2 - radiograph.crop[0], (c0 + c1) / 2 - radiograph.crop[1])
        r, c = box.to_input(centre)[0]
        d_px = ((r1 - r0) + (c1 - c0)) / 2  # projected (magnified) size, as the box shows
        row = (float(r), float(c), d_px * box.scale, float(n.diameter_mm))
        (shown if n.visible else hidden).append(row)
    return Sample(x, tuple(shown), tuple(hidden))


def save(sample: Sample, path: Path, meta: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    image = sample.image.astype(np.float16)
    nodules = np.asarray(sample.nodules, dtype=np.float64).reshape(-1, 4)
    hidden = np.asarray(sample.hidden, dtype=np.float64).reshape(-1, 4)
    if meta is None:
        np.savez_compressed(tmp, image=image, nodules=nodules, hidden=hidden)
    else:
        np.savez_compressed(
            tmp,
            image=image,
            nodules=nodules,
            hidden=hidden,
            nodules_meta=meta[0],
            hidden_meta=meta[1],
        )
    tmp.replace(path)


def load_meta(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored ``META_COLUMNS`` of the shown and hidden nodules (None for old entries)."""
    with np.load(path) as z:
        if "nodules_meta" not in z:
            return None
        return np.asarray(z["nodules_meta"]), np.asarray(z["hidden_meta"])


def load(path: Path) -> Sample:
    with np.load(path) as z:
        nodules = tuple(tuple(float(v) for v in row) for row in z["nodules"])
        hidden = tuple(tuple(float(v) for v in row) for row in z["hidden"])
        return Sample(z["image"].astype(np.float32), nodules, hidden)  # type: ignore[arg-type]


def load_dir(directory: Path, seeds: Sequence[int]) -> list[Sample]:
    return [load(directory / f"{s}.npz") for s in seeds if (directory / f"{s}.npz").is_file()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs=2, required=True, metavar=("START", "STOP"))
    parser.add_argument("--out", type=Path, default=Path("var/training/dr_drr"))
    parser.add_argument(
        "--ct-matrix",
        type=int,
        default=256,
        help="matrix of the projected CT phantom; a smaller one keeps its field of view "
        "(coarser voxels, same projection geometry) and is about twice as fast at 176",
    )
    args = parser.parse_args(argv)
    from training.phantoms.dr import ChestDRConfig, make_chest_dr

    base = ChestDRConfig()
    config = ChestDRConfig(
        size_px=SIZE_PX,
        pixel_spacing_mm=SPACING_MM,
        ct_matrix=args.ct_matrix,
        ct_pixel_mm=round(base.ct_pixel_mm * base.ct_matrix / args.ct_matrix, 3),
    )
    for seed in range(*args.seeds):
        path = args.out / f"{seed}.npz"
        if path.is_file() and load_meta(path) is not None:
            continue
        phantom = make_chest_dr(seed, config)
        save(sample_from_phantom(phantom), path, phantom_meta(phantom))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
