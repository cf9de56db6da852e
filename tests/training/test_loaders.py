"""Real-data loaders on small files written here: geometry round trips, labels, bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from countyread.context import AppContext
from countyread.db import analyses, findings, instances, reports, series, studies
from countyread.errors import InvalidInputError
from countyread.settings import load_settings
from training.loaders.luna16 import load_luna16, read_candidates, read_mhd
from training.loaders.nifti import load_nifti_pair
from training.loaders.node21 import load_node21
from training.loaders.review import load_review

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100"


def _write_mhd(folder: Path) -> tuple[sitk.Image, tuple[int, int, int]]:
    """20 x 24 x 16 (x, y, z) volume, rotated in-plane, with one marked voxel."""
    arr = np.zeros((16, 24, 20), dtype=np.int16)  # [z, y, x]
    xyz = (5, 7, 3)
    arr[xyz[2], xyz[1], xyz[0]] = 1000
    img = sitk.GetImageFromArray(arr)
    img.SetOrigin((-100.5, 50.25, -300.0))
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    folder.mkdir(parents=True)
    sitk.WriteImage(img, str(folder / f"{UID}.mhd"))
    return img, xyz


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_luna16_voxel_maps_to_itk_point_and_nodule(tmp_path: Path) -> None:
    img, xyz = _write_mhd(tmp_path / "subset0")
    point = img.TransformIndexToPhysicalPoint(xyz)  # ITK's own LPS answer
    # By hand: origin + direction @ (spacing * index) with direction columns (0,1,0),(-1,0,0)
    assert np.allclose(point, (-100.5 - 0.8 * 7, 50.25 + 0.7 * 5, -300.0 + 2.5 * 3))
    csv = _write_csv(
        tmp_path / "annotations.csv",
        "seriesuid,coordX,coordY,coordZ,diameter_mm",
        [f"{UID},{point[0]},{point[1]},{point[2]},6.5"],
    )
    (case,) = list(load_luna16(tmp_path, csv))
    assert case.case_id == UID and case.volume.shape == (16, 24, 20)
    assert case.volume.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert np.allclose(case.volume.index_to_lps((xyz[2], xyz[1], xyz[0])), point)
    (nod,) = case.nodules
    assert nod.diameter_mm == 6.5 and nod.source == "luna16"
    kji = np.rint(case.volume.lps_to_index(nod.center_lps)).astype(int)
    assert tuple(kji) == (3, 7, 5) and case.volume.array[tuple(kji)] == 1000


def test_luna16_bad_input(tmp_path: Path) -> None:
    _write_mhd(tmp_path / "subset0")
    header = "seriesuid,coordX,coordY,coordZ,diameter_mm"
    unknown = _write_csv(tmp_path / "a.csv", header, ["1.2.3.999,0,0,0,5"])
    with pytest.raises(InvalidInputError, match="not found"):
        list(load_luna16(tmp_path, unknown))
    with pytest.raises(InvalidInputError, match="missing annotations"):
        list(load_luna16(tmp_path, tmp_path / "nope.csv"))
    with pytest.raises(InvalidInputError, match="missing MetaImage"):
        read_mhd(tmp_path / "nope.mhd")
    bad = _write_csv(tmp_path / "b.csv", header, [f"{UID},x,0,0,5"])
    with pytest.raises(InvalidInputError, match="line 2"):
        list(load_luna16(tmp_path, bad))
    cand = _write_csv(tmp_path / "c.csv", "seriesuid,coordX,coordY,coordZ,class",
                      [f"{UID},1,2,3,1", f"{UID},0,0,0,2"])
    with pytest.raises(InvalidInputError, match="line 3: bad point or class"):
        read_candidates(cand)


def _write_mha(folder: Path) -> None:
    arr = np.zeros((32, 40), dtype=np.uint16)  # [row, column]
    arr[10, 25] = 4000  # top-left corner of the box below: x = column 25, y = row 10
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.3, 0.2))  # (x, y) = (column, row)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(folder / "c0001.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 40), np.uint16)),
                    str(folder / "n0002.mha"))


def test_node21_boxes_and_spacing(tmp_path: Path) -> None:
    _write_mha(tmp_path / "images")
    csv = _write_csv(
        tmp_path / "metadata.csv",
        "img_name,x,y,width,height,label",
        ["c0001.mha,25,10,8,6,1", "n0002.mha,0,0,0,0,0"],
    )
    cases = list(load_node21(tmp_path / "images", csv))
    assert [c.case_id for c in cases] == ["c0001", "n0002"]
    pos, neg = cases
    assert pos.image.shape == (32, 40) and pos.spacing_mm == pytest.approx((0.2, 0.3))
    (box,) = pos.boxes
    assert (box.x, box.y, box.width, box.height, box.label) == (25, 10, 8, 6, 1)
    assert pos.image[int(box.y), int(box.x)] == 4000
    assert neg.boxes == ()


def test_node21_bad_input(tmp_path: Path) -> None:
    _write_mha(tmp_path / "images")
    header = "img_name,x,y,width,height,label"
    unknown = _write_csv(tmp_path / "u.csv", header, ["zz.mha,1,1,2,2,1"])
    with pytest.raises(InvalidInputError, match="not in"):
        list(load_node21(tmp_path / "images", unknown))
    outside = _write_csv(tmp_path / "o.csv", header, ["c0001.mha,35,10,8,6,1"])
    with pytest.raises(InvalidInputError, match="outside"):
        list(load_node21(tmp_path / "images", outside))
    cols = _write_csv(tmp_path / "c.csv", "img_name,x,y", ["c0001.mha,1,1"])
    with pytest.raises(InvalidInputError, match="lacks columns"):
        list(load_node21(tmp_path / "images", cols))


def _ras_affine() -> np.ndarray:
    """Anisotropic, rotated about z by 30 degrees, with an offset."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.9, 1.1, 2.0])
    aff[:3, 3] = (12.0, -40.0, 7.5)
    return aff


