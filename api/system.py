"""What an administrator needs to see that the service is healthy (no patient data).

Counts come from indexed columns only (job and delivery states, study status and
arrival time), so the page stays cheap on a database with years of studies. The same
figures feed ``GET /api/system`` (JSON, admin) and ``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select

from countyread import __version__
from countyread.context import AppContext
from countyread.db import deliveries, jobs, quarantine, studies, utcnow
from countyread.domain import StudyStatus
from models.registry import ModelRegistry
from models.runtime import choose_providers, usable_providers

#: Statuses in which a study waits for a radiologist (overdue ones are counted).
_WAITING = (StudyStatus.READY.value, StudyStatus.IN_REVIEW.value,
            StudyStatus.NOT_ANALYZABLE.value)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class SystemStatus:
    version: str
    database: str
    providers: tuple[str, ...]
    models: tuple[ModelInfo, ...]
    data_free_bytes: int
    data_total_bytes: int
    jobs: dict[str, int] = field(default_factory=dict)
    oldest_queued_job_s: float | None = None
    studies: dict[str, int] = field(default_factory=dict)
    overdue_studies: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    oldest_pending_delivery_s: float | None = None
    quarantined_24h: int = 0
    studies_received_24h: int = 0
    last_study_received_s: float | None = None


def _age_s(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 1)


def _provider_plan(ctx: AppContext) -> tuple[str, ...]:
    try:
        return tuple(choose_providers(ctx.settings.providers, ctx.settings.enable_tensorrt,
                                      usable_providers()))
    except Exception as exc:  # a bad provider setting is itself worth showing
        return (f"error: {exc}",)


def _models(ctx: AppContext) -> tuple[ModelInfo, ...]:
    registry = ModelRegistry(ctx.settings.models_dir)
    out = []
    for name in registry.names():
        for version in registry.versions(name):
            try:
                card = registry.read_card(name, version)
            except Exception:  # an unreadable card shows as such, it does not break the page
                out.append(ModelInfo(name, version, "unreadable card"))
                continue
            out.append(ModelInfo(name, version, card.sha256.get("model.onnx", "")))
    return tuple(out)


def collect(ctx: AppContext) -> SystemStatus:
    now = utcnow()
    disk = shutil.disk_usage(ctx.settings.data_dir)
    with ctx.db.begin() as conn:
        job_counts = {str(s): int(n) for s, n in conn.execute(
            select(jobs.c.state, func.count()).group_by(jobs.c.state))}
        oldest_job = conn.execute(
            select(func.min(jobs.c.created_at)).where(jobs.c.state == "queued")).scalar()
        study_counts = {str(s): int(n) for s, n in conn.execute(
            select(studies.c.status, func.count()).group_by(studies.c.status))}
        overdue = int(conn.execute(select(func.count()).where(and_(
            studies.c.status.in_(_WAITING), studies.c.deadline_at < now))).scalar_one())
        delivery_counts = {str(s): int(n) for s, n in conn.execute(
            select(deliveries.c.state, func.count()).group_by(deliveries.c.state))}
        oldest_delivery = conn.execute(
            select(func.min(deliveries.c.created_at))
            .where(deliveries.c.state == "pending")).scalar()
        day_ago = now - timedelta(hours=24)
        quarantined = int(conn.execute(select(func.count()).where(
            quarantine.c.received_at >= day_ago)).scalar_one())
        received = int(conn.execute(select(func.count()).where(
            studies.c.first_received_at >= day_ago)).scalar_one())
        last = conn.execute(select(func.max(studies.c.first_received_at))).scalar()
    return SystemStatus(
        version=__version__,
        database=ctx.db.engine.dialect.name,
        providers=_provider_plan(ctx),
        models=_models(ctx),
        data_free_bytes=int(disk.free),
        data_total_bytes=int(disk.total),
        jobs=job_counts,
        oldest_queued_job_s=_age_s(now, oldest_job),
        studies=study_counts,
        overdue_studies=overdue,
        deliveries=delivery_counts,
        oldest_pending_delivery_s=_age_s(now, oldest_delivery),
        quarantined_24h=quarantined,
        studies_received_24h=received,
        last_study_received_s=_age_s(now, last),
    )


def _num(value: float) -> str:
    # Integers in full (free bytes would lose digits in %g); other values as Python prints.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def prometheus(status: SystemStatus) -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``status``."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP countyread_{name} {help_text}")
        lines.append(f"# TYPE countyread_{name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"countyread_{name}{{{lab}}} {_num(value)}" if lab
                         else f"countyread_{name} {_num(value)}")

    metric("info", "gauge", "Service version and execution providers.",
           [({"version": status.version, "database": status.database,
              "providers": ",".join(status.providers)}, 1)])
    metric("model_info", "gauge", "Shipped model versions.",
           [({"name": m.name, "version": m.version, "sha256": m.sha256[:16]}, 1)
            for m in status.models])
    metric("data_free_bytes", "gauge", "Free bytes on the data directory's file system.",
           [({}, status.data_free_bytes)])
    metric("jobs", "gauge", "Analysis jobs by state.",
           [({"state": s}, n) for s, n in sorted(status.jobs.items())])
    metric("studies", "gauge", "Studies by status.",
           [({"status": s}, n) for s, n in sorted(status.studies.items())])
    metric("overdue_studies", "gauge", "Studies waiting past their reading deadline.",
           [({}, status.overdue_studies)])
    metric("deliveries", "gauge", "Result deliveries by state.",
           [({"state": s}, n) for s, n in sorted(status.deliveries.items())])
    metric("quarantined_24h", "gauge", "Instances quarantined in the last 24 hours.",
           [({}, status.quarantined_24h)])
    metric("studies_received_24h", "gauge", "Studies first received in the last 24 hours.",
           [({}, status.studies_received_24h)])
    for name, value, text in (
        ("oldest_queued_job_seconds", status.oldest_queued_job_s, "Age of the oldest queued job."),
        ("oldest_pending_delivery_seconds", status.oldest_pending_delivery_s,
         "Age of the oldest pending delivery."),
        ("last_study_received_seconds", status.last_study_received_s,
         "Seconds since the last new study arrived."),
    ):
        if value is not None:
            metric(name, "gauge", text, [({}, value)])
    return "\n".join(lines) + "\n"
