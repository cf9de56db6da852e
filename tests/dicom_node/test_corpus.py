"""Broken inputs: each gets its DIMSE status and ErrorComment, is quarantined, the node lives."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import instances, quarantine, series
from dicom_node import status as st
from dicom_node.ingest import StoreRequest
from dicom_node.scp import DicomNode
from dicom_node.scu import send_paths
from tests.dicom_node import corpus, synth
from tests.dicom_node.conftest import SCU_AE, run_dcmtk

pytestmark = pytest.mark.integration


def test_broken_corpus_gets_expected_statuses(
    node: DicomNode, ctx: AppContext, workdir: Path
) -> None:
    good = synth.write_ct_series(workdir / "good", 2, size=16)
    first = send_paths("127.0.0.1", node.port, "COUNTYREAD", good, calling_ae=SCU_AE)
    assert all(r.ok for r in first)
    from pydicom import dcmread

    ref = dcmread(good[0], stop_before_pixels=True)
    cases = corpus.build(workdir / "corpus", ref.StudyInstanceUID, ref.SeriesInstanceUID)
    kinds = {c.name for c in cases}
    assert len(kinds) >= 20

    results = send_paths("127.0.0.1", node.port, "COUNTYREAD", [c.path for c in cases],
                         calling_ae=SCU_AE)
    got = {Path(r.path).stem: r for r in results if r.path}
    wrong = []
    for case in cases:
        res = got[case.name]
        if case.status is None:
            ok = res.status is None  # not sent: see test_refused_at_negotiation
        else:
            ok = res.status == case.status and bool(res.error_comment)
        if not ok:
            wrong.append((case.name, hex(res.status) if res.status is not None else None,
                          res.error_comment, hex(case.status) if case.status else None))
    assert not wrong, wrong

    sent_failures = [c for c in cases if c.status is not None]
    with ctx.db.begin() as conn:
        rows = list(conn.execute(select(quarantine)).mappings())
        n_instances = conn.execute(select(instances)).all()
        series_rows = list(conn.execute(select(series)).mappings())
    assert len(rows) == len(sent_failures)
    assert {r["status_code"] for r in rows} == {c.status for c in sent_failures}
    for r in rows:
        assert r["source_ae"] == SCU_AE and r["reason"]
        assert (ctx.settings.quarantine_dir / r["path"]).is_file()
    # Nothing broken reached the index, the store, or a path outside it.
    assert len(n_instances) == 2 and len(series_rows) == 1
    assert not (ctx.settings.data_dir / "etc").exists()
    assert all(p.name.replace(".", "").isdigit() for p in ctx.store.root.iterdir())

    out = run_dcmtk("echoscu", "-aet", SCU_AE, "127.0.0.1", str(node.port))
    assert out.returncode == 0, out.stderr
    again = send_paths("127.0.0.1", node.port, "COUNTYREAD",
                       synth.write_ct_series(workdir / "after", 1, size=16), calling_ae=SCU_AE)
    assert again[0].ok


def test_refused_at_negotiation(node: DicomNode) -> None:
    from pynetdicom import AE

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
    ae.add_requested_context(corpus.CT, ["1.2.840.10008.1.2.4.100"])  # MPEG2
    ae.add_requested_context(corpus.CT, [corpus.ELE])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="COUNTYREAD")
    try:
        assert assoc.is_established
        accepted = [(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts]
        assert accepted == [(corpus.CT, corpus.ELE)]
        assert len(assoc.rejected_contexts) == 2
    finally:
        assoc.release()
        ae.shutdown()


def _request(path: Path, **over: str) -> StoreRequest:
    from pydicom import dcmread

    ds = dcmread(path)
    raw = corpus.encode(ds)
    return StoreRequest(data=raw, transfer_syntax=over.get("ts", corpus.ELE),
                        sop_class_uid=over.get("sop_class", str(ds.SOPClassUID)),
                        sop_instance_uid=str(ds.SOPInstanceUID), calling_ae=SCU_AE)


def test_handler_checks_behind_negotiation(node: DicomNode, workdir: Path) -> None:
    """What negotiation normally refuses is also refused by the handler itself."""
    path = synth.write_ct_series(workdir / "x", 1, size=16)[0]
    mr = node.ingestor.ingest(_request(path, sop_class="1.2.840.10008.5.1.4.1.1.4"))
    assert mr.status == st.SOP_CLASS_NOT_SUPPORTED and mr.comment
    ts = node.ingestor.ingest(_request(path, ts="1.2.840.10008.1.2.4.100"))
    assert ts.status == st.UNSUPPORTED_TRANSFER_SYNTAX and ts.comment


def test_store_failure_is_out_of_resources(node: DicomNode, ctx: AppContext,
                                           workdir: Path) -> None:
    path = synth.write_ct_series(workdir / "x", 1, size=16)[0]
    from pydicom import dcmread

    study = dcmread(path, stop_before_pixels=True).StudyInstanceUID
    # A plain file where the study directory must go: the durable write cannot happen.
    (ctx.store.root / study).write_bytes(b"in the way")
    res = send_paths("127.0.0.1", node.port, "COUNTYREAD", [path], calling_ae=SCU_AE)
    assert res[0].status == st.OUT_OF_RESOURCES and res[0].error_comment
    with ctx.db.begin() as conn:
        assert conn.execute(select(instances)).first() is None
