"""The common typed form every loader yields: CT cases with nodules, DR cases with boxes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume


@dataclass(frozen=True, slots=True)
class NoduleLabel:
    """A nodule as a sphere in patient LPS mm (PS3.3 C.7.6.2.1.1 patient coordinates)."""

    center_lps: tuple[float, float, float]
    diameter_mm: float
    source: str


@dataclass(frozen=True, slots=True)
class CTCase:
    case_id: str
    volume: Volume
    nodules: tuple[NoduleLabel, ...]


@dataclass(frozen=True, slots=True)
class BoxLabel:
    """An axis-aligned box in pixel units: (x, y) is the top-left corner, x along columns."""

    x: float
    y: float
    width: float
    height: float
    label: int


@dataclass(frozen=True, slots=True)
class DRCase:
    """A 2-D radiograph indexed ``[row, column]``; spacing is (row, column) mm when known."""

    case_id: str
    image: npt.NDArray[Any]
    spacing_mm: tuple[float, float] | None
    boxes: tuple[BoxLabel, ...]

    def __post_init__(self) -> None:
        if self.image.ndim != 2:
            raise ValueError(f"image must be 2-D, got shape {self.image.shape}")


def affine_from_itk(
    origin: tuple[float, ...], spacing: tuple[float, ...], direction: tuple[float, ...]
) -> npt.NDArray[np.float64]:
    """4x4 affine from (column, row, slice) to LPS from ITK geometry.

    ITK's physical space is LPS and its direction matrix (row-major) holds the axis
    directions as columns, so physical = origin + D @ diag(spacing) @ index — the same map
    Volume documents, with ITK index (x, y, z) = (column, row, slice).
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = d * np.asarray(spacing, dtype=np.float64)[None, :]
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return aff
