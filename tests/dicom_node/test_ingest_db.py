"""Ingest against both databases: concurrent writers to one series keep exact counts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from countyread.context import AppContext
from countyread.db import instances, series, studies
from dicom_node.ingest import Ingestor, StoreRequest
from tests.dicom_node import corpus, synth
from tests.dicom_node.conftest import make_ctx


def _requests(tmp: Path, n: int) -> list[StoreRequest]:
    paths = synth.write_ct_series(tmp / "ct", n, size=16, charset="ISO 2022 IR 58")
    reqs = []
    for p in paths:
        ds = dcmread(p)
        reqs.append(StoreRequest(data=corpus.encode(ds), transfer_syntax=corpus.ELE,
                                 sop_class_uid=str(ds.SOPClassUID),
                                 sop_instance_uid=str(ds.SOPInstanceUID), calling_ae="T1"))
    return reqs


def _hammer(ctx: AppContext, reqs: list[StoreRequest], threads: int = 6) -> list[int]:
    ing = Ingestor(ctx)
    statuses: list[int] = []
    lock = threading.Lock()

    def work(part: list[StoreRequest]) -> None:
        for r in part:
            out = ing.ingest(r)
            with lock:
                statuses.append(out.status)

    # Every thread sends every instance: duplicates race with first copies.
    ts = [threading.Thread(target=work, args=(reqs[i::2] + reqs,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return statuses


def _check(ctx: AppContext, n: int) -> None:
    with ctx.db.begin() as conn:
        assert conn.execute(select(func.count()).select_from(instances)).scalar() == n
        row = conn.execute(select(series)).mappings().one()
        assert row["instance_count"] == n and row["state"] == "receiving"
        study = conn.execute(select(studies)).mappings().one()
        assert study["patient_name"] == "Zhao^Liu=赵^六"
        assert study["modalities"] == "CT"


def test_concurrent_ingest_sqlite(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "var")
    reqs = _requests(tmp_path, 12)
    statuses = _hammer(ctx, reqs)
    assert set(statuses) == {0}
    _check(ctx, 12)
    ctx.close()


@pytest.mark.integration
def test_concurrent_ingest_postgres(tmp_path: Path, pg_url: str) -> None:
    ctx = make_ctx(tmp_path / "var", database_url=pg_url)
    reqs = _requests(tmp_path, 12)
    statuses = _hammer(ctx, reqs)
    assert set(statuses) == {0}
    _check(ctx, 12)
    ctx.close()
