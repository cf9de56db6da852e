"""Phantom NIfTI output (RAS affine from LPS) and the ``countyread phantom`` command."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from countyread.cli import main as countyread_main
from training.cli import phantom_main
from training.phantoms import ChestCTConfig, NoduleSpec, make_chest_ct
from training.phantoms.nifti import ras_affine, write_nifti


def test_nifti_affine_is_ras_and_truth_points_land_on_their_nodule(tmp_path: Path) -> None:
    specs = (NoduleSpec(12.0, "solid"), NoduleSpec(9.0, "calcified"))
    ph = make_chest_ct(41, ChestCTConfig.small(coverage_mm=90.0, nodule_specs=specs))
    write_nifti(ph, tmp_path)
    img = nib.load(str(tmp_path / "image.nii.gz"))
    inst = nib.load(str(tmp_path / "instances.nii.gz"))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")  # i, j, k run to L, P, S
    assert np.allclose(img.affine, ras_affine(ph.volume.affine))
    data = np.asarray(img.dataobj)
    assert data.dtype == np.int16 and np.array_equal(data, ph.volume.array.transpose(2, 1, 0))
    truth = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    inst_data = np.asarray(inst.dataobj)
    for n in truth["nodules"]:
        x, y, z = n["center_lps"]
        ijk = np.rint(np.linalg.inv(img.affine) @ [-x, -y, z, 1.0])[:3].astype(int)
        assert inst_data[tuple(ijk)] == n["index"] + 1


def test_phantom_command_writes_a_reproducible_set(tmp_path: Path) -> None:
    argv = [
        "ct",
        "--seed",
        "77",
        "--count",
        "2",
        "--size",
        "small",
        "--nodules",
        "2",
        "--format",
        "both",
        "--vendor",
        "UIH",
    ]
    assert phantom_main([*argv, "--out", str(tmp_path / "a")]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert [c["seed"] for c in manifest["cases"]] == [77, 78]
    assert all(c["nodules"] == 2 for c in manifest["cases"])
    case = tmp_path / "a" / "ct-000077"
    files = sorted((case / "dicom").glob("*.dcm"))
    assert len(files) > 50
    ds = pydicom.dcmread(files[0])
    assert ds.Manufacturer == "UIH" and ds.SpecificCharacterSet == "GB18030"
    assert (case / "nifti" / "labels.nii.gz").is_file()
    assert (case / "dicom" / "truth.json").is_file() and (case / "nifti" / "truth.json").is_file()
    assert (
        phantom_main(
            [
                *argv[:3],
                "--count",
                "1",
                "--size",
                "small",
                "--nodules",
                "2",
                "--format",
                "dicom",
                "--vendor",
                "UIH",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    again = sorted((tmp_path / "b" / "ct-000077" / "dicom").glob("*.dcm"))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in files]


def test_phantom_help_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        countyread_main(["phantom", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--nodules" in out and "nodule-free" in out and "--phase" in out
    with pytest.raises(SystemExit) as bad:
        phantom_main(["ct", "--count", "0", "--out", "x"])
    assert bad.value.code == 2
    with pytest.raises(SystemExit):
        phantom_main(["mri", "--out", "x"])
