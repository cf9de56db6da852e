"""Retention: free the disk of source images the review center no longer needs.

The county center is not the archive of record: the township keeps its images, PACS
keeps the signed results. Our store holds source images so the AI can run and the
radiologist can read; once a study is *delivered* (every destination of its signed
revision has its results) and older than ``retention_days``, its source images may go.
Everything else stays: the study, series, findings, reviews, reports, audit rows, the
result objects that were sent and the analysis images (key images, renders), so the
worklist history, the audit trail and re-sending results keep working. Quarantined
files (rejected input kept for inspection) go after ``quarantine_retention_days``.

Order per study, safe against a crash at any point: the instance rows and an audit row
are removed/written in one transaction first, then the files; a study whose files
outlived a crash is picked up again by the next run (its directory still exists).
Nothing happens without ``apply``; the default is to keep everything forever.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.engine import Connection

from countyread.context import AppContext
from countyread.db import audit, deliveries, instances, quarantine, studies, utcnow
from countyread.domain import StudyStatus
from countyread.settings import load_settings
from countyread.uids import is_valid_uid

logger = logging.getLogger(__name__)

#: How often a running service looks for work once retention is enabled.
INTERVAL_S = 6 * 3600.0


@dataclass
class PrunePlan:
    cutoff: datetime
    studies: list[str] = field(default_factory=list)
    instance_files: int = 0
    image_bytes: int = 0
    quarantine_ids: list[int] = field(default_factory=list)
    quarantine_bytes: int = 0


def _dir_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                size += (Path(root) / name).stat().st_size
                files += 1
    return files, size


def plan(ctx: AppContext, older_than_days: int | None, quarantine_days: int | None = None,
         now: datetime | None = None) -> PrunePlan:
    """What a prune would remove now (nothing is touched); None: that kind is kept."""
    now = now or utcnow()
    cutoff = now - timedelta(days=older_than_days or 0)
    out = PrunePlan(cutoff)
    with ctx.db.begin() as conn:
        if older_than_days is not None:
            _plan_images(ctx, conn, cutoff, out)
        if quarantine_days is not None:
            q_cut = now - timedelta(days=quarantine_days)
            for qid, path in conn.execute(select(quarantine.c.id, quarantine.c.path).where(
                    quarantine.c.received_at < q_cut)):
                out.quarantine_ids.append(int(qid))
                if path:
                    with contextlib.suppress(OSError):
                        out.quarantine_bytes += _quarantine_file(ctx, str(path)).stat().st_size
    return out


def _plan_images(ctx: AppContext, conn: Connection, cutoff: datetime, out: PrunePlan) -> None:
    pending = exists().where(and_(deliveries.c.study_uid == studies.c.study_uid,
                                  deliveries.c.state == "pending"))
    rows = conn.execute(select(studies.c.study_uid).where(and_(
        studies.c.status == StudyStatus.DELIVERED.value,
        studies.c.last_received_at < cutoff,
        ~pending,
    )).order_by(studies.c.last_received_at)).scalars().all()
    for uid in rows:
        if not is_valid_uid(str(uid)):
            continue
        directory = ctx.store.root / str(uid)
        if directory.is_dir():
            files, size = _dir_size(directory)
            out.studies.append(str(uid))
            out.instance_files += files
            out.image_bytes += size


def _quarantine_file(ctx: AppContext, name: str) -> Path:
    """The quarantined file's path; the row holds a bare file name in quarantine_dir."""
    root = ctx.settings.quarantine_dir.resolve()
    p = (root / name).resolve()
    if p.parent != root:
        raise OSError(f"quarantine path outside its directory: {name!r}")
    return p


