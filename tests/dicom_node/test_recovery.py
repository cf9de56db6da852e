"""Start-up recovery of interrupted stores and the overlap of directory fsync and index
commit (dicom_node/commit.py): the states a power cut can leave behind are built on disk
as they would be found after it, then the node's own code has to repair them."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import instances, series
from dicom_node import commit
from dicom_node import status as st
from dicom_node.fastpath.spool import SPOOL_PREFIX, Spool
from dicom_node.ingest import Ingestor, SpooledRequest, StoreRequest, encode_file_meta
from tests.dicom_node import corpus, synth
from tests.dicom_node.conftest import make_ctx


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    context = make_ctx(tmp_path / "var")
    yield context
    context.close()


def _spooled(ing: Ingestor, path: Path) -> SpooledRequest:
    ds = dcmread(path)
    raw = corpus.encode(ds)
    ing.spool_dir.mkdir(parents=True, exist_ok=True)
    spool = Spool(ing.spool_dir, encode_file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                                                  corpus.ELE, "T1"))
    for i in range(0, len(raw), 4096):
        spool.write(memoryview(raw)[i:i + 4096])
    return SpooledRequest(spool, corpus.ELE, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "T1")


def _stored(ctx: AppContext, path: Path) -> Path:
    ds = dcmread(path)
    return ctx.store.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                   ds.SOPInstanceUID)


def _rows(ctx: AppContext) -> dict[str, str]:
    with ctx.db.begin() as conn:
        return {r.sop_instance_uid: r.path for r in conn.execute(select(instances))}


def test_start_up_completes_an_indexed_store_whose_rename_was_lost(
        ctx: AppContext, tmp_path: Path) -> None:
    a, b, c = synth.write_ct_series(tmp_path / "ct", 3, size=32)
    ing = Ingestor(ctx)
    for f in (a, b):
        req = _spooled(ing, f)
        assert ing.ingest_spooled(req).ok
        req.spool.discard()
    # Power cut state 1: b's row committed, its rename not durable -> the fsynced spool
    # copy is back in incoming/ and the stored file is absent.
    kept = _stored(ctx, b).read_bytes()
    os.replace(_stored(ctx, b), ing.spool_dir / f"{SPOOL_PREFIX}lost.dcm")
    # State 2: c was still arriving (never indexed, never acknowledged).
    half = _spooled(ing, c)
    assert half.spool.path is not None
    # State 3: a leftover that is not even a DICOM file.
    (ing.spool_dir / f"{SPOOL_PREFIX}junk.dcm").write_bytes(b"\x00" * 10)

    completed, removed = Ingestor(ctx).recover_spool()

    assert (completed, removed) == (1, 2)
    assert _stored(ctx, b).read_bytes() == kept
    assert list(ing.spool_dir.iterdir()) == []
    assert not _stored(ctx, c).exists() and len(_rows(ctx)) == 2


def test_resend_of_an_indexed_instance_without_its_file_stores_it_again(
        ctx: AppContext, tmp_path: Path) -> None:
    # Both engines' paths: spooled (fast) and in memory (pynetdicom).
    a, b = synth.write_ct_series(tmp_path / "ct", 2, size=32)
    ing = Ingestor(ctx)
    req = _spooled(ing, a)
    assert ing.ingest_spooled(req).ok
    req.spool.discard()
    ds_b = dcmread(b)
    mem = StoreRequest(corpus.encode(ds_b), corpus.ELE, str(ds_b.SOPClassUID),
                       str(ds_b.SOPInstanceUID), "T1")
    assert ing.ingest(mem).ok
    originals = {f: _stored(ctx, f).read_bytes() for f in (a, b)}
    for f in (a, b):  # a power cut lost the renames, and with them the spool copies
        _stored(ctx, f).unlink()

    again = _spooled(ing, a)
    assert ing.ingest_spooled(again).ok
    again.spool.discard()
    assert ing.ingest(mem).ok

    for f in (a, b):
        assert _stored(ctx, f).read_bytes() == originals[f]
    assert len(_rows(ctx)) == 2
    with ctx.db.begin() as conn:
        assert conn.execute(select(series.c.instance_count)).scalar_one() == 2
    assert list(ing.spool_dir.iterdir()) == []


def test_directory_fsync_error_takes_the_rows_back(
        ctx: AppContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = synth.write_ct_series(tmp_path / "ct", 2, size=32)
    ing = Ingestor(ctx)
    assert ing.ingest_spooled(_spooled(ing, a)).ok
    real = commit.fsync_dir

    def failing(path: Path) -> None:  # the disk reports an error on the flush
        if path == _stored(ctx, b).parent:
            raise OSError(errno.EIO, "Input/output error")
        real(path)

    monkeypatch.setattr(commit, "fsync_dir", failing)
    req = _spooled(ing, b)
    out = ing.ingest_spooled(req)
    req.spool.discard()
    assert out.status == st.OUT_OF_RESOURCES
    # Committed in parallel with the failed flush, then taken back: no claim, no file.
    assert set(_rows(ctx)) == {str(dcmread(a).SOPInstanceUID)}
    assert not _stored(ctx, b).exists()
    with ctx.db.begin() as conn:
        assert conn.execute(select(series.c.instance_count)).scalar_one() == 1
