"""The viewer endpoints: geometry and windowed slices of stored series, scoped and audited."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)
from sqlalchemy import select

from api import viewer
from api.viewer import SeriesCache, SliceRef, apply_window
from countyread.context import AppContext
from countyread.db import audit, instances, series, utcnow
from tests.api import seed

SIZE = 32
N_SLICES = 12
STEP = 2.5
MARK = (7, 10, 21)  # (slice in display order, row, column) of the marked voxel
MARK_HU = 240


def _file(ds: Dataset, sop_class: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _index(ctx: AppContext, study_uid: str, series_uid: str, modality: str,
           files: Sequence[tuple[str, str, int, bytes]]) -> None:
    with ctx.db.begin() as conn:
        conn.execute(series.insert().values(
            series_uid=series_uid, study_uid=study_uid, modality=modality, series_number=2,
            instance_count=len(files), state="stable", stable_at=utcnow()))
        for sop, sop_class, number, data in files:
            path = ctx.store.instance_path(study_uid, series_uid, sop)
            size = ctx.store.write(path, data)
            conn.execute(instances.insert().values(
                sop_instance_uid=sop, series_uid=series_uid, study_uid=study_uid,
                sop_class_uid=sop_class, transfer_syntax_uid=ExplicitVRLittleEndian,
                instance_number=number, path=ctx.store.relative(path), size_bytes=size))


def store_ct_phantom(ctx: AppContext, study_uid: str, *, n_slices: int = N_SLICES,
                     size: int = SIZE) -> tuple[str, list[str]]:
    """A CT series of ``n_slices`` axial slices, written in shuffled order with Instance
    Numbers running feet-to-head (so neither file order nor numbering gives the display
    order), air (-1000 HU) with one voxel of ``MARK_HU`` at :data:`MARK`.

    Returns the series UID and the SOP UIDs in display order (ascending z along the
    normal of row x column = +x x +y = +z).
    """
    series_uid = seed.uid()
    sops = [seed.uid() for _ in range(n_slices)]
    files = []
    for k in np.random.default_rng(3).permutation(n_slices):
        ds = Dataset()
        ds.SOPInstanceUID = sops[k]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.InstanceNumber = "CT", int(n_slices - k)
        ds.ImagePositionPatient = [-40.0, -30.0, -100.0 + STEP * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], STEP
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        stored = np.full((size, size), 24, np.uint16)  # -1000 HU
        if k == MARK[0]:
            stored[MARK[1], MARK[2]] = MARK_HU + 1024
        ds.PixelData = stored.tobytes()
        files.append((sops[k], CTImageStorage, int(n_slices - k), _file(ds, CTImageStorage)))
    _index(ctx, study_uid, series_uid, "CT", files)
    return series_uid, sops


def store_dr(ctx: AppContext, study_uid: str, stored: npt.NDArray[np.uint16],
             photometric: str) -> str:
    """One DX image with a window of 0..4095 in stored values."""
    series_uid, sop = seed.uid(), seed.uid()
    ds = Dataset()
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = sop, study_uid, series_uid
    ds.Modality, ds.InstanceNumber = "DX", 1
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = stored.astype(np.uint16).tobytes()
    sop_class = DigitalXRayImageStorageForPresentation
    _index(ctx, study_uid, series_uid, "DX", [(sop, sop_class, 1, _file(ds, sop_class))])
    return series_uid


def _png(r: object) -> npt.NDArray[np.uint8]:
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "image/png"  # type: ignore[attr-defined]
    return np.asarray(Image.open(io.BytesIO(r.content)))  # type: ignore[attr-defined]


def _study(ctx: AppContext, node: int | None = None) -> str:
    return seed.add_study(ctx, urgency="urgent", node_id=node,
                          received=utcnow() - timedelta(minutes=2))


def test_geometry_sorts_along_the_normal(ctx: AppContext, client: TestClient,
                                         people: dict[str, dict[str, str]]) -> None:
    series_uid, sops = store_ct_phantom(ctx, _study(ctx))
    g = client.get(f"/api/series/{series_uid}/geometry", headers=people["rad1"]).json()
    assert g["kind"] == "volume" and g["slice_count"] == N_SLICES
    assert [s["sop_instance_uid"] for s in g["slices"]] == sops
    assert [s["position"][2] for s in g["slices"]] == [-100.0 + STEP * k
                                                       for k in range(N_SLICES)]
    assert g["pixel_spacing"] == [0.8, 0.7] and (g["rows"], g["columns"]) == (SIZE, SIZE)
    affine = np.asarray(g["affine"])
    # the marked voxel's centre, (column, row, slice) -> LPS
    lps = affine @ np.array([MARK[2], MARK[1], MARK[0], 1.0])
    assert np.allclose(lps[:3], [-40.0 + 0.7 * MARK[2], -30.0 + 0.8 * MARK[1],
                                 -100.0 + STEP * MARK[0]])
    assert g["default_window"] == "lung" and g["windows"]["lung"] == [-600.0, 1500.0]


def test_slice_pixel_after_windowing(ctx: AppContext, client: TestClient,
                                     people: dict[str, dict[str, str]]) -> None:
    series_uid, _ = store_ct_phantom(ctx, _study(ctx))
    url = f"/api/series/{series_uid}/slices/{MARK[0]}.png"
    # mediastinum: centre 40, width 400 -> 240 HU is the top of the window, -1000 below it
    r = client.get(url, params={"window": "mediastinum"}, headers=people["rad1"])
    assert r.headers["cache-control"] == "no-store"  # shared workstations
    assert r.headers["x-window"] == "40,400"
    img = _png(r)
    assert img.shape == (SIZE, SIZE) and img.dtype == np.uint8
    assert img[MARK[1], MARK[2]] == 255 and img[0, 0] == 0
    assert int((img == 255).sum()) == 1
    # lung: (240 - (-600.5)) / 1499 + 0.5 = 1.06 -> white; -1000: (-399.5/1499 + .5) * 255
    img = _png(client.get(url, params={"window": "lung"}, headers=people["rad1"]))
    assert img[MARK[1], MARK[2]] == 255 and img[0, 0] == round((-399.5 / 1499 + 0.5) * 255)
    # explicit centre/width: 240 HU at the centre of a 1001-wide window is mid-grey
    img = _png(client.get(url, params={"wc": 240, "ww": 1001}, headers=people["rad1"]))
    assert img[MARK[1], MARK[2]] == 128
    # the neighbouring slices hold no mark (display order = position order)
    for k in (MARK[0] - 1, MARK[0] + 1):
        other = _png(client.get(f"/api/series/{series_uid}/slices/{k}.png",
                                params={"window": "mediastinum"}, headers=people["rad1"]))
        assert other.max() == 0


def test_monochrome1_radiograph_is_inverted(ctx: AppContext, client: TestClient,
                                            people: dict[str, dict[str, str]]) -> None:
    study = _study(ctx)
    stored = np.full((64, 80), 4095, np.uint16)
    stored[20, 30] = 0  # MONOCHROME1: the lowest value is white
    uid1 = store_dr(ctx, study, stored, "MONOCHROME1")
    uid2 = store_dr(ctx, study, stored, "MONOCHROME2")
    g = client.get(f"/api/series/{uid1}/geometry", headers=people["rad1"]).json()
    assert (g["kind"], g["slice_count"], g["rows"], g["columns"]) == ("projection", 1, 64, 80)
    assert g["pixel_spacing"] == [0.2, 0.2] and g["default_window"] == "auto"
    m1 = _png(client.get(f"/api/series/{uid1}/slices/0.png", headers=people["rad1"]))
    m2 = _png(client.get(f"/api/series/{uid2}/slices/0.png", headers=people["rad1"]))
    assert m1[20, 30] == 255 and m1[0, 0] == 0
    assert m2[20, 30] == 0 and m2[0, 0] == 255


def test_unreadable_instance_is_skipped(ctx: AppContext, client: TestClient,
                                        people: dict[str, dict[str, str]]) -> None:
    study = _study(ctx)
    series_uid, sops = store_ct_phantom(ctx, study)
    with ctx.db.begin() as conn:
        bad = seed.uid()
        path = ctx.store.instance_path(study, series_uid, bad)
        ctx.store.write(path, b"DICM? no: twelve bytes of rubbish")
        conn.execute(instances.insert().values(
            sop_instance_uid=bad, series_uid=series_uid, study_uid=study,
            sop_class_uid=CTImageStorage, transfer_syntax_uid=ExplicitVRLittleEndian,
            instance_number=99, path=ctx.store.relative(path), size_bytes=33))
        conn.execute(series.update().where(series.c.series_uid == series_uid)
                     .values(instance_count=N_SLICES + 1))
    g = client.get(f"/api/series/{series_uid}/geometry", headers=people["rad1"]).json()
    assert g["kind"] == "volume"
    assert [s["sop_instance_uid"] for s in g["slices"]] == sops


def test_short_series_is_a_stack_in_instance_order(ctx: AppContext, client: TestClient,
                                                   people: dict[str, dict[str, str]]) -> None:
    study = _study(ctx)
    series_uid, sops = store_ct_phantom(ctx, study, n_slices=4)
    g = client.get(f"/api/series/{series_uid}/geometry", headers=people["rad1"]).json()
    assert g["kind"] == "stack" and g["affine"] is None
    assert "only 4 slices" in g["notes"][0]
    assert [s["sop_instance_uid"] for s in g["slices"]] == sops[::-1]  # Instance Number order


def test_scoping_bad_uids_and_audit(ctx: AppContext, client: TestClient,
                                    people: dict[str, dict[str, str]]) -> None:
    n1, n2 = int(people["_nodes"]["n1"]), int(people["_nodes"]["n2"])
    own, _ = store_ct_phantom(ctx, _study(ctx, n1))
    other, _ = store_ct_phantom(ctx, _study(ctx, n2))
    for path in ("geometry", "slices/0.png"):
        assert client.get(f"/api/series/{own}/{path}", headers=people["tech"]).status_code == 200
        # another township's series looks exactly like a missing one
        r = client.get(f"/api/series/{other}/{path}", headers=people["tech"])
        missing = client.get(f"/api/series/1.2.3.999/{path}", headers=people["tech"])
        assert r.status_code == missing.status_code == 404
        assert client.get(f"/api/series/{own}/{path}").status_code == 401
        for bad in ("1.2.x", "1..2", "9" * 65):
            code = client.get(f"/api/series/{bad}/{path}", headers=people["rad1"]).status_code
            assert 400 <= code < 500 and code != 404, (bad, code)
    r = client.get(f"/api/series/{own}/slices/{N_SLICES}.png", headers=people["rad1"])
    assert r.status_code == 404
    r = client.get(f"/api/series/{own}/slices/0.png", params={"window": "soup"},
                   headers=people["rad1"])
    assert r.status_code == 422
    r = client.get(f"/api/series/{own}/slices/0.png", params={"wc": 40},
                   headers=people["rad1"])
    assert r.status_code == 400
    with ctx.db.begin() as conn:
        rows = conn.execute(select(audit).where(audit.c.action == "view_image")
                            .order_by(audit.c.id)).mappings().all()
    assert [(r["username"], r["detail"]["series_uid"], r["detail"]["index"]) for r in rows] == [
        ("tech", own, 0)]
    assert rows[0]["study_uid"] is not None


def test_new_instances_refresh_the_layout(ctx: AppContext, client: TestClient,
                                          people: dict[str, dict[str, str]]) -> None:
    series_uid, _ = store_ct_phantom(ctx, _study(ctx))
    url = f"/api/series/{series_uid}/geometry"
    assert client.get(url, headers=people["rad1"]).json()["slice_count"] == N_SLICES
    with ctx.db.begin() as conn:
        conn.execute(instances.delete().where(
            instances.c.sop_instance_uid.in_(select(instances.c.sop_instance_uid).where(
                instances.c.series_uid == series_uid).limit(1).scalar_subquery())))
        conn.execute(series.update().where(series.c.series_uid == series_uid)
                     .values(instance_count=N_SLICES - 1))
    assert client.get(url, headers=people["rad1"]).json()["slice_count"] == N_SLICES - 1


def test_cache_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SeriesCache(max_bytes=3 * SIZE * SIZE * 2)  # three int16 slices
    calls: list[int] = []

    def fake_decode(ref: SliceRef) -> viewer.SlicePixels:
        calls.append(ref.instance_number)
        return viewer.SlicePixels(np.zeros((SIZE, SIZE), np.int16), False, None)

    monkeypatch.setattr(viewer, "decode_slice", fake_decode)
    key = ("1.2", 4, "t")
    refs = [SliceRef(Path("x"), None, "1", i, None, None) for i in range(4)]
    for i in (0, 1, 2, 3, 3, 0):
        cache.pixels(key, i, refs[i])
    # three slices fit: the second 3 was a hit; 0 had been evicted by 3 and is decoded again
    assert calls == [0, 1, 2, 3, 0]
    assert cache.bytes_held == cache.max_bytes

    encoded: list[int] = []
    real_encode = viewer.encode_png
    monkeypatch.setattr(viewer, "encode_png", lambda u8: encoded.append(1) or real_encode(u8))
    a, wa = cache.png(key, 0, refs[0], "lung", None, None)
    b, wb = cache.png(key, 0, refs[0], "lung", None, None)
    _c, wc = cache.png(key, 0, refs[0], "bone", None, None)
    assert a == b and wa == wb == (-600.0, 1500.0) and wc == (400.0, 1800.0)
    assert len(encoded) == 2  # the second lung request came from the PNG cache


def test_window_formula_matches_ps3_3() -> None:
    v = np.array([[-160, 40, 240, 39, 41]], np.int16)
    out = apply_window(v, 40.0, 400.0)
    assert out.tolist() == [[0, 128, 255, 127, 128]]
    assert apply_window(v, 40.0, 400.0, invert=True).tolist() == [[255, 127, 0, 128, 127]]


def test_enhanced_multiframe_frames_in_position_order(tmp_path: Path) -> None:
    from tests.inference.ct_series import write_multiframe

    z = [float(v) for v in range(12)]
    layout = viewer.plan_layout([write_multiframe(tmp_path, z)], "CT")
    assert layout.kind == "volume" and len(layout.slices) == 12
    assert [s.position[2] for s in layout.slices if s.position] == z
    # slice_pixels(k) stores HU 100 * k; frames are stored in reverse, shown by position
    hu = [int(viewer.decode_slice(s).values[0, 0]) for s in layout.slices]
    assert hu == [100 * k for k in range(12)]
