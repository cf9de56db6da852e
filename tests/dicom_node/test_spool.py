"""Spooled ingest: a failed spool write is "out of resources", a refused one is quarantined
byte for byte, and a store on another file system still gets the file."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import instances, quarantine
from dicom_node import status as st
from dicom_node.commit import move_synced_file
from dicom_node.fastpath.spool import Spool
from dicom_node.ingest import Ingestor, SpooledRequest, StoreRequest, encode_file_meta
from tests.dicom_node import corpus, synth
from tests.dicom_node.conftest import make_ctx


def _spooled(ctx: AppContext, path: Path, data: bytes | None = None) -> SpooledRequest:
    ds = dcmread(path)
    raw = corpus.encode(ds) if data is None else data
    spool_dir = ctx.settings.data_dir / "incoming"
    spool_dir.mkdir(parents=True, exist_ok=True)
    meta = encode_file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), corpus.ELE, "T1")
    spool = Spool(spool_dir, meta)
    for i in range(0, len(raw), 700):  # fragments, as P-DATA-TF delivers them
        spool.write(memoryview(raw)[i:i + 700])
    return SpooledRequest(spool, corpus.ELE, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "T1")


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    context = make_ctx(tmp_path / "var")
    yield context
    context.close()


def test_spool_write_error_is_out_of_resources(ctx: AppContext, tmp_path: Path) -> None:
    path = synth.write_ct_series(tmp_path / "ct", 1, size=16)[0]
    spool = Spool(tmp_path / "no-such-dir", b"meta")
    spool.write(memoryview(b"data"))
    assert spool.error is not None and spool.path is None
    ds = dcmread(path)
    out = Ingestor(ctx).ingest_spooled(SpooledRequest(
        spool, corpus.ELE, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "T1"))
    assert out.status == st.OUT_OF_RESOURCES and out.comment
    with ctx.db.begin() as conn:
        rows = list(conn.execute(select(quarantine)).mappings())
    assert len(rows) == 1 and rows[0]["path"] is None  # recorded, nothing kept


def test_spooled_matches_in_memory_ingest(ctx: AppContext, tmp_path: Path) -> None:
    good, bad = synth.write_ct_series(tmp_path / "ct", 2, size=16)
    ing = Ingestor(ctx)
    req = _spooled(ctx, good)
    assert ing.ingest_spooled(req).ok
    req.spool.discard()
    ds = dcmread(good)
    stored = ctx.store.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                     ds.SOPInstanceUID)
    # The very bytes the in-memory path writes: our file meta, then the data set as sent.
    raw = corpus.encode(ds)
    meta = encode_file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), corpus.ELE, "T1")
    assert stored.read_bytes() == meta + raw
    # A refused data set keeps its bytes in quarantine, as the in-memory path keeps them.
    broken = corpus.encode(dcmread(bad))[:-100]
    refused = _spooled(ctx, bad, broken)
    out = ing.ingest_spooled(refused)
    refused.spool.discard()
    classic = ing.ingest(StoreRequest(broken, corpus.ELE, refused.sop_class_uid,
                                      refused.sop_instance_uid, "T1"))
    assert (out.status, out.comment) == (classic.status, classic.comment) == (
        st.UNREADABLE_DATASET, "data set truncated")
    with ctx.db.begin() as conn:
        kept = [r["path"] for r in conn.execute(select(quarantine)).mappings()]
        assert len(conn.execute(select(instances)).all()) == 1
    files = [(ctx.settings.quarantine_dir / k).read_bytes() for k in kept]
    assert len(files) == 2 and files[0] == files[1]
    assert list((ctx.settings.data_dir / "incoming").iterdir()) == []


def test_move_across_file_systems_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "spool" / "x.dcm"
    src.parent.mkdir()
    src.write_bytes(b"payload")
    real_replace = os.replace

    def cross_device(a: object, b: object) -> None:
        if Path(str(a)) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", cross_device)
    dst = tmp_path / "store" / "a" / "b.dcm"
    move_synced_file(src, dst)
    assert dst.read_bytes() == b"payload" and not src.exists()
