"""LUNA16 loader: ``.mhd``/``.raw`` series plus ``annotations.csv`` to :class:`CTCase`.

LUNA16 world coordinates (coordX/Y/Z) are ITK physical coordinates, i.e. patient LPS mm, so
they go into :class:`NoduleLabel` unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from countyread.domain import Volume
from countyread.errors import InvalidInputError
from training.loaders.csvrows import csv_rows
from training.loaders.types import CTCase, NoduleLabel, affine_from_itk

logger = logging.getLogger(__name__)

_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


def read_mhd(path: Path) -> Volume:
    """Read one MetaImage series as a Volume in LPS (array ``[slice, row, column]``)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"missing MetaImage file: {path}")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InvalidInputError(f"unreadable MetaImage {path.name}: {exc}") from exc
    if img.GetDimension() != 3:
        raise InvalidInputError(f"{path.name} is {img.GetDimension()}-D, expected 3-D")
    arr = sitk.GetArrayFromImage(img)  # numpy order is [z, y, x] = [slice, row, column]
    aff = affine_from_itk(img.GetOrigin(), img.GetSpacing(), img.GetDirection())
    return Volume(arr, aff, series_uid=path.stem)


def read_annotations(csv_path: Path) -> dict[str, list[NoduleLabel]]:
    """Parse ``annotations.csv`` into nodules per series uid."""
    csv_path = Path(csv_path)
    out: dict[str, list[NoduleLabel]] = {}
    for n, row in csv_rows(csv_path, _COLUMNS, "annotations"):
        try:
            center = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            diameter = float(row["diameter_mm"])
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{csv_path.name} line {n}: bad number") from exc
        if not np.all(np.isfinite(center)) or not diameter > 0:
            raise InvalidInputError(f"{csv_path.name} line {n}: bad centre or diameter")
        out.setdefault(row["seriesuid"], []).append(NoduleLabel(center, diameter, "luna16"))
    return out


def read_candidates(csv_path: Path) -> dict[str, list[tuple[tuple[float, float, float], int]]]:
    """Parse LUNA16 ``candidates.csv`` (seriesuid, coordX/Y/Z, class): LPS points per series,
    class 1 a nodule and 0 not one (for export-labels: a finding the radiologist rejected)."""
    csv_path = Path(csv_path)
    out: dict[str, list[tuple[tuple[float, float, float], int]]] = {}
    for n, row in csv_rows(csv_path, ("seriesuid", "coordX", "coordY", "coordZ", "class"),
                           "candidates"):
        try:
            point = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            cls = int(row["class"])
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{csv_path.name} line {n}: bad number") from exc
        if not np.all(np.isfinite(point)) or cls not in (0, 1):
            raise InvalidInputError(f"{csv_path.name} line {n}: bad point or class")
        out.setdefault(row["seriesuid"], []).append((point, cls))
    return out


def load_luna16(root: Path, annotations_csv: Path) -> Iterator[CTCase]:
    """Yield one CTCase per ``.mhd`` under ``root`` (subset folders included), sorted by uid.

    Every csv row must name a series found under ``root``: a row for an unknown series means
    the wrong folder or csv was given, and silently dropping nodules would bias training.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"missing LUNA16 folder: {root}")
    series = {p.stem: p for p in sorted(root.rglob("*.mhd"))}
    labels = read_annotations(annotations_csv)
    unknown = sorted(set(labels) - set(series))
    if unknown:
        raise InvalidInputError(
            f"{len(unknown)} annotated series not found under {root}: {unknown[:3]}"
        )
    logger.info(
        "luna16 loading",
        extra={"series": len(series), "nodules": sum(len(v) for v in labels.values())},
    )
    for uid, path in series.items():
        yield CTCase(uid, read_mhd(path), tuple(labels.get(uid, ())))
