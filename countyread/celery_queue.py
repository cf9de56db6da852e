"""Celery on Redis as the wake-up channel of the database job queue (``queue_backend=celery``).

The job table stays the one record of what must be analysed: enqueueing inserts the
row (durable, deduplicated, visible to the worklist as ``queued``) and only then
publishes a message naming the job. A Celery worker on any machine claims exactly that
job through the database lease, so a message delivered twice, late or to two workers
still runs the job once, and a message Redis loses (restart without persistence, a
broker outage at enqueue time) only delays the job until the sweep re-publishes it.
What Celery adds over the polling workers: jobs start within milliseconds on GPU boxes
across the network, and the pool there decides how many run at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import and_, or_, select

from countyread.db import Database, jobs, utcnow
from countyread.domain import JobState
from countyread.queue import Job, LocalJobQueue
from countyread.settings import Settings

logger = logging.getLogger(__name__)

TASK_NAME = "countyread.run_job"
PUBLISH_TIMEOUT_S = 3.0
# A due job still queued this long after it became due has lost its wake-up (or every
# worker was busy, when a second one is harmless: the claim decides).
SWEEP_GRACE_S = 10.0


def make_app(settings: Settings) -> Celery:
    """The Celery app: one task, late acknowledgement, one message per worker slot."""
    app = Celery("countyread", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_ignore_result=True,
        # Acknowledge after the job ran: a worker killed mid-job leaves the message for
        # another (the database lease then decides who runs it).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=PUBLISH_TIMEOUT_S,
        broker_transport_options={"max_retries": 1, "socket_timeout": PUBLISH_TIMEOUT_S},
    )
    return app


class CeleryJobQueue(LocalJobQueue):
    """The database queue, plus a Redis message per job that becomes due."""

    def __init__(self, db: Database, settings: Settings, app: Celery | None = None) -> None:
        super().__init__(db, settings.job_lease_s)
        self.settings = settings
        self.app = app or make_app(settings)

    def queued(self, job_id: int, delay_s: float) -> None:
        self.wake(job_id, delay_s)

    def wake(self, job_id: int, countdown_s: float = 0.0) -> bool:
        """Publish the job's wake-up; False (logged) when the broker cannot take it."""
        try:
            self.app.send_task(
                TASK_NAME,
                args=[job_id],
                countdown=countdown_s or None,
                queue=self.settings.celery_queue,
                retry=False,
            )
        except Exception as exc:  # the row is committed: the sweep publishes it later
            logger.warning(
                "job wake-up not published; the sweep will retry",
                extra={"job_id": job_id, "error": type(exc).__name__},
            )
            return False
        return True

    def sweep(self, grace_s: float = SWEEP_GRACE_S) -> int:
        """Re-publish wake-ups for jobs due for over ``grace_s`` and still waiting, and for
        jobs whose worker's lease ran out; returns how many were published."""
        now = utcnow()
        late = now - timedelta(seconds=grace_s)
        cond = or_(
            and_(jobs.c.state == JobState.QUEUED.value, jobs.c.run_after <= late),
            and_(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_until < now),
        )
        with self.db.begin() as conn:
            ids = [int(r) for r in conn.execute(select(jobs.c.id).where(cond)).scalars()]
        published = sum(self.wake(job_id) for job_id in ids)
        if ids:
            logger.info("job sweep", extra={"waiting": len(ids), "published": published})
        return published


class Sweeper:
    """A thread that calls :meth:`CeleryJobQueue.sweep` every ``interval_s``."""

    def __init__(self, queue: CeleryJobQueue, interval_s: float) -> None:
        self.queue = queue
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.queue.sweep()
            except Exception:  # a database hiccup must not end the sweeping
                logger.exception("job sweep failed")


def register_task(app: Celery, queue: LocalJobQueue, run: Callable[[Job], None], name: str) -> Any:
    """Register the task that claims the named job and runs it with ``run``."""

    # shared=False: the task belongs to this app only (tests and embedders make several).
    @app.task(name=TASK_NAME, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def run_job(job_id: int) -> str:
        job = queue.claim_job(int(job_id), name)
        if job is None:
            # Already done, running elsewhere, or deferred: the claim is the arbiter.
            return "not due"
        run(job)
        return "ran"

    return run_job
