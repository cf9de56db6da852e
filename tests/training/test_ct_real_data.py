"""Real-data wiring of the CT nodule training set: LUNA16 and NIfTI files written here from
a small phantom become patches whose positives sit on the labelled nodules."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from countyread.errors import InvalidInputError
from tests.training.ct_small import small_chest_ct
from training.ct_nodule.config import DataConfig, NoduleTrainingConfig, RealSource
from training.ct_nodule.dataset import sphere_mask
from training.ct_nodule.real_data import build_real_cases, source_cases
from training.ct_nodule.train import load_cases
from training.phantoms import CTPhantom, NoduleSpec

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.77"
SPECS = (NoduleSpec(14.0, "solid", "round", "lung"), NoduleSpec(10.0, "solid", "round", "lung"))
DATA = DataConfig(train_seeds=(1, 0), held_out_seeds=(9, 9), negatives_per_case=12, jitter_copies=1)


@pytest.fixture(scope="module")
def phantom() -> CTPhantom:
    return small_chest_ct(SPECS)


def _write_luna16(ph: CTPhantom, root: Path) -> RealSource:
    vol = ph.volume
    img = sitk.GetImageFromArray(vol.array)  # [slice, row, column] = ITK [z, y, x]
    aff = np.asarray(vol.affine)
    sp = np.linalg.norm(aff[:3, :3], axis=0)
    img.SetSpacing(tuple(float(s) for s in sp))
    img.SetOrigin(tuple(float(o) for o in aff[:3, 3]))
    img.SetDirection(tuple(float(v) for v in (aff[:3, :3] / sp[None, :]).ravel()))
    (root / "subset0").mkdir(parents=True)
    sitk.WriteImage(img, str(root / "subset0" / f"{UID}.mhd"))
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    rows += [
        f"{UID},{t.center_lps[0]},{t.center_lps[1]},{t.center_lps[2]},{t.mean_diameter_mm}"
        for t in ph.nodules
    ]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return RealSource(kind="luna16", root=root, labels=root / "annotations.csv")


def _write_nifti(ph: CTPhantom, root: Path) -> RealSource:
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ph.volume.affine)  # LPS -> RAS
    for sub, arr in (("images", ph.volume.array), ("labels", ph.instance_mask.astype(np.int16))):
        (root / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), ras), str(root / sub / "case1.nii.gz"))
    return RealSource(kind="nifti", root=root / "images", labels=root / "labels")


def _check_positives(ph: CTPhantom, path: Path) -> None:
    with np.load(path) as d:
        y, masks = d["labels"], d["masks"]
    assert y.sum() >= len(ph.nodules)  # at least the truth-centred copies
    assert (y == 0).sum() > 0
    assert masks[y == 0].sum() == 0
    pos = masks[y == 1]
    assert (pos.reshape(len(pos), -1).sum(axis=1) > 0).all()
    # the truth-centred copies (jitter 1.5 mm < radius) hold the sphere's middle
    centred = pos[:, 7:9, 7:9, 7:9].reshape(len(pos), -1).all(axis=1)
    assert centred.sum() >= len(ph.nodules)


def test_luna16_source_becomes_labelled_patches(phantom: CTPhantom, tmp_path: Path) -> None:
    src = _write_luna16(phantom, tmp_path / "luna")
    (case,) = list(source_cases(src))
    assert case.case_id == UID and len(case.nodules) == 2
    (path,) = build_real_cases((src,), DATA, tmp_path / "cases")
    _check_positives(phantom, path)
    again = build_real_cases((src,), DATA, tmp_path / "cases")  # cached: same file
    assert again == [path]


def test_nifti_source_and_training_set(phantom: CTPhantom, tmp_path: Path) -> None:
    src = _write_nifti(phantom, tmp_path / "nii")
    cfg = NoduleTrainingConfig(
        name="t", version="0.0.1", work_dir=tmp_path / "work", data=DATA, real=(src,)
    )
    x, m, y = load_cases(cfg)  # no phantom seeds (empty range): real cases only
    assert len(x) == len(m) == len(y) and y.sum() >= 2 and (y == 0).sum() > 0


def test_nifti_source_without_label_is_refused(phantom: CTPhantom, tmp_path: Path) -> None:
    src = _write_nifti(phantom, tmp_path / "nii")
    (src.labels / "case1.nii.gz").unlink()
    with pytest.raises(InvalidInputError, match="without a label map"):
        list(source_cases(src))


def test_sphere_mask_scales_with_diameter() -> None:
    small = sphere_mask((10.0, 10.0, 10.0), 4.0, (1.0, 1.0, 1.0))(np.array([10.0, 10, 10]), 1.0)
    big = sphere_mask((10.0, 10.0, 10.0), 8.0, (1.0, 1.0, 1.0))(np.array([10.0, 10, 10]), 1.0)
    # voxel-centre counts of spheres of radius 2 and 4 mm: about (4/3) pi r^3
    assert 20 <= small.sum() <= 45 and 230 <= big.sum() <= 300
