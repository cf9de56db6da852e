"""NODE21 loader: 2-D ``.mha`` chest radiographs plus a csv of boxes to :class:`DRCase`.

The csv has one row per box (``img_name, x, y, width, height, label``); images without a
nodule appear once with ``label`` 0 and carry no box.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy.typing as npt
import SimpleITK as sitk

from countyread.errors import InvalidInputError
from training.loaders.csvrows import csv_rows
from training.loaders.types import BoxLabel, DRCase

logger = logging.getLogger(__name__)

_COLUMNS = ("img_name", "x", "y", "width", "height", "label")


def read_mha(path: Path) -> tuple[npt.NDArray[Any], tuple[float, float]]:
    """Read a 2-D image as ``[row, column]`` with (row, column) spacing in mm."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"missing image file: {path}")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InvalidInputError(f"unreadable image {path.name}: {exc}") from exc
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim == 3 and arr.shape[0] == 1:  # some exports store a single-slice 3-D image
        arr = arr[0]
    if arr.ndim != 2:
        raise InvalidInputError(f"{path.name} has shape {arr.shape}, expected a 2-D image")
    sx, sy = img.GetSpacing()[:2]  # ITK order is (x, y) = (column, row)
    return arr, (float(sy), float(sx))


def read_boxes(csv_path: Path) -> dict[str, list[BoxLabel]]:
    """Boxes per image name; an image with only label-0 rows maps to an empty list."""
    csv_path = Path(csv_path)
    out: dict[str, list[BoxLabel]] = {}
    for n, row in csv_rows(csv_path, _COLUMNS, "boxes"):
        try:
            label = int(float(row["label"]))
            x, y = float(row["x"]), float(row["y"])
            w, h = float(row["width"]), float(row["height"])
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{csv_path.name} line {n}: bad number") from exc
        boxes = out.setdefault(row["img_name"], [])
        if label == 0:
            continue
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise InvalidInputError(f"{csv_path.name} line {n}: bad box")
        boxes.append(BoxLabel(x, y, w, h, label))
    return out


def load_node21(image_dir: Path, boxes_csv: Path) -> Iterator[DRCase]:
    """Yield one DRCase per image named in the csv, sorted by name."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InvalidInputError(f"missing NODE21 image folder: {image_dir}")
    boxes = read_boxes(boxes_csv)
    unknown = sorted(n for n in boxes if not (image_dir / n).is_file())
    if unknown:
        raise InvalidInputError(f"{len(unknown)} csv images not in {image_dir}: {unknown[:3]}")
    logger.info("node21 loading", extra={"images": len(boxes)})
    for name in sorted(boxes):
        image, spacing = read_mha(image_dir / name)
        for b in boxes[name]:
            if b.x + b.width > image.shape[1] or b.y + b.height > image.shape[0]:
                raise InvalidInputError(f"box outside image {name}")
        yield DRCase(Path(name).stem, image, spacing, tuple(boxes[name]))
