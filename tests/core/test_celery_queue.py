"""Celery on a real Redis as the wake-up channel of the database job queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import jobs, series, studies
from countyread.queue import Job
from countyread.settings import load_settings
from tests.conftest import require

REDIS_URL = "redis://127.0.0.1:6379/15"


def _redis_up() -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    require(_redis_up(), f"Redis not reachable at {REDIS_URL}")
    settings = load_settings(
        data_dir=tmp_path,
        queue_backend="celery",
        broker_url=REDIS_URL,
        celery_queue=f"countyread.test.{uuid.uuid4().hex[:8]}",  # no cross-talk between runs
    )
    c = AppContext.create(settings)
    with c.db.begin() as conn:
        conn.execute(studies.insert().values(study_uid="1.2.3", modalities="SR"))
        for uid in ("1.2.3.1", "1.2.3.2"):
            conn.execute(
                series.insert().values(
                    series_uid=uid, study_uid="1.2.3", modality="SR", state="stable"
                )
            )
    yield c
    c.close()


def _states(ctx: AppContext) -> dict[int, str]:
    with ctx.db.begin() as conn:
        return {int(i): str(s) for i, s in conn.execute(select(jobs.c.id, jobs.c.state))}


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def _worker(ctx: AppContext, ran: list[int]) -> object:
    """A real Celery worker (thread pool) on the test queue; records each job it ran and
    runs the real analysis worker on it (an SR series: no pipeline, recorded honestly)."""
    from celery.contrib.testing.worker import start_worker

    from countyread.celery_queue import CeleryJobQueue, register_task
    from inference.worker import AnalysisWorker

    assert isinstance(ctx.queue, CeleryJobQueue)
    analysis = AnalysisWorker(ctx)

    def run(job: Job) -> None:
        ran.append(job.id)
        analysis.process(job)

    register_task(ctx.queue.app, ctx.queue, run, "test-celery")
    return start_worker(
        ctx.queue.app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=10.0,
    )


def test_enqueued_job_runs_once_on_a_celery_worker(ctx: AppContext) -> None:
    from countyread.celery_queue import CeleryJobQueue

    assert isinstance(ctx.queue, CeleryJobQueue)
    job_id = ctx.queue.enqueue(
        "analyze", "analyze:1.2.3.1:none:0", study_uid="1.2.3", series_uid="1.2.3.1"
    )
    assert job_id is not None
    # The same wake-up published twice more (a redelivery, a second sweep): still one run.
    assert ctx.queue.wake(job_id) and ctx.queue.wake(job_id)
    ran: list[int] = []
    with _worker(ctx, ran):  # type: ignore[attr-defined]
        assert _wait(lambda: _states(ctx)[job_id] == "no_pipeline")
        time.sleep(1.0)  # let the duplicate wake-ups arrive and be turned away
    assert ran == [job_id]
    with ctx.db.begin() as conn:
        study = conn.execute(select(studies)).mappings().one()
    assert study["status"] == "not_analyzable"


def test_lost_wake_up_is_recovered_by_the_sweep(ctx: AppContext, tmp_path: Path) -> None:
    """The broker is down when the job is queued: the row is kept, a warning logged, and
    the sweep publishes the wake-up once the broker is back."""
    from countyread.celery_queue import CeleryJobQueue

    down = load_settings(
        data_dir=tmp_path,
        queue_backend="celery",
        broker_url="redis://127.0.0.1:9/0",  # nothing listens on the discard port
        celery_queue=ctx.settings.celery_queue,
    )
    offline = CeleryJobQueue(ctx.db, down)
    t0 = time.monotonic()
    job_id = offline.enqueue(
        "analyze", "analyze:1.2.3.2:none:0", study_uid="1.2.3", series_uid="1.2.3.2"
    )
    assert job_id is not None and time.monotonic() - t0 < 30.0
    assert _states(ctx) == {job_id: "queued"}
    assert isinstance(ctx.queue, CeleryJobQueue)
    ran: list[int] = []
    with _worker(ctx, ran):  # type: ignore[attr-defined]
        time.sleep(1.0)
        assert ran == []  # no message was ever published
        assert ctx.queue.sweep(grace_s=0.0) == 1
        assert _wait(lambda: _states(ctx)[job_id] == "no_pipeline")
    assert ran == [job_id]
    assert ctx.queue.sweep(grace_s=0.0) == 0  # nothing is waiting any more


def test_deferred_job_is_woken_when_due(ctx: AppContext) -> None:
    from countyread.celery_queue import CeleryJobQueue

    assert isinstance(ctx.queue, CeleryJobQueue)
    job_id = ctx.queue.enqueue(
        "analyze", "analyze:1.2.3.1:none:0", study_uid="1.2.3", series_uid="1.2.3.1"
    )
    assert job_id is not None
    claimed = ctx.queue.claim_job(job_id, "console")
    assert claimed is not None and ctx.queue.claim_job(job_id, "other") is None
    ctx.queue.defer(job_id, 2.0, "waiting for the study's other series")
    assert ctx.queue.claim_job(job_id, "early") is None  # not due yet
    ran: list[int] = []
    t0 = time.monotonic()
    with _worker(ctx, ran):  # type: ignore[attr-defined]
        assert _wait(lambda: _states(ctx)[job_id] == "no_pipeline")
    # The enqueue wake-up found it claimed, the countdown wake-up ran it when due.
    assert ran == [job_id] and time.monotonic() - t0 >= 1.0


def test_doctor_sees_the_broker(ctx: AppContext) -> None:
    from countyread.doctor import Level, check_queue

    checks = {c.name: c for c in check_queue(ctx)}
    assert checks["broker"].level is Level.OK and "127.0.0.1:6379/15" in checks["broker"].detail
    assert checks["job queue"].detail == "celery: 0 queued"