def _write_nifti_pair(tmp_path: Path, *, empty: bool = False) -> tuple[Path, Path]:
    shape = (16, 18, 20)  # (i, j, k)
    img = np.zeros(shape, dtype=np.int16)
    img[8, 9, 10] = 700
    ii, jj, kk = np.indices(shape)
    # Sphere of radius 3 mm around voxel (8, 9, 10) in physical (not index) distance.
    d = (np.c_[ii.ravel() - 8, jj.ravel() - 9, kk.ravel() - 10] @ np.diag([0.9, 1.1, 2.0]))
    lab = (np.linalg.norm(d, axis=1) <= 3.0).reshape(shape).astype(np.uint8)
    if empty:
        lab[:] = 0
    ip, lp = tmp_path / "case7.nii.gz", tmp_path / "case7_label.nii.gz"
    nib.save(nib.Nifti1Image(img, _ras_affine()), str(ip))
    nib.save(nib.Nifti1Image(lab, _ras_affine()), str(lp))
    return ip, lp


def test_nifti_pair_ras_to_lps_and_sphere(tmp_path: Path) -> None:
    ip, lp = _write_nifti_pair(tmp_path)
    case = load_nifti_pair(ip, lp)
    assert case.case_id == "case7" and case.volume.shape == (20, 18, 16)
    ras = _ras_affine() @ np.array([8.0, 9.0, 10.0, 1.0])
    lps = (-ras[0], -ras[1], ras[2])
    assert case.volume.array[10, 9, 8] == 700
    assert np.allclose(case.volume.index_to_lps((10, 9, 8)), lps)
    (nod,) = case.nodules
    assert np.allclose(nod.center_lps, lps, atol=1e-6)  # symmetric sphere: centroid = centre
    count = int(np.asanyarray(nib.load(str(lp)).dataobj).sum())
    expected = (6.0 * count * 0.9 * 1.1 * 2.0 / np.pi) ** (1 / 3)
    assert nod.diameter_mm == pytest.approx(expected) and 4.0 < nod.diameter_mm < 8.0