def apply(ctx: AppContext, todo: PrunePlan) -> PrunePlan:
    """Remove what ``todo`` lists; returns what was actually removed."""
    done = PrunePlan(todo.cutoff)
    root = ctx.store.root.resolve()
    for uid in todo.studies:
        directory = (ctx.store.root / uid).resolve()
        if directory.parent != root:  # validated UIDs cannot do this; belt and braces
            continue
        files, size = _dir_size(directory)
        with ctx.db.begin() as conn:
            still = conn.execute(select(studies.c.status).where(
                studies.c.study_uid == uid)).scalar_one_or_none()
            if still != StudyStatus.DELIVERED.value:  # amended meanwhile: keep it
                continue
            conn.execute(delete(instances).where(instances.c.study_uid == uid))
            conn.execute(audit.insert().values(
                at=utcnow(), username="countyread", action="prune", study_uid=uid,
                detail={"files": files, "bytes": size}, client=None))
        shutil.rmtree(directory, ignore_errors=True)
        done.studies.append(uid)
        done.instance_files += files
        done.image_bytes += size
    if todo.quarantine_ids:
        with ctx.db.begin() as conn:
            rows = conn.execute(select(quarantine.c.id, quarantine.c.path).where(
                quarantine.c.id.in_(todo.quarantine_ids))).all()
            for qid, path in rows:
                if path:
                    with contextlib.suppress(OSError):
                        target = _quarantine_file(ctx, str(path))
                        done.quarantine_bytes += target.stat().st_size
                        target.unlink()
                done.quarantine_ids.append(int(qid))
            conn.execute(delete(quarantine).where(quarantine.c.id.in_(done.quarantine_ids)))
    logger.info("retention prune done", extra={
        "studies": len(done.studies), "files": done.instance_files,
        "bytes": done.image_bytes, "quarantined": len(done.quarantine_ids)})
    return done


class RetentionKeeper:
    """Runs the configured prune every few hours inside ``countyread serve``."""

    def __init__(self, ctx: AppContext, interval_s: float = INTERVAL_S) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        s = self.ctx.settings
        return s.retention_days > 0 or s.quarantine_retention_days > 0

    def run_once(self) -> PrunePlan | None:
        s = self.ctx.settings
        if not self.enabled:
            return None
        days = s.retention_days if s.retention_days > 0 else None
        qdays = s.quarantine_retention_days if s.quarantine_retention_days > 0 else None
        return apply(self.ctx, plan(self.ctx, days, qdays))

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        if self._stop.wait(60.0):  # let the service settle before the first pass
            return
        while True:
            try:
                self.run_once()
            except Exception:  # a failed prune is retried at the next interval
                logger.exception("retention prune failed")
            if self._stop.wait(self.interval_s):
                return


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread prune",
        description="Free disk space: remove the source images of delivered studies older "
        "than --older-than days (findings, reports, results, audit and key images stay), "
        "and quarantined files older than --quarantine-days. Shows what it would do; "
        "nothing is removed without --apply.",
    )
    parser.add_argument("--older-than", type=int, required=True, metavar="DAYS",
                        help="delivered studies last received more than DAYS ago")
    parser.add_argument("--quarantine-days", type=int, default=None, metavar="DAYS",
                        help="also remove quarantined files older than DAYS")
    parser.add_argument("--apply", action="store_true", help="really remove (default: dry run)")
    args = parser.parse_args(list(argv))
    if args.older_than < 1 or (args.quarantine_days is not None and args.quarantine_days < 1):
        parser.error("days must be at least 1")
    ctx = AppContext.create(load_settings())
    try:
        todo = plan(ctx, args.older_than, args.quarantine_days)
        verb = "removed" if args.apply else "would remove"
        result = apply(ctx, todo) if args.apply else todo
        print(f"{verb}: source images of {len(result.studies)} delivered studies "
              f"({result.instance_files} files, {_gb(result.image_bytes)}); "
              f"{len(result.quarantine_ids)} quarantined files "
              f"({_gb(result.quarantine_bytes)})")
        done_zh = "已清理" if args.apply else "将清理"
        print(f"{done_zh}：{len(result.studies)} 个已回传检查的原始图像，"
              f"{len(result.quarantine_ids)} 个隔离文件")
        if not args.apply:
            print("dry run: add --apply to remove")
    finally:
        ctx.close()
    return 0
