"""Job queue: an interface and a durable local backend on the database.

Jobs are rows. A worker claims one by moving it from ``queued`` to ``running`` with a
lease; a crashed worker's lease expires and the job is claimable again, so jobs survive
restarts. ``dedupe_key`` makes enqueueing idempotent. A distributed backend (Celery on
Redis) implements the same :class:`JobQueue` protocol.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from countyread.db import Database, jobs, utcnow
from countyread.domain import JobState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    dedupe_key: str
    study_uid: str | None
    series_uid: str | None
    pipeline: str | None
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


class JobQueue(Protocol):
    def enqueue(
        self,
        kind: str,
        dedupe_key: str,
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
        pipeline: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> int | None: ...

    def claim(self, worker: str, kinds: tuple[str, ...] | None = None) -> Job | None: ...

    def finish(self, job_id: int, state: JobState, message: str | None = None) -> None: ...

    def defer(self, job_id: int, delay_s: float, message: str) -> None: ...


def _due(now: Any) -> Any:
    """Queued and due, or running with an expired lease (its worker died)."""
    return or_(
        and_(jobs.c.state == JobState.QUEUED.value, jobs.c.run_after <= now),
        and_(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_until < now),
    )


def default_worker_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{':' + suffix if suffix else ''}"


class LocalJobQueue:
    """Durable queue on the service database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, lease_s: float = 600.0) -> None:
        self.db = db
        self.lease = timedelta(seconds=lease_s)

    def enqueue(
        self,
        kind: str,
        dedupe_key: str,
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
        pipeline: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> int | None:
        """Insert a job unless one with ``dedupe_key`` exists; return its id or None."""
        try:
            with self.db.begin() as conn:
                res = conn.execute(
                    jobs.insert().values(
                        kind=kind,
                        dedupe_key=dedupe_key,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        pipeline=pipeline,
                        payload=payload or {},
                        state=JobState.QUEUED.value,
                        run_after=utcnow(),
                    )
                )
                pk = res.inserted_primary_key
                job_id = int(pk[0]) if pk else None
        except IntegrityError:
            return None
        logger.info(
            "job queued",
            extra={"job_id": job_id, "kind": kind, "series_uid": series_uid, "pipeline": pipeline},
        )
        if job_id is not None:
            self.queued(job_id, 0.0)
        return job_id

    def queued(self, job_id: int, delay_s: float) -> None:
        """Called after a job is committed as queued (due in ``delay_s``). Workers here poll
        the table, so nothing to do; a backend that pushes work to workers announces it."""

    def claim(self, worker: str, kinds: tuple[str, ...] | None = None) -> Job | None:
        """Claim the oldest due job (or one whose lease expired); None when idle."""
        due = _due(utcnow())
        return self._claim(worker, and_(due, jobs.c.kind.in_(kinds)) if kinds else due)

    def claim_job(self, job_id: int, worker: str) -> Job | None:
        """Claim this one job if it is due (a wake-up names it); None if it is not, e.g.
        another worker has it, it is done, or it was deferred past now."""
        return self._claim(worker, and_(jobs.c.id == job_id, _due(utcnow())))

    def _claim(self, worker: str, cond: Any) -> Job | None:
        now = utcnow()
        for _ in range(5):
            with self.db.begin() as conn:
                row = (
                    conn.execute(select(jobs).where(cond).order_by(jobs.c.id).limit(1))
                    .mappings()
                    .first()
                )
                if row is None:
                    return None
                # Optimistic claim: only one worker's UPDATE matches the old state/lease.
                res = conn.execute(
                    update(jobs)
                    .where(
                        and_(
                            jobs.c.id == row["id"],
                            jobs.c.state == row["state"],
                            jobs.c.attempts == row["attempts"],
                        )
                    )
                    .values(
                        state=JobState.RUNNING.value,
                        worker=worker,
                        lease_until=now + self.lease,
                        started_at=now,
                        attempts=row["attempts"] + 1,
                    )
                )
                if res.rowcount == 1:
                    return Job(
                        id=row["id"],
                        kind=row["kind"],
                        dedupe_key=row["dedupe_key"],
                        study_uid=row["study_uid"],
                        series_uid=row["series_uid"],
                        pipeline=row["pipeline"],
                        payload=dict(row["payload"] or {}),
                        attempts=row["attempts"] + 1,
                        max_attempts=row["max_attempts"],
                    )
        return None

    def finish(self, job_id: int, state: JobState, message: str | None = None) -> None:
        with self.db.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    state=state.value,
                    message=message,
                    finished_at=utcnow(),
                    lease_until=None,
                )
            )

    def defer(self, job_id: int, delay_s: float, message: str) -> None:
        """Put a claimed job back without counting the claim as an attempt."""
        with self.db.begin() as conn:
            conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.attempts > 0))
                .values(
                    state=JobState.QUEUED.value,
                    message=message,
                    lease_until=None,
                    run_after=utcnow() + timedelta(seconds=delay_s),
                    attempts=jobs.c.attempts - 1,
                )
            )
        self.queued(job_id, delay_s)

    def retry_later(self, job_id: int, delay_s: float, message: str) -> None:
        """Put a failed attempt back in the queue after ``delay_s``."""
        with self.db.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    state=JobState.QUEUED.value,
                    message=message,
                    lease_until=None,
                    run_after=utcnow() + timedelta(seconds=delay_s),
                )
            )
        self.queued(job_id, delay_s)
