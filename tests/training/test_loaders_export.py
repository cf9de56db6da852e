"""export-labels round trips: signed review findings and SEG cases -> LUNA16 / NIfTI files ->
the loaders -> the same labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from countyread.cli import main as countyread_main
from countyread.context import AppContext
from countyread.db import findings
from countyread.domain import Role
from tests.api import seed
from tests.training.test_loaders_dicomseg import _highdicom_seg, phantom  # noqa: F401
from tests.training.test_loaders_review import _login, client, ctx  # noqa: F401
from training.loaders.export import from_review, from_seg, write_labels
from training.loaders.luna16 import load_luna16, read_candidates
from training.loaders.nifti import load_nifti_pair
from training.loaders.review import load_review
from training.phantoms import CTPhantom

INSIDE = [(-50.0, 20.0, -10.0), (30.0, -40.0, -17.5)]  # within the 12-slice stored CT


def _signed_study(ctx: AppContext, client: TestClient) -> str:  # noqa: F811
    """A stored 12-slice CT; f1 accepted (18 x 14 mm), f2 rejected; signed through the API."""
    seed.add_user(ctx, "rad1", Role.RADIOLOGIST)
    h = _login(client, "rad1")
    study_uid, fids = seed.stored_ct_study(ctx, n_slices=12)
    with ctx.db.begin() as conn:
        for fid, (x, y, z) in zip(fids, INSIDE, strict=True):
            conn.execute(update(findings).where(findings.c.id == fid)
                         .values(center_x=x, center_y=y, center_z=z))
    assert client.post(f"/api/studies/{study_uid}/claim", headers=h).status_code == 200
    for fid, verdict in zip(fids, ("accepted", "rejected"), strict=True):
        r = client.patch(f"/api/findings/{fid}", headers=h, json={"verdict": verdict})
        assert r.status_code == 200, r.text
    assert client.post(f"/api/studies/{study_uid}/sign", headers=h).status_code == 200
    return study_uid


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_review_to_luna16_round_trip(ctx: AppContext, client: TestClient,  # noqa: F811
                                     tmp_path: Path) -> None:
    _signed_study(ctx, client)
    (review,) = list(load_review(ctx))
    (case,) = list(from_review(review))
    assert case.volume.shape[0] == 12 and len(case.positives) == len(case.negatives) == 1
    summary = write_labels([case], tmp_path / "luna", "luna16")
    assert (summary.cases, summary.positives, summary.negatives) == (1, 1, 1)
    (back,) = list(load_luna16(tmp_path / "luna", tmp_path / "luna" / "annotations.csv"))
    assert back.case_id == case.case_id
    assert np.allclose(back.volume.affine, case.volume.affine, atol=1e-4)
    assert np.array_equal(back.volume.array, case.volume.array)
    (nod,) = back.nodules
    assert np.allclose(nod.center_lps, INSIDE[0], atol=1e-3) and nod.diameter_mm == 16.0
    cand = read_candidates(tmp_path / "luna" / "candidates.csv")
    assert sorted(cand[case.case_id], key=lambda c: c[1]) == [(INSIDE[1], 0), (INSIDE[0], 1)]


def test_review_to_nifti_spheres_round_trip(ctx: AppContext, client: TestClient,  # noqa: F811
                                            tmp_path: Path) -> None:
    _signed_study(ctx, client)
    (review,) = list(load_review(ctx))
    (case,) = list(from_review(review))
    write_labels([case], tmp_path / "nii", "nifti")
    (row,) = _rows(tmp_path / "nii" / "manifest.csv")
    back = load_nifti_pair(tmp_path / "nii" / row["image"], tmp_path / "nii" / row["label"])
    assert back.case_id == case.case_id  # dots of the series UID survive
    assert np.allclose(back.volume.affine, case.volume.affine, atol=1e-4)
    (nod,) = back.nodules
    # A 16 mm sphere drawn on 3.125 x 3.125 x 2.5 mm voxels comes back as its voxels do.
    assert np.linalg.norm(np.subtract(nod.center_lps, INSIDE[0])) < 1.0
    assert abs(nod.diameter_mm - 16.0) < 1.5


def test_seg_to_nifti_and_cli(phantom: tuple[CTPhantom, list[Path]],  # noqa: F811
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.loaders.dicomseg import load_dicom_seg

    ph, ct_paths = phantom
    folder = tmp_path / "segcase"
    folder.mkdir()
    for p in ct_paths:
        (folder / p.name).symlink_to(p)
    _highdicom_seg(ph, ct_paths).save_as(folder / "seg.dcm", enforce_file_format=True)
    (seg,) = load_dicom_seg(folder)
    write_labels([from_seg(seg)], tmp_path / "nii", "nifti")
    back = load_nifti_pair(tmp_path / "nii" / "images" / f"{seg.case.case_id}.nii.gz",
                           tmp_path / "nii" / "labels" / f"{seg.case.case_id}.nii.gz")
    assert np.array_equal(back.volume.array, ph.volume.array)
    got = sorted((n.center_lps, n.diameter_mm) for n in back.nodules)
    want = sorted((n.center_lps, n.diameter_mm) for n in seg.case.nodules)
    assert len(got) == 2
    for (c1, d1), (c2, d2) in zip(got, want, strict=True):
        assert np.allclose(c1, c2, atol=1e-3) and d1 == pytest.approx(d2)

    out = tmp_path / "cli"
    rc = countyread_main(["export-labels", "--format", "luna16", "--out", str(out),
                          "--no-review", "--seg", str(folder)])
    assert rc == 0 and "1 case(s), 2 positive" in capsys.readouterr().out
    (luna,) = list(load_luna16(out, out / "annotations.csv"))
    assert np.allclose(sorted(n.center_lps for n in luna.nodules),
                       sorted(n.center_lps for n in seg.case.nodules), atol=1e-3)
    with pytest.raises(SystemExit):
        countyread_main(["export-labels", "--format", "luna16", "--out", str(out),
                         "--no-review"])


def test_cli_exports_signed_review_from_the_configured_database(
    ctx: AppContext, client: TestClient, tmp_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cli"
    monkeypatch.setenv("COUNTYREAD_DATA_DIR", str(ctx.settings.data_dir))
    assert countyread_main(["export-labels", "--format", "nifti", "--out", str(out)]) == 1
    assert "nothing to export" in capsys.readouterr().err
    _signed_study(ctx, client)
    assert countyread_main(["export-labels", "--format", "nifti", "--out", str(out)]) == 0
    assert "1 case(s), 1 positive and 1 negative" in capsys.readouterr().out
    (row,) = _rows(out / "manifest.csv")
    (nod,) = load_nifti_pair(out / row["image"], out / row["label"]).nodules
    assert np.linalg.norm(np.subtract(nod.center_lps, INSIDE[0])) < 1.0
