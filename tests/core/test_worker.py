from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import jobs, series, studies, utcnow
from countyread.settings import load_settings
from inference.registry import PipelineRegistry
from inference.worker import AnalysisWorker


@pytest.fixture()
def ctx(tmp_path: Path):
    c = AppContext.create(load_settings(data_dir=tmp_path))
    with c.db.begin() as conn:
        conn.execute(studies.insert().values(study_uid="1.2.3", modalities="SR"))
        conn.execute(series.insert().values(series_uid="1.2.3.1", study_uid="1.2.3",
                                            modality="SR", state="stable"))
    yield c
    c.close()


def test_series_without_pipeline_is_recorded_honestly(ctx: AppContext) -> None:
    ctx.queue.enqueue("analyze", "analyze:1.2.3.1:none:0", study_uid="1.2.3",
                      series_uid="1.2.3.1", pipeline=None)
    worker = AnalysisWorker(ctx)
    assert worker.run_once() is True
    assert worker.run_once() is False
    with ctx.db.begin() as conn:
        job = conn.execute(select(jobs)).mappings().one()
        study = conn.execute(select(studies)).mappings().one()
    assert job["state"] == "no_pipeline"
    assert job["message"] == "no pipeline for this series"
    assert study["status"] == "not_analyzable"
    assert study["reason"] == "no pipeline for this series"
    assert study["urgency"] == "routine" and study["deadline_at"] is not None


def test_unknown_pipeline_name_is_not_a_crash(ctx: AppContext) -> None:
    ctx.queue.enqueue("analyze", "analyze:1.2.3.1:mammo:0", study_uid="1.2.3",
                      series_uid="1.2.3.1", pipeline="mammo")
    worker = AnalysisWorker(ctx, PipelineRegistry(ctx.settings))
    assert worker.run_once()
    with ctx.db.begin() as conn:
        job = conn.execute(select(jobs)).mappings().one()
    assert job["state"] == "no_pipeline"
    assert "mammo: unknown pipeline" in job["message"]


def test_two_series_stable_together_are_analysed_once(ctx: AppContext) -> None:
    with ctx.db.begin() as conn:
        conn.execute(series.insert().values(series_uid="1.2.3.2", study_uid="1.2.3",
                                            modality="SR", state="stable"))
    first = ctx.queue.enqueue("analyze", "analyze:1.2.3.1:mammo:0", study_uid="1.2.3",
                              series_uid="1.2.3.1", pipeline="mammo")
    second = ctx.queue.enqueue("analyze", "analyze:1.2.3.2:mammo:0", study_uid="1.2.3",
                               series_uid="1.2.3.2", pipeline="mammo")
    worker = AnalysisWorker(ctx)
    while worker.run_once():
        pass
    with ctx.db.begin() as conn:
        states = dict(conn.execute(select(jobs.c.id, jobs.c.state)).all())
    assert states == {first: "superseded", second: "no_pipeline"}


def test_a_job_waits_while_another_series_of_the_study_arrives(ctx: AppContext) -> None:
    """The first series became stable while the console still sends the second: the job
    is put back without using an attempt; the second's job then supersedes it."""
    with ctx.db.begin() as conn:
        conn.execute(series.insert().values(series_uid="1.2.3.2", study_uid="1.2.3",
                                            modality="SR", state="receiving",
                                            last_received_at=utcnow()))
    first = ctx.queue.enqueue("analyze", "analyze:1.2.3.1:mammo:0", study_uid="1.2.3",
                              series_uid="1.2.3.1", pipeline="mammo")
    worker = AnalysisWorker(ctx)
    assert worker.run_once() is True
    with ctx.db.begin() as conn:
        job = conn.execute(select(jobs).where(jobs.c.id == first)).mappings().one()
    assert (job["state"], job["attempts"]) == ("queued", 0)
    assert job["run_after"].replace(tzinfo=None) > utcnow().replace(tzinfo=None)
    assert worker.run_once() is False  # not due yet
    with ctx.db.begin() as conn:
        conn.execute(series.update().where(series.c.series_uid == "1.2.3.2")
                     .values(state="stable"))
        conn.execute(jobs.update().where(jobs.c.id == first).values(run_after=utcnow()))
    second = ctx.queue.enqueue("analyze", "analyze:1.2.3.2:mammo:0", study_uid="1.2.3",
                               series_uid="1.2.3.2", pipeline="mammo")
    while worker.run_once():
        pass
    with ctx.db.begin() as conn:
        states = dict(conn.execute(select(jobs.c.id, jobs.c.state)).all())
    assert states == {first: "superseded", second: "no_pipeline"}


def test_a_stale_receiving_series_does_not_hold_the_job(ctx: AppContext) -> None:
    """A sender that vanished long ago (node down, monitor not run): analyse anyway."""
    with ctx.db.begin() as conn:
        conn.execute(series.insert().values(
            series_uid="1.2.3.2", study_uid="1.2.3", modality="SR", state="receiving",
            last_received_at=utcnow() - timedelta(hours=1)))
    first = ctx.queue.enqueue("analyze", "analyze:1.2.3.1:mammo:0", study_uid="1.2.3",
                              series_uid="1.2.3.1", pipeline="mammo")
    assert AnalysisWorker(ctx).run_once() is True
    with ctx.db.begin() as conn:
        job = conn.execute(select(jobs).where(jobs.c.id == first)).mappings().one()
    assert (job["state"], job["attempts"]) == ("no_pipeline", 1)


def test_an_older_job_after_a_newer_one_ran_is_superseded(ctx: AppContext) -> None:
    """The deferred first job comes due after the second series' job has run."""
    with ctx.db.begin() as conn:
        conn.execute(series.insert().values(series_uid="1.2.3.2", study_uid="1.2.3",
                                            modality="SR", state="stable"))
    first = ctx.queue.enqueue("analyze", "analyze:1.2.3.1:mammo:0", study_uid="1.2.3",
                              series_uid="1.2.3.1", pipeline="mammo")
    second = ctx.queue.enqueue("analyze", "analyze:1.2.3.2:mammo:0", study_uid="1.2.3",
                               series_uid="1.2.3.2", pipeline="mammo")
    with ctx.db.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == first)
                     .values(run_after=utcnow() + timedelta(hours=1)))
    worker = AnalysisWorker(ctx)
    assert worker.run_once() is True and worker.run_once() is False
    with ctx.db.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == first).values(run_after=utcnow()))
    assert worker.run_once() is True
    with ctx.db.begin() as conn:
        states = dict(conn.execute(select(jobs.c.id, jobs.c.state)).all())
    assert states == {first: "superseded", second: "no_pipeline"}
