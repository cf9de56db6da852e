"""Put a frontal chest film into the standard display before the model sees it.

Patient Orientation (0020,0020; PS3.3 C.7.6.1.1.1) names the patient direction of the
rows (first value: toward increasing column) and of the columns (second value: toward
increasing row). A frontal chest film is read, and the model was trained, in the
standard display: rows toward the patient's left, columns toward the feet (``L\\F``;
the patient faces the viewer, PA and AP alike). Films that a console rotated or
mirrored say so here, and are turned back; only the model's input is turned, reported
positions stay in the stored matrix.

Any other first letter (A/P: a lateral projection, or a bad value) leaves the film as
stored and says so; without the attribute the standard display is assumed and said.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

_ROW_AXIS = {"L", "R"}
_COLUMN_AXIS = {"H", "F"}


@dataclass(frozen=True, slots=True)
class Reorientation:
    """``standard = flip(transpose?(source))``; ``shape`` is the standard array's shape.

    ``side_known`` is False when the film's orientation could not be established, so
    the patient's right and left cannot be told from the picture's.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    side_known: bool = True

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        out = arr.T if self.transpose else arr
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def to_source(
        self, rc: npt.NDArray[np.float64], shape: tuple[int, int]
    ) -> npt.NDArray[np.float64]:
        """Standard-array (row, col) points (N x 2) -> source-array points; ``shape`` is
        the standard array's."""
        pts = np.array(rc, dtype=np.float64, copy=True)
        if self.flip_rows:
            pts[:, 0] = shape[0] - 1 - pts[:, 0]
        if self.flip_cols:
            pts[:, 1] = shape[1] - 1 - pts[:, 1]
        return pts[:, ::-1].copy() if self.transpose else pts

    def to_standard(
        self, rc: npt.NDArray[np.float64], shape: tuple[int, int]
    ) -> npt.NDArray[np.float64]:
        """The inverse of :meth:`to_source` (``shape`` is still the standard array's)."""
        pts = np.array(rc, dtype=np.float64, copy=True)
        if self.transpose:
            pts = pts[:, ::-1].copy()
        if self.flip_rows:
            pts[:, 0] = shape[0] - 1 - pts[:, 0]
        if self.flip_cols:
            pts[:, 1] = shape[1] - 1 - pts[:, 1]
        return pts


AS_STORED = Reorientation()


def primary_letters(ds: Dataset) -> tuple[str, ...]:
    """The most significant letter of each Patient Orientation value (an oblique value
    lists its letters by significance); () when absent or unreadable."""
    value = ds.get("PatientOrientation")
    if isinstance(value, str):  # VM 1 as read, or a hand-made "L\\F"
        value = value.split("\\")
    try:
        return tuple(str(v).strip().upper()[:1] for v in value) if value else ()
    except TypeError:
        return ()


def reorientation(ds: Dataset) -> tuple[Reorientation, str | None]:
    """How to turn this film into the standard display, and a note when it is not as
    stored or not known."""
    value = ds.get("PatientOrientation")
    letters = primary_letters(ds)
    if len(letters) != 2 or not all(letters):
        return AS_STORED, (
            "patient orientation not recorded: assumed standard display "
            "(patient's right on the image left, head up)"
        )
    row, col = letters
    transpose = row in _COLUMN_AXIS and col in _ROW_AXIS
    if transpose:
        row, col = col, row
    if not (row in _ROW_AXIS and col in _COLUMN_AXIS):
        shown = "\\".join(str(v) for v in value)
        return Reorientation(side_known=False), (
            f"patient orientation {shown} is not that of a frontal film: read as stored, "
            "patient side not reported"
        )
    turn = Reorientation(transpose=transpose, flip_rows=col == "H", flip_cols=row == "R")
    if turn.identity:
        return turn, None
    shown = "\\".join(str(v) for v in value)
    return turn, f"PatientOrientation {shown}: film turned to the standard display for reading"
