"""Ground truth of any phantom as JSON (LPS mm), written beside its images."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

TRUTH_FILE = "truth.json"
TRUTH_VERSION = 1


def _plain(value: Any) -> Any:
    """JSON-able copy: dataclasses to dicts, numpy to lists / Python scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return np.round(value, 3).tolist() if value.dtype.kind == "f" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def truth_dict(phantom: Any) -> dict[str, Any]:
    """Everything a trainer or evaluator needs, without the pixel arrays."""
    out: dict[str, Any] = {
        "truth_version": TRUTH_VERSION,
        "kind": type(phantom).__name__,
        "seed": phantom.seed,
        "coordinate_system": "LPS mm; index order [slice, row, column]",
    }
    volume = getattr(phantom, "volume", None)
    if volume is not None:
        out["shape"] = list(volume.shape)
        out["affine_lps"] = _plain(volume.affine)
        out["spacing_mm"] = list(volume.spacing)
        out["series_uid"] = volume.series_uid
        out["frame_of_reference_uid"] = volume.frame_of_reference_uid
    for name in (
        "acquisition",
        "label_names",
        "vessel_label_names",
        "nodules",
        "vessels",
        "stenoses",
        "occlusions",
        "plaques",
        "projection",
        "phase",
    ):
        if hasattr(phantom, name):
            out[name] = _plain(getattr(phantom, name))
    return out


def write_truth(phantom: Any, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TRUTH_FILE
    path.write_text(
        json.dumps(truth_dict(phantom), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    return path
