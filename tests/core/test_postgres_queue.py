"""The job queue and study index on a real PostgreSQL server."""

import threading
from pathlib import Path

from sqlalchemy import func, select

from countyread.context import AppContext
from countyread.db import jobs
from countyread.domain import JobState
from countyread.settings import load_settings


def test_concurrent_workers_claim_each_job_exactly_once(pg_url: str, tmp_path: Path) -> None:
    ctx = AppContext.create(load_settings(data_dir=tmp_path, database_url=pg_url))
    try:
        for i in range(60):
            assert ctx.queue.enqueue("analyze", f"k{i}", series_uid=f"1.2.{i}") is not None
        assert ctx.queue.enqueue("analyze", "k0") is None
        claimed: list[int] = []
        lock = threading.Lock()

        def work(name: str) -> None:
            while (job := ctx.queue.claim(name)) is not None:
                with lock:
                    claimed.append(job.id)
                ctx.queue.finish(job.id, JobState.DONE)

        threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(claimed) == sorted(set(claimed))
        assert len(claimed) == 60
        with ctx.db.begin() as conn:
            done = conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.state == "done")
            ).scalar_one()
        assert done == 60
    finally:
        ctx.close()