def test_nifti_bad_input(tmp_path: Path) -> None:
    ip, lp = _write_nifti_pair(tmp_path, empty=True)
    with pytest.raises(InvalidInputError, match="empty"):
        load_nifti_pair(ip, lp)
    assert load_nifti_pair(ip, lp, allow_empty=True).nodules == ()
    with pytest.raises(InvalidInputError, match="missing NIfTI"):
        load_nifti_pair(ip, tmp_path / "none.nii.gz")


def test_review_findings_become_labels(tmp_path: Path) -> None:
    ctx = AppContext.create(load_settings(data_dir=tmp_path))
    try:
        st, se = "1.2.826.0.1.3680043.9.1", "1.2.826.0.1.3680043.9.1.1"
        paths = []
        for n in (1, 2):
            p = ctx.store.instance_path(st, se, f"{se}.{n}")
            ctx.store.write(p, b"x")
            paths.append(p)
        with ctx.db.begin() as conn:
            conn.execute(studies.insert().values(study_uid=st, patient_name="Doe^J"))
            conn.execute(series.insert().values(series_uid=se, study_uid=st, modality="CT"))
            for n, p in enumerate(paths, start=1):
                conn.execute(instances.insert().values(
                    sop_instance_uid=f"{se}.{n}", series_uid=se, study_uid=st,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2", instance_number=n,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    path=ctx.store.relative(p), size_bytes=1))
            aid = conn.execute(analyses.insert().values(
                study_uid=st, series_uid=se, pipeline="ct_chest", status="ready"
            )).inserted_primary_key[0]  # type: ignore[index]

            def add(kind: str, verdict: str, source: str, x: float, d: float | None) -> None:
                meas = [] if d is None else [{"name": "mean_diameter", "value": d, "unit": "mm"}]
                conn.execute(findings.insert().values(
                    study_uid=st, analysis_id=aid, series_uid=se, kind=kind, source=source,
                    center_x=x, center_y=-20.0, center_z=-150.0, measurements=meas,
                    verdict=verdict))

            add("lung_nodule", "accepted", "ai", 1.0, 6.0)
            add("lung_mass", "edited", "ai", 2.0, 32.0)
            add("lung_nodule", "accepted", "radiologist", 3.0, None)
            add("lung_nodule", "rejected", "ai", 4.0, 5.0)
            add("lung_nodule", "pending", "ai", 5.0, 5.0)
            add("emphysema", "accepted", "ai", 6.0, None)
        assert list(load_review(ctx)) == []  # not signed: no labels
        with ctx.db.begin() as conn:
            conn.execute(studies.update().values(revision=1, status="signed"))
            conn.execute(reports.insert().values(study_uid=st, revision=1, signed_by="doc"))
        (case,) = list(load_review(ctx))
    finally:
        ctx.close()
    assert case.study_uid == st and case.series_uids == (se,) and case.revision == 1
    assert case.instance_paths == tuple(p.resolve() for p in paths)
    assert all(p.is_file() for p in case.instance_paths)
    got = sorted((n.center_lps[0], n.diameter_mm, n.source) for n in case.positives)
    assert got == [(1.0, 6.0, "review:ai:accepted"), (2.0, 32.0, "review:ai:edited"),
                   (3.0, 0.0, "review:radiologist:accepted")]
    assert [(n.center_lps, n.diameter_mm) for n in case.negatives] == [((4.0, -20.0, -150.0), 5.0)]


def test_review_empty_database_yields_nothing(tmp_path: Path) -> None:
    ctx = AppContext.create(load_settings(data_dir=tmp_path))
    try:
        assert list(load_review(ctx)) == []
    finally:
        ctx.close()
