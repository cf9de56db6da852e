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
from typing import TYPE_CHECKING, Any

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


def display_of(p: DRPhantom) -> np.ndarray:
    """The phantom's display values as the service's grayscale stage gives them (white =
    dense: MONOCHROME1 inverted), before ``prepare_values``."""
    values = p.image.astype(np.float32)
    if p.projection.photometric == "MONOCHROME1":
        values = np.float32((1 << p.projection.bits_stored) - 1) - values
    return values


def phantom_boxes(p: DRPhantom) -> np.ndarray:
    """One row per nodule: row0, col0, row1, col1 (stored pixels), diameter (mm), visible."""
    rows = [[*n.bbox_px, float(n.diameter_mm), float(n.visible)] for n in p.nodules]
    return np.asarray(rows, np.float64).reshape(-1, 6)


def sample_from_display(
    values: np.ndarray, spacing_mm: float, boxes: np.ndarray, knee: float | None = None
) -> Sample:
    """Prepare display values as the service would (``prepare_values``, ``letterbox``) and
    carry the nodule boxes (``phantom_boxes``) into input pixels."""
    geo = PixelGeometry((spacing_mm, spacing_mm), "PixelSpacing")
    radiograph = prepare_values(values.astype(np.float32), 1, values.shape, geo, knee=knee)
    x, box = letterbox(radiograph.pixels, INPUT_SIZE)
    shown: list[tuple[float, float, float, float]] = []
    hidden: list[tuple[float, float, float, float]] = []
    for r0, c0, r1, c1, mm, visible in boxes:
        centre = ((r0 + r1) / 2 - radiograph.crop[0], (c0 + c1) / 2 - radiograph.crop[1])
        r, c = box.to_input(centre)[0]
        d_px = ((r1 - r0) + (c1 - c0)) / 2  # projected (magnified) size, as the box shows
        row = (float(r), float(c), d_px * box.scale, float(mm))
        (shown if visible else hidden).append(row)
    return Sample(x, tuple(shown), tuple(hidden))


def sample_from_phantom(p: DRPhantom) -> Sample:
    """Prepare as the service would a stored file of this phantom (MONOCHROME1 inverted)."""
    return sample_from_display(display_of(p), p.projection.pixel_spacing_mm, phantom_boxes(p))


def save(
    sample: Sample,
    path: Path,
    meta: tuple[np.ndarray, np.ndarray] | None = None,
    raw: tuple[np.ndarray, float, np.ndarray] | None = None,
) -> None:
    """Store a sample; ``raw`` (display values, pixel size in mm, ``phantom_boxes``) keeps
    what ``reprepare`` needs to redo the preparation without projecting the CT again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    arrays: dict[str, Any] = {  # Any: numpy types savez keywords as one with allow_pickle
        "image": sample.image.astype(np.float16),
        "nodules": np.asarray(sample.nodules, dtype=np.float64).reshape(-1, 4),
        "hidden": np.asarray(sample.hidden, dtype=np.float64).reshape(-1, 4),
    }
    if meta is not None:
        arrays["nodules_meta"], arrays["hidden_meta"] = meta
    if raw is not None:
        # display values are whole numbers below 2**14 (12/14-bit files): uint16 is exact
        arrays["raw_values"] = np.round(raw[0]).astype(np.uint16)
        arrays["raw_spacing_mm"] = np.asarray(raw[1], np.float64)
        arrays["raw_boxes"] = raw[2]
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def has_raw(path: Path) -> bool:
    with np.load(path) as z:
        return "raw_values" in z


def reprepare(path: Path, knee: float | None = None) -> Sample:
    """The entry's sample prepared again by ``prepare_values`` (needs ``raw``)."""
    with np.load(path) as z:
        values = z["raw_values"].astype(np.float32)
        return sample_from_display(values, float(z["raw_spacing_mm"]), z["raw_boxes"], knee)


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
        if path.is_file() and load_meta(path) is not None and has_raw(path):
            continue
        phantom = make_chest_dr(seed, config)
        raw = (display_of(phantom), phantom.projection.pixel_spacing_mm, phantom_boxes(phantom))
        save(sample_from_phantom(phantom), path, phantom_meta(phantom), raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
