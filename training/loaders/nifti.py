"""NIfTI image/label pairs to :class:`CTCase`, nodules from the label's connected components.

NIfTI affines map voxel (i, j, k) to RAS+ mm; LPS is RAS with x and y negated, so the LPS
affine is ``diag(-1, -1, 1, 1) @ affine``. The NIfTI voxel axes (i, j, k) become our
(column, row, slice), so the array is transposed to ``[slice, row, column]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from countyread.domain import Volume
from countyread.errors import InvalidInputError
from training.loaders.types import CTCase, NoduleLabel

logger = logging.getLogger(__name__)

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_nifti(path: Path) -> Volume:
    """Read a 3-D NIfTI file as a Volume in LPS (array ``[slice, row, column]``)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"missing NIfTI file: {path}")
    try:
        img: Any = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several unrelated types for corrupt files
        raise InvalidInputError(f"unreadable NIfTI {path.name}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInputError(f"{path.name} has shape {data.shape}, expected 3-D")
    affine = _RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64)
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), affine)


def nodules_from_label(label: Volume, *, source: str = "nifti") -> tuple[NoduleLabel, ...]:
    """One nodule per 26-connected component of ``label > 0``.

    The centre is the voxel centroid mapped through the affine; the diameter is that of the
    sphere with the component's volume, which is how LUNA16-style sizes are compared.
    """
    mask = np.asarray(label.array) > 0
    comps, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return ()
    voxel_mm3 = float(abs(np.linalg.det(label.affine[:3, :3])))
    idx = np.arange(1, n + 1)
    counts = ndimage.sum_labels(mask, comps, idx)
    centroids = np.asarray(ndimage.center_of_mass(mask, comps, idx), dtype=np.float64)
    centers = label.index_to_lps(centroids.reshape(-1, 3)).reshape(-1, 3)
    out = []
    for c, count in zip(centers, counts, strict=True):
        diameter = float((6.0 * count * voxel_mm3 / np.pi) ** (1.0 / 3.0))
        out.append(NoduleLabel((float(c[0]), float(c[1]), float(c[2])), diameter, source))
    return tuple(out)


def load_nifti_pair(
    image_path: Path, label_path: Path, case_id: str | None = None, *, allow_empty: bool = False
) -> CTCase:
    """Read an image and its label; they must share shape and geometry.

    An empty label is an error unless ``allow_empty``: for a nodule data set it usually
    means a wrong or misaligned label file, and a silent negative case would poison training.
    """
    image = read_nifti(image_path)
    label = read_nifti(label_path)
    if image.shape != label.shape:
        raise InvalidInputError(f"label shape {label.shape} differs from image {image.shape}")
    if not np.allclose(image.affine, label.affine, atol=1e-3):
        raise InvalidInputError("label geometry differs from the image geometry")
    nodules = nodules_from_label(label)
    if not nodules and not allow_empty:
        raise InvalidInputError(f"label {Path(label_path).name} is empty")
    # Strip only the extension: case ids such as series UIDs contain dots themselves.
    cid = case_id or Path(image_path).name.removesuffix(".gz").removesuffix(".nii")
    logger.info("nifti case loaded", extra={"case": cid, "nodules": len(nodules)})
    return CTCase(cid, image, nodules)


