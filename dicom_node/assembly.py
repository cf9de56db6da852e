"""Study assembly: decide when a series is complete and queue its analysis.

DICOM has no "series complete" message in C-STORE, so a series is called stable after
``stable_quiet_s`` without a new instance, or earlier when the scanner's MPPS COMPLETED
(PS3.4 F.7.2.2) lists as many images for it as we hold. Each stable generation of a
series gets one job per pipeline; the generation in the dedupe key makes a late instance
re-queue exactly once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update

from countyread.context import AppContext
from countyread.db import instances, jobs, mpps, series, studies, utcnow
from countyread.domain import StudyStatus
from countyread.routing import SeriesHeader, pipelines_for

logger = logging.getLogger(__name__)

#: How far back completed MPPS steps are considered; older ones have done their job.
MPPS_WINDOW = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Candidate:
    series_uid: str
    study_uid: str
    generation: int
    instance_count: int
    reason: str  # "quiet" or "mpps"


def job_key(series_uid: str, pipeline: str | None, generation: int) -> str:
    return f"analyze:{series_uid}:{pipeline or 'none'}:{generation}"


class StabilityMonitor:
    """Background ticker; ``tick()`` is one pass and is what tests call."""

    def __init__(self, ctx: AppContext, interval_s: float = 1.0) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stability-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        try:
            self.reconcile()
        except Exception:
            logger.exception("stability reconcile failed")
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                # A database hiccup must not end assembly for the life of the process.
                logger.exception("stability tick failed")

    def tick(self, now: datetime | None = None) -> list[str]:
        """One pass: mark due series stable and queue them; return their UIDs."""
        now = now or utcnow()
        made: list[str] = []
        for cand in self._candidates(now):
            if self._mark_stable(cand, now):
                self._enqueue(cand.series_uid, cand.study_uid, cand.generation)
                made.append(cand.series_uid)
                logger.info("series stable", extra={"series_uid": cand.series_uid,
                                                     "generation": cand.generation,
                                                     "instances": cand.instance_count,
                                                     "reason": cand.reason})
        return made

    def reconcile(self) -> int:
        """Queue jobs for stable series that have none (a crash between the two steps)."""
        n = 0
        with self.ctx.db.begin() as conn:
            rows = conn.execute(
                select(series.c.series_uid, series.c.study_uid, series.c.generation)
                .where(series.c.state == "stable")
            ).all()
        for uid, study_uid, gen in rows:
            with self.ctx.db.begin() as conn:
                has = conn.execute(
                    select(jobs.c.id).where(and_(
                        jobs.c.series_uid == uid,
                        jobs.c.dedupe_key.like(f"analyze:{uid}:%:{gen}"),
                    )).limit(1)
                ).first()
            if has is None:
                self._enqueue(uid, study_uid, gen)
                n += 1
        if n:
            logger.info("re-queued stable series without jobs", extra={"count": n})
        return n

    def _candidates(self, now: datetime) -> list[Candidate]:
        cutoff = now - timedelta(seconds=self.ctx.settings.stable_quiet_s)
        cols = (series.c.series_uid, series.c.study_uid, series.c.generation,
                series.c.instance_count)
        out: dict[str, Candidate] = {}
        with self.ctx.db.begin() as conn:
            for uid, study, gen, count in conn.execute(
                select(*cols).where(and_(series.c.state == "receiving",
                                         series.c.last_received_at <= cutoff))
            ):
                out[uid] = Candidate(uid, study, gen, count, "quiet")
            expected = self._mpps_counts(conn, now)
            if expected:
                for uid, study, gen, count in conn.execute(
                    select(*cols).where(and_(series.c.state == "receiving",
                                             series.c.series_uid.in_(list(expected))))
                ):
                    if uid not in out and count >= expected[uid]:
                        out[uid] = Candidate(uid, study, gen, count, "mpps")
        return list(out.values())

    @staticmethod
    def _mpps_counts(conn: Any, now: datetime) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (per_series,) in conn.execute(
            select(mpps.c.series).where(and_(mpps.c.status == "COMPLETED",
                                             mpps.c.updated_at >= now - MPPS_WINDOW))
        ):
            for uid, n in (per_series or {}).items():
                if int(n) > 0:
                    counts[uid] = max(counts.get(uid, 0), int(n))
        return counts

    def _mark_stable(self, cand: Candidate, now: datetime) -> bool:
        # Optimistic: only if no instance arrived since we looked (count unchanged).
        with self.ctx.db.begin() as conn:
            res = conn.execute(
                update(series).where(and_(
                    series.c.series_uid == cand.series_uid,
                    series.c.state == "receiving",
                    series.c.generation == cand.generation,
                    series.c.instance_count == cand.instance_count,
                )).values(state="stable", stable_at=now)
            )
        return bool(res.rowcount == 1)

    def _header(self, series_uid: str) -> SeriesHeader:
        with self.ctx.db.begin() as conn:
            srow = conn.execute(
                select(series.c.modality, series.c.series_description, series.c.body_part,
                       studies.c.study_description)
                .select_from(series.join(studies, series.c.study_uid == studies.c.study_uid))
                .where(series.c.series_uid == series_uid)
            ).one()
            sop_class = conn.execute(
                select(instances.c.sop_class_uid)
                .where(instances.c.series_uid == series_uid).limit(1)
            ).scalar()
        return SeriesHeader(modality=srow.modality, sop_class_uid=sop_class,
                            series_description=srow.series_description,
                            body_part=srow.body_part, study_description=srow.study_description)

    def _enqueue(self, series_uid: str, study_uid: str, generation: int) -> None:
        pipelines: tuple[str | None, ...] = pipelines_for(self._header(series_uid)) or (None,)
        for pipeline in pipelines:
            self.ctx.queue.enqueue(
                "analyze", job_key(series_uid, pipeline, generation), study_uid=study_uid,
                series_uid=series_uid, pipeline=pipeline, payload={"generation": generation},
            )
        with self.ctx.db.begin() as conn:
            conn.execute(
                update(studies)
                .where(and_(studies.c.study_uid == study_uid,
                            studies.c.status == StudyStatus.RECEIVED.value))
                .values(status=StudyStatus.QUEUED.value)
            )
