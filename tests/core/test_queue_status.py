from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from countyread.context import AppContext
from countyread.db import analyses, jobs, studies, utcnow
from countyread.domain import JobState, StudyStatus
from countyread.settings import load_settings
from countyread.status import refresh_study_status


@pytest.fixture()
def ctx(tmp_path: Path):
    c = AppContext.create(load_settings(data_dir=tmp_path))
    yield c
    c.close()


def test_enqueue_is_idempotent_and_claim_is_exclusive(ctx: AppContext) -> None:
    q = ctx.queue
    first = q.enqueue("analyze", "analyze:1.2:ct_nodule:0", series_uid="1.2")
    assert first is not None
    assert q.enqueue("analyze", "analyze:1.2:ct_nodule:0", series_uid="1.2") is None
    job = q.claim("w1")
    assert job is not None and job.id == first and job.attempts == 1
    assert q.claim("w2") is None
    q.finish(job.id, JobState.DONE)
    assert q.claim("w2") is None


def test_expired_lease_is_reclaimed_after_a_crash(ctx: AppContext) -> None:
    q = ctx.queue
    q.enqueue("analyze", "k", series_uid="1.2")
    job = q.claim("crashed-worker")
    assert job is not None
    with ctx.db.begin() as conn:
        conn.execute(update(jobs).values(lease_until=utcnow() - timedelta(seconds=1)))
    again = q.claim("w2")
    assert again is not None and again.id == job.id and again.attempts == 2


def test_retry_later_delays_the_job(ctx: AppContext) -> None:
    q = ctx.queue
    q.enqueue("analyze", "k")
    job = q.claim("w")
    assert job is not None
    q.retry_later(job.id, 3600, "transient")
    assert q.claim("w") is None


def _study(ctx: AppContext, uid: str = "1.2.3") -> None:
    with ctx.db.begin() as conn:
        conn.execute(studies.insert().values(study_uid=uid, modalities="CT"))


def test_status_follows_jobs_then_analyses(ctx: AppContext) -> None:
    _study(ctx)
    ctx.queue.enqueue("analyze", "k", study_uid="1.2.3", series_uid="1.2.3.1")
    with ctx.db.begin() as conn:
        assert refresh_study_status(conn, ctx.settings, "1.2.3") == StudyStatus.QUEUED
    job = ctx.queue.claim("w")
    assert job is not None
    with ctx.db.begin() as conn:
        assert refresh_study_status(conn, ctx.settings, "1.2.3") == StudyStatus.ANALYZING
        conn.execute(
            analyses.insert().values(
                study_uid="1.2.3",
                series_uid="1.2.3.1",
                pipeline="ct_nodule",
                status="ready",
                urgency="urgent",
            )
        )
    ctx.queue.finish(job.id, JobState.DONE)
    with ctx.db.begin() as conn:
        assert refresh_study_status(conn, ctx.settings, "1.2.3") == StudyStatus.READY
        row = conn.execute(select(studies)).mappings().one()
    assert row["urgency"] == "urgent"
    expected = row["first_received_at"] + timedelta(seconds=ctx.settings.deadline_urgent_s)
    assert row["deadline_at"] == expected


def test_not_analyzable_reason_is_kept_and_review_status_untouched(ctx: AppContext) -> None:
    _study(ctx)
    with ctx.db.begin() as conn:
        conn.execute(
            analyses.insert().values(
                study_uid="1.2.3",
                series_uid="1.2.3.1",
                pipeline="ct_nodule",
                status="not_analyzable",
                reason="slice thickness 10 mm > 5 mm",
            )
        )
        assert refresh_study_status(conn, ctx.settings, "1.2.3") == StudyStatus.NOT_ANALYZABLE
        assert conn.execute(select(studies.c.reason)).scalar_one() == "slice thickness 10 mm > 5 mm"
        conn.execute(update(studies).values(status="signed"))
        assert refresh_study_status(conn, ctx.settings, "1.2.3") == StudyStatus.SIGNED
