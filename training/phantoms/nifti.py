"""Phantoms as NIfTI-1 image + label files with truth.json, for training.

NIfTI world coordinates are RAS while DICOM (and :class:`countyread.domain.Volume`) use
LPS, so the affine is flipped in x and y; the array is stored (column, row, slice) so
that NIfTI's (i, j, k) are DICOM's column, row and slice indices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from countyread.errors import InvalidInputError
from training.phantoms.truth_io import write_truth

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_affine(lps_affine: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """NIfTI (RAS) affine of a Volume affine (LPS, index order column, row, slice)."""
    return np.asarray(LPS_TO_RAS @ lps_affine, dtype=np.float64)


def _save(array: npt.NDArray[Any], affine: npt.NDArray[np.float64], path: Path) -> Path:
    img = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine)
    img.set_sform(affine, code=1)  # scanner-anatomical
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def write_nifti(phantom: Any, directory: Path) -> list[Path]:
    """Write ``image.nii.gz`` and its label volumes beside ``truth.json``; returns the paths.

    CT: ``labels`` (anatomy) and ``instances`` (nodule i is i + 1). CTA: ``labels``
    (tissue) and ``vessels`` (VESSEL_IDS). DR: the radiograph as a 2-D image with its
    pixel spacing (rows run head to foot, columns patient right to left).
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if hasattr(phantom, "volume"):
        aff = ras_affine(phantom.volume.affine)
        paths.append(_save(phantom.volume.array, aff, directory / "image.nii.gz"))
        paths.append(_save(phantom.labels, aff, directory / "labels.nii.gz"))
        if hasattr(phantom, "instance_mask"):
            paths.append(_save(phantom.instance_mask, aff, directory / "instances.nii.gz"))
        if hasattr(phantom, "vessel_labels"):
            paths.append(_save(phantom.vessel_labels, aff, directory / "vessels.nii.gz"))
    elif hasattr(phantom, "image"):
        ps = float(phantom.projection.pixel_spacing_mm)
        aff = np.diag([ps, ps, 1.0, 1.0])
        img = nib.Nifti1Image(np.ascontiguousarray(phantom.image.T[:, :, None]), aff)
        img.header.set_xyzt_units("mm")
        path = directory / "image.nii.gz"
        nib.save(img, str(path))
        paths.append(path)
    else:
        raise InvalidInputError(f"cannot write {type(phantom).__name__} as NIfTI")
    paths.append(write_truth(phantom, directory))
    return paths
