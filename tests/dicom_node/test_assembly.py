"""Series stability: quiet time, late instances, MPPS COMPLETED (PS3.4 F.7.2)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import jobs, mpps, series, studies, utcnow
from dicom_node.assembly import StabilityMonitor
from dicom_node.scp import DicomNode
from dicom_node.scu import send_paths
from dicom_node.sop import MPPS_SOP_CLASS
from tests.dicom_node import synth
from tests.dicom_node.conftest import SCU_AE

pytestmark = pytest.mark.integration


def send(node: DicomNode, paths: list[Path]) -> None:
    res = send_paths("127.0.0.1", node.port, "COUNTYREAD", paths, calling_ae=SCU_AE)
    assert all(r.ok for r in res), res


def job_rows(ctx: AppContext) -> list:
    with ctx.db.begin() as conn:
        return list(conn.execute(select(jobs).order_by(jobs.c.id)).mappings())


def series_row(ctx: AppContext, uid: str):
    with ctx.db.begin() as conn:
        return conn.execute(select(series).where(series.c.series_uid == uid)).mappings().one()


def study_status(ctx: AppContext, uid: str) -> str:
    with ctx.db.begin() as conn:
        return str(conn.execute(select(studies.c.status)
                                .where(studies.c.study_uid == uid)).scalar())


def later(s: float = 3600) -> object:
    return utcnow() + timedelta(seconds=s)


def test_quiet_time_then_one_job_per_pipeline_and_late_instance_requeues_once(
    node: DicomNode, ctx: AppContext, workdir: Path
) -> None:
    paths = synth.write_ct_series(workdir / "ct", 6, size=16)
    send(node, paths[:5])
    ds = dcmread(paths[0], stop_before_pixels=True)
    mon = StabilityMonitor(ctx)
    assert mon.tick() == []  # not quiet yet (default 10 s)
    assert mon.tick(now=later()) == [ds.SeriesInstanceUID]
    assert mon.tick(now=later()) == []  # idempotent
    rows = job_rows(ctx)
    assert [(r["pipeline"], r["dedupe_key"]) for r in rows] == [
        ("ct_nodule", f"analyze:{ds.SeriesInstanceUID}:ct_nodule:0")
    ]
    assert series_row(ctx, ds.SeriesInstanceUID)["state"] == "stable"
    assert study_status(ctx, ds.StudyInstanceUID) == "queued"

    # The worker moved the study on; a late slice re-opens series and study.
    from sqlalchemy import update
    with ctx.db.begin() as conn:
        conn.execute(update(studies).values(status="ready"))
    send(node, [paths[5]])
    row = series_row(ctx, ds.SeriesInstanceUID)
    assert (row["state"], row["generation"], row["instance_count"]) == ("receiving", 1, 6)
    assert study_status(ctx, ds.StudyInstanceUID) == "received"
    send(node, [paths[5]])  # a re-send of the late slice changes nothing
    assert series_row(ctx, ds.SeriesInstanceUID)["generation"] == 1
    assert mon.tick(now=later()) == [ds.SeriesInstanceUID]
    assert mon.tick(now=later(7200)) == []
    keys = [r["dedupe_key"] for r in job_rows(ctx)]
    assert keys == [f"analyze:{ds.SeriesInstanceUID}:ct_nodule:0",
                    f"analyze:{ds.SeriesInstanceUID}:ct_nodule:1"]


def test_signed_study_keeps_status_on_late_instance(
    node: DicomNode, ctx: AppContext, workdir: Path
) -> None:
    paths = synth.write_ct_series(workdir / "ct", 3, size=16)
    send(node, paths[:2])
    StabilityMonitor(ctx).tick(now=later())
    from sqlalchemy import update
    with ctx.db.begin() as conn:
        conn.execute(update(studies).values(status="signed"))
    send(node, paths[2:])
    uid = dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    assert study_status(ctx, uid) == "signed"


def test_series_without_pipeline_gets_one_none_job(
    node: DicomNode, ctx: AppContext, workdir: Path
) -> None:
    ds = synth.ct_slice(0, study_uid=synth.uid("s"), series_uid=synth.uid("se"), size=16)
    ds.Modality = "OT"
    ds.StudyDescription = ds.SeriesDescription = ds.BodyPartExamined = "HAND"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    p = workdir / "sc.dcm"
    ds.save_as(p, enforce_file_format=True)
    send(node, [p])
    assert StabilityMonitor(ctx).tick(now=later()) == [ds.SeriesInstanceUID]
    rows = job_rows(ctx)
    assert [(r["pipeline"], r["dedupe_key"]) for r in rows] == [
        (None, f"analyze:{ds.SeriesInstanceUID}:none:0")
    ]


def _mpps_attrs(study_uid: str, series_uid: str, sops: list[str], state: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = state
    item = Dataset()
    item.StudyInstanceUID = study_uid
    ds.ScheduledStepAttributesSequence = [item]
    s = Dataset()
    s.SeriesInstanceUID = series_uid
    refs = []
    for sop in sops:
        r = Dataset()
        r.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        r.ReferencedSOPInstanceUID = sop
        refs.append(r)
    s.ReferencedImageSequence = refs
    ds.PerformedSeriesSequence = [s]
    return ds


def test_mpps_completed_makes_series_stable_early(
    node: DicomNode, ctx: AppContext, workdir: Path
) -> None:
    paths = synth.write_ct_series(workdir / "ct", 4, size=16)
    heads = [dcmread(p, stop_before_pixels=True) for p in paths]
    study, ser = heads[0].StudyInstanceUID, heads[0].SeriesInstanceUID
    sops = [h.SOPInstanceUID for h in heads]
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(MPPS_SOP_CLASS)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="COUNTYREAD")
    assert assoc.is_established
    mpps_uid = synth.uid("mpps", ser)
    try:
        status, _ = assoc.send_n_create(_mpps_attrs(study, ser, [], "IN PROGRESS"),
                                        MPPS_SOP_CLASS, mpps_uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_create(_mpps_attrs(study, ser, [], "IN PROGRESS"),
                                        MPPS_SOP_CLASS, mpps_uid)
        assert status.Status == 0x0111  # duplicate SOP instance
        status, _ = assoc.send_n_create(_mpps_attrs(study, ser, [], "COMPLETED"),
                                        MPPS_SOP_CLASS, synth.uid("mpps", "other"))
        assert status.Status == 0x0106  # PS3.4 F.7.2.1: created IN PROGRESS only
        status, _ = assoc.send_n_set(_mpps_attrs(study, ser, [], "COMPLETED"),
                                     MPPS_SOP_CLASS, synth.uid("mpps", "unknown"))
        assert status.Status == 0x0112  # no such SOP instance
        send(node, paths[:3])
        done = _mpps_attrs(study, ser, sops, "COMPLETED")
        del done.ScheduledStepAttributesSequence
        status, _ = assoc.send_n_set(done, MPPS_SOP_CLASS, mpps_uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(done, MPPS_SOP_CLASS, mpps_uid)
        assert status.Status == 0x0110 and status.ErrorID == 0xA710  # PS3.4 F.7.2.2
    finally:
        assoc.release()
        ae.shutdown()
    with ctx.db.begin() as conn:
        row = conn.execute(select(mpps)).mappings().one()
    assert row["status"] == "COMPLETED" and row["series"] == {ser: 4}
    mon = StabilityMonitor(ctx)
    assert mon.tick() == []  # 3 of 4 images: wait
    send(node, paths[3:])
    assert mon.tick() == [ser]  # complete per MPPS, long before the quiet time
    assert len(job_rows(ctx)) == 1


def test_monitor_thread_runs_and_reconciles(tmp_path: Path, workdir: Path) -> None:
    from countyread.nodes import add_node
    from tests.dicom_node.conftest import make_ctx

    ctx = make_ctx(tmp_path / "v", stable_quiet_s=0.5)
    add_node(ctx.db, name="t", ae_title=SCU_AE)
    node = DicomNode(ctx)
    node.start()
    mon = StabilityMonitor(ctx, interval_s=0.2)
    mon.start()
    try:
        send(node, synth.write_ct_series(workdir / "a", 2, size=16))
        import time
        deadline = time.monotonic() + 15
        while not job_rows(ctx) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(job_rows(ctx)) == 1
    finally:
        mon.stop()
        node.stop()
    # A crash between "stable" and "queued" leaves a stable series without a job.
    with ctx.db.begin() as conn:
        conn.execute(jobs.delete())
    assert StabilityMonitor(ctx).reconcile() == 1
    assert len(job_rows(ctx)) == 1
    ctx.close()
