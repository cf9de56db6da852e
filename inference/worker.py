"""Analysis worker: claims ``analyze`` jobs, runs the pipeline, persists the result.

Pipelines are pure with respect to the database; everything that touches the database
or writes artifacts happens here, so a pipeline can be tested on its own.
"""

from __future__ import annotations

import argparse
import io
import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import and_, delete, select, update

from countyread.context import AppContext
from countyread.db import analyses, findings, instances, jobs, series, studies, utcnow
from countyread.domain import AnalysisResult, JobState, StudyStatus
from countyread.errors import NotAnalyzableError
from countyread.logs import configure_logging
from countyread.queue import Job, default_worker_name
from countyread.status import REVIEW_STATUSES, refresh_study_status
from countyread.store import write_durable
from inference.pipeline import PipelineOutput, SeriesInput, StudyInput
from inference.registry import PipelineRegistry

logger = logging.getLogger(__name__)

_RETRY_BASE_S = 5.0
#: How long a job waits before looking again at a sibling series still arriving.
_SIBLING_WAIT_S = 5.0


class AnalysisWorker:
    """One worker thread; several may run in one process or across processes."""

    def __init__(
        self, ctx: AppContext, registry: PipelineRegistry | None = None, name: str = ""
    ) -> None:
        self.ctx = ctx
        self.registry = registry or PipelineRegistry(ctx.settings)
        self.name = default_worker_name(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loop -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"worker-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        self.warm_up()
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the loop must survive a database hiccup
                logger.exception("worker loop error")
                worked = False
            if not worked:
                self._stop.wait(0.5)

    def warm_up(self) -> None:
        """Create every installed pipeline now: the ONNX sessions (and the execution
        provider they run on, logged once) are ready before the first study arrives."""
        from inference.registry import PIPELINES

        for name in PIPELINES:
            if self._stop.is_set():
                return
            try:
                self.registry.get(name)
            except Exception:  # a broken model is reported here and again per job
                logger.exception("pipeline could not be created", extra={"pipeline": name})

    def run_once(self) -> bool:
        """Claim and process one job; False when the queue had nothing due."""
        job = self.ctx.queue.claim(self.name, kinds=("analyze",))
        if job is None:
            return False
        self.process(job)
        return True

    # -- one job ----------------------------------------------------------------------
    def process(self, job: Job) -> None:
        extra = {"job_id": job.id, "series_uid": job.series_uid, "pipeline": job.pipeline}
        study_uid = job.study_uid
        if study_uid is None or job.series_uid is None:
            self.ctx.queue.finish(job.id, JobState.FAILED, "job without study/series")
            return
        self._refresh(study_uid)
        if job.pipeline is None:
            self._finish(job, JobState.NO_PIPELINE, "no pipeline for this series")
            return
        if self._superseded(job):
            # Series of one study often become stable in the same tick; the newest job
            # sees all of them, so analysing the study once per series is wasted work.
            self._finish(job, JobState.SUPERSEDED, "a later job analyses this study")
            return
        if self._sibling_arriving(job):
            # A console sends a study's series one after another, so the first becomes
            # stable while the next still arrives; analysing now would pick among the
            # series seen so far and run again minutes later. Its stability queues a newer
            # job that supersedes this one (or this one runs once it has settled).
            self.ctx.queue.defer(job.id, _SIBLING_WAIT_S, "waiting for the study's other series")
            return
        pipeline = self.registry.get(job.pipeline)
        if pipeline is None:
            why = self.registry.why_missing(job.pipeline)
            self._finish(
                job, JobState.NO_PIPELINE, f"no pipeline for this series ({job.pipeline}: {why})"
            )
            return
        t0 = time.perf_counter()
        try:
            study_input = self._study_input(study_uid, job.series_uid)
            output = pipeline.analyze(study_input)
            if job.pipeline == "ct_nodule":
                output = self._compare_with_prior(study_uid, output)
        except NotAnalyzableError as exc:
            reason = str(exc)
            self._record(job, status=StudyStatus.NOT_ANALYZABLE, reason=reason)
            self._finish(job, JobState.NOT_ANALYZABLE, reason)
            logger.info("not analyzable", extra={**extra, "reason": reason})
            return
        except Exception as exc:
            logger.exception("analysis failed", extra=extra)
            reason = f"internal error: {type(exc).__name__}: {exc}"[:500]
            if job.attempts < job.max_attempts:
                self.ctx.queue.retry_later(job.id, _RETRY_BASE_S * 2 ** (job.attempts - 1), reason)
                self._refresh(study_uid)
                return
            self._record(job, status=StudyStatus.FAILED, reason=reason)
            self._finish(job, JobState.FAILED, reason)
            return
        duration_ms = (time.perf_counter() - t0) * 1000
        self._record(job, status=StudyStatus.READY, output=output)
        self._finish(job, JobState.DONE, None)
        logger.info(
            "analysis done",
            extra={
                **extra,
                "duration_ms": round(duration_ms),
                "findings": len(output.result.findings),
            },
        )

    def _compare_with_prior(self, study_uid: str, output: PipelineOutput) -> PipelineOutput:
        """Follow-up CT: change, VDT and change-aware Lung-RADS against the prior study.

        A comparison that fails leaves the baseline result as it is: a missing
        comparison is said in the notes, never a reason to lose the analysis.
        """
        # Imported here: the worker must not load a pipeline package that is not used.
        from inference.ct_nodule.priors import apply as apply_prior
        from inference.prior_lookup import find_prior, z_range_of

        try:
            found = find_prior(self.ctx, study_uid)
            if found is None:
                return output
            prior, current_date = found
            arrays = dict(output.arrays)
            z = None
            if "geometry" in arrays and "slice_sop_uids" in arrays:
                z = z_range_of(np.asarray(arrays["geometry"]), len(arrays["slice_sop_uids"]))
            result = apply_prior(output.result, prior, current_date, z)
        except Exception as exc:
            logger.exception("prior comparison failed", extra={"study_uid": study_uid})
            note = f"prior comparison failed: {type(exc).__name__}"
            result = replace(output.result, notes=(*output.result.notes, note))
        return replace(output, result=result)

    def _sibling_arriving(self, job: Job) -> bool:
        """Whether another series of the study is still receiving instances.

        Only a series that received something lately counts: a sender that went away
        leaves its series 'receiving' until the stability monitor runs, and a worker
        running without the node must not wait on it for ever.
        """
        recent = utcnow() - timedelta(seconds=self.ctx.settings.stable_quiet_s + _SIBLING_WAIT_S)
        with self.ctx.db.begin() as conn:
            row = conn.execute(
                select(series.c.series_uid).where(and_(
                    series.c.study_uid == job.study_uid,
                    series.c.series_uid != job.series_uid,
                    series.c.state == "receiving",
                    series.c.last_received_at >= recent,
                )).limit(1)
            ).first()
        return row is not None

    def _superseded(self, job: Job) -> bool:
        """True when a newer job analyses (or analysed) the same study with this pipeline.

        A newer job is queued when a series became stable after this one's, so it sees
        this job's series too (a late instance re-opens a series and queues a newer job
        still); whether it waits, runs or has finished, this one adds nothing.
        """
        with self.ctx.db.begin() as conn:
            newer = conn.execute(
                select(jobs.c.id).where(and_(
                    jobs.c.study_uid == job.study_uid, jobs.c.pipeline == job.pipeline,
                    jobs.c.kind == job.kind, jobs.c.id > job.id,
                )).limit(1)
            ).first()
        return newer is not None

    def _finish(self, job: Job, state: JobState, message: str | None) -> None:
        self.ctx.queue.finish(job.id, state, message)
        assert job.study_uid is not None
        self._refresh(job.study_uid)

    def _refresh(self, study_uid: str) -> None:
        with self.ctx.db.begin() as conn:
            refresh_study_status(conn, self.ctx.settings, study_uid)

    def _study_input(self, study_uid: str, trigger: str) -> StudyInput:
        root = self.ctx.store.root
        with self.ctx.db.begin() as conn:
            rows = (
                conn.execute(
                    select(series)
                    .where(series.c.study_uid == study_uid)
                    .order_by(series.c.series_number, series.c.series_uid)
                )
                .mappings()
                .all()
            )
            out = []
            for s in rows:
                if s["state"] != "stable" and s["series_uid"] != trigger:
                    continue
                paths = (
                    conn.execute(
                        select(instances.c.path)
                        .where(instances.c.series_uid == s["series_uid"])
                        .order_by(instances.c.instance_number, instances.c.sop_instance_uid)
                    )
                    .scalars()
                    .all()
                )
                out.append(
                    SeriesInput(
                        series_uid=s["series_uid"],
                        modality=s["modality"],
                        series_description=s["series_description"],
                        body_part=s["body_part"],
                        paths=tuple(root / p for p in paths),
                    )
                )
        return StudyInput(study_uid=study_uid, trigger_series_uid=trigger, series=tuple(out))

    def _record(
        self,
        job: Job,
        *,
        status: StudyStatus,
        reason: str | None = None,
        output: PipelineOutput | None = None,
    ) -> None:
        """Persist one analysis (and its findings and artifacts) in one transaction."""
        assert job.study_uid is not None and job.series_uid is not None
        result: AnalysisResult | None = output.result if output else None
        with self.ctx.db.begin() as conn:
            study = conn.execute(
                select(studies.c.status).where(studies.c.study_uid == job.study_uid)
            ).scalar_one()
            res = conn.execute(
                analyses.insert().values(
                    study_uid=job.study_uid,
                    series_uid=result.series_uid if result else job.series_uid,
                    pipeline=job.pipeline,
                    job_id=job.id,
                    status=status.value,
                    reason=reason,
                    urgency=result.urgency.value if result else None,
                    category=result.category if result else None,
                    recommendation=result.recommendation if result else None,
                    models=[
                        {"name": m.name, "version": m.version, "sha256": m.sha256}
                        for m in (result.models if result else ())
                    ],
                    notes=list(result.notes) if result else [],
                    timings_ms=dict(result.timings_ms) if result else {},
                )
            )
            pk = res.inserted_primary_key
            assert pk is not None
            analysis_id = int(pk[0])
            if output is None or result is None:
                return
            art_dir = self.ctx.settings.results_dir / job.study_uid / f"analysis-{analysis_id}"
            _write_artifacts(art_dir, output)
            conn.execute(
                update(analyses)
                .where(analyses.c.id == analysis_id)
                .values(artifacts_dir=str(art_dir))
            )
            if StudyStatus(study) in REVIEW_STATUSES:
                # A radiologist is already reviewing: keep their findings, flag the re-run.
                logger.warning(
                    "re-analysis during review kept aside",
                    extra={"study_uid": job.study_uid, "analysis_id": analysis_id},
                )
                return
            # Replace unreviewed AI findings of earlier runs of this pipeline.
            old = select(analyses.c.id).where(
                and_(
                    analyses.c.study_uid == job.study_uid,
                    analyses.c.pipeline == job.pipeline,
                    analyses.c.id != analysis_id,
                )
            )
            conn.execute(
                delete(findings).where(
                    and_(
                        findings.c.analysis_id.in_(old),
                        findings.c.verdict == "pending",
                        findings.c.source == "ai",
                    )
                )
            )
            for f in result.findings:
                conn.execute(
                    findings.insert().values(
                        study_uid=job.study_uid,
                        analysis_id=analysis_id,
                        series_uid=f.series_uid,
                        sop_instance_uid=f.sop_instance_uid,
                        kind=f.kind,
                        source="ai",
                        probability=float(f.probability),
                        center_x=float(f.center_lps[0]),
                        center_y=float(f.center_lps[1]),
                        center_z=float(f.center_lps[2]),
                        measurements=[
                            {"name": m.name, "value": float(m.value), "unit": m.unit}
                            for m in f.measurements
                        ],
                        attributes=dict(f.attributes),
                        category=f.category,
                        model=(
                            {
                                "name": f.model.name,
                                "version": f.model.version,
                                "sha256": f.model.sha256,
                            }
                            if f.model
                            else None
                        ),
                        key_image=f.key_image,
                        verdict="pending",
                        revision=0,
                    )
                )


def _write_artifacts(art_dir: Path, output: PipelineOutput) -> None:
    art_dir.mkdir(parents=True, exist_ok=True)
    for name, rgb in output.images:
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"bad artifact name {name!r}")
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
        write_durable(art_dir / f"{name}.png", buf.getvalue())
    if output.arrays:
        buf = io.BytesIO()
        arrays: dict[str, Any] = dict(output.arrays)
        np.savez_compressed(buf, **arrays)
        write_durable(art_dir / "arrays.npz", buf.getvalue())


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread worker",
        description="Run analysis workers: claim 'analyze' jobs from the queue, run the "
        "pipeline (CT nodule, CTA, DR) and store the results for review. With "
        "COUNTYREAD_QUEUE_BACKEND=celery the workers take their jobs from Redis wake-ups "
        "(COUNTYREAD_BROKER_URL) instead of polling the database. Stops on Ctrl-C.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="worker threads (default: COUNTYREAD_WORKERS, at least 1)",
    )
    parser.add_argument(
        "--once", action="store_true", help="process the jobs that are due now, then exit"
    )
    args = parser.parse_args(list(argv))
    ctx = AppContext.create()
    configure_logging(ctx.settings.log_level, ctx.settings.log_dir)
    registry = PipelineRegistry(ctx.settings)
    if ctx.settings.queue_backend == "celery" and not args.once:
        n = max(1, args.threads or ctx.settings.workers)
        return run_celery_worker(ctx, registry, n)
    if args.once:
        worker = AnalysisWorker(ctx, registry)
        while worker.run_once():
            pass
        return 0
    n = max(1, args.threads or ctx.settings.workers)
    workers = [AnalysisWorker(ctx, registry, name=str(i)) for i in range(n)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for w in workers:
        w.start()
    logger.info("workers running", extra={"threads": n})
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    for w in workers:
        w.stop()
    ctx.close()
    return 0


def celery_worker(
    ctx: AppContext, registry: PipelineRegistry, threads: int, name: str = ""
) -> Any:
    """A Celery worker (thread pool of ``threads``) that runs the jobs its wake-ups name.

    Threads, not processes: the ONNX sessions are created once and shared, and
    onnxruntime releases the GIL while it computes. Returns the unstarted
    ``celery.apps.worker.Worker``; ``.start()`` blocks until it is stopped.
    """
    from countyread.celery_queue import CeleryJobQueue, register_task

    queue = ctx.queue
    if not isinstance(queue, CeleryJobQueue):
        raise TypeError("celery_worker needs queue_backend=celery")
    local = threading.local()

    def run(job: Job) -> None:
        worker = getattr(local, "worker", None)
        if worker is None:
            worker = local.worker = AnalysisWorker(ctx, registry, name=name or "celery")
        worker.process(job)

    register_task(queue.app, queue, run, default_worker_name(name or "celery"))
    return queue.app.Worker(
        pool="threads",
        concurrency=threads,
        queues=[ctx.settings.celery_queue],
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        loglevel=ctx.settings.log_level,
        quiet=True,
    )


def run_celery_worker(ctx: AppContext, registry: PipelineRegistry, threads: int) -> int:
    from countyread.celery_queue import CeleryJobQueue, Sweeper

    AnalysisWorker(ctx, registry).warm_up()
    assert isinstance(ctx.queue, CeleryJobQueue)
    sweeper = Sweeper(ctx.queue, ctx.settings.sweep_interval_s)
    sweeper.start()
    ctx.queue.sweep(grace_s=0.0)  # jobs queued while no worker was listening
    logger.info(
        "celery workers running",
        extra={"threads": threads, "queue": ctx.settings.celery_queue},
    )
    try:
        celery_worker(ctx, registry, threads).start()
    finally:
        sweeper.stop()
        ctx.close()
    return 0
