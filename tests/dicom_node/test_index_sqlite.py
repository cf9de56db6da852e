"""The sqlite3 index path writes exactly the rows the SQLAlchemy path writes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom import dcmread

from countyread.context import AppContext
from dicom_node import status as st
from dicom_node.header import read_header
from dicom_node.index import IndexResult, InstanceIndex, PendingRow
from tests.dicom_node import corpus, synth
from tests.dicom_node.conftest import make_ctx


def _rows(paths: list[Path], study: str | None = None) -> list[PendingRow]:
    out = []
    for i, p in enumerate(paths):
        ds = dcmread(p)
        if study is not None:
            ds.StudyInstanceUID = study
        h = read_header(corpus.encode(ds), corpus.ELE, str(ds.SOPClassUID),
                        str(ds.SOPInstanceUID))
        out.append(PendingRow(h, f"rel/{i}.dcm", 1000 + i, "T1", None))
    return out


def _dump(ctx: AppContext) -> dict[str, list[tuple[object, ...]]]:
    db = ctx.settings.data_dir / "countyread.db"
    con = sqlite3.connect(db)
    try:
        return {t: sorted(con.execute(f"select * from {t}").fetchall(), key=repr)
                for t in ("studies", "series", "instances")}
    finally:
        con.close()


def _run(ctx: AppContext, *, fast: bool, batches: list[list[PendingRow]],
         stable_series: str) -> list[IndexResult | st.DimseFailure]:
    index = InstanceIndex(ctx.db)
    assert (index._sqlite is not None) is True
    if not fast:
        index._sqlite = None  # the SQLAlchemy path, as on PostgreSQL
    t0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    results: list[IndexResult | st.DimseFailure] = []
    for i, batch in enumerate(batches):
        if i == 2:  # a late instance after the series went stable re-opens it
            with ctx.db.begin() as conn:
                conn.exec_driver_sql("update series set state='stable' where series_uid=?",
                                     (stable_series,))
        results += index.add_many(batch, t0 + timedelta(seconds=i, microseconds=0 if i else 5))
    return results


def test_both_paths_write_the_same_rows(tmp_path: Path) -> None:
    ct = synth.write_ct_series(tmp_path / "ct", 6, size=16, charset="ISO 2022 IR 58")
    dr = synth.write_dr(tmp_path / "dr", charset="GBK")
    rows = _rows(ct)
    ser = rows[0].header.series_uid
    conflict = _rows(ct[:1], study=synth.uid("other-study"))  # same series, other study
    batches = [rows[:3], rows[3:5] + _rows([dr]), [rows[5], rows[0]], conflict]
    outcomes = []
    dumps = []
    for fast in (True, False):
        ctx = make_ctx(tmp_path / f"var-{fast}")
        outcomes.append([(r.status, r.comment) if isinstance(r, st.DimseFailure) else r
                         for r in _run(ctx, fast=fast, batches=batches, stable_series=ser)])
        dumps.append(_dump(ctx))
        ctx.close()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][-1] == (st.INCONSISTENT_STUDY, "series is indexed under another study")
    assert outcomes[0][6] == IndexResult(inserted=True, new_series=False, reopened=True)
    assert outcomes[0][7] == IndexResult(inserted=False, new_series=False, reopened=False)
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["instances"]) == 7 and len(dumps[0]["studies"]) == 2
