"""Worklist query latency with 100,000 studies, on SQLite and PostgreSQL.

Two populations: ``realistic`` (100,000 studies of which 3 % wait on the worklist, the
rest signed or delivered) and ``all-waiting`` (every study on the worklist, the worst
case for ordering). Timed: the worklist query itself (first page, a deep page, a
modality + township filter) and the whole ``GET /api/worklist`` request through the app
(token check, query, audit row, JSON). Goal: p95 <= 50 ms.

    nice -n 10 python -m benchmarks.api [--studies 100000] [--repeat 200]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from api.deps import User  # noqa: E402
from api.main import create_app  # noqa: E402
from api.users_cli import create_user  # noqa: E402
from api.worklist import StudyFilter, worklist_page  # noqa: E402
from countyread.context import AppContext  # noqa: E402
from countyread.db import nodes, studies, utcnow  # noqa: E402
from countyread.domain import Role, Urgency  # noqa: E402
from countyread.settings import load_settings  # noqa: E402
from countyread.status import deadline_for  # noqa: E402

_WAITING = ("ready", "in_review", "not_analyzable")
_URGENCY_MIX = (("critical", 0.02), ("urgent", 0.18), ("routine", 0.80))
_MODALITIES = ("CT", "CT", "CT", "DX", "CR")


def _populate(ctx: AppContext, n: int, waiting_share: float, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = utcnow()
    with ctx.db.begin() as conn:
        conn.execute(nodes.insert(), [
            {"name": f"Township {i}", "ae_title": f"TOWN{i}", "kind": "township",
             "send": ["SC", "KOS"], "active": True} for i in range(1, 21)])
    batch: list[dict[str, Any]] = []
    for i in range(n):
        received = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
        waiting = rng.random() < waiting_share
        urgency = rng.choices([u for u, _ in _URGENCY_MIX], [w for _, w in _URGENCY_MIX])[0]
        status = rng.choice(_WAITING) if waiting else rng.choice(("signed", "delivered"))
        batch.append({
            "study_uid": f"1.2.826.0.1.3680043.8.498.{i + 1}", "patient_name": "测试^患者",
            "patient_id": f"P{i:07d}", "modalities": rng.choice(_MODALITIES),
            "source_node_id": rng.randint(1, 20), "first_received_at": received,
            "last_received_at": received, "status": status, "urgency": urgency,
            "deadline_at": deadline_for(ctx.settings, Urgency(urgency), received),
            "revision": 0 if waiting else 1,
        })
        if len(batch) == 5000:
            with ctx.db.begin() as conn:
                conn.execute(studies.insert(), batch)
            batch = []
    if batch:
        with ctx.db.begin() as conn:
            conn.execute(studies.insert(), batch)
    if not ctx.db.is_sqlite:
        # What autovacuum does on a live server: statistics, and the visibility map that
        # lets index-only scans skip the heap.
        with ctx.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE studies")
    else:
        with ctx.db.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def _timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()  # warm caches and the statement cache
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


@contextmanager
def _context(url: str | None) -> Iterator[AppContext]:
    with tempfile.TemporaryDirectory() as tmp:
        schema = None
        if url:
            import psycopg

            raw = url.replace("postgresql+psycopg://", "postgresql://")
            admin = psycopg.connect(raw, autocommit=True)
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin.execute(f'CREATE SCHEMA "{schema}"')
            db_url: str | None = f"{url}?options=-csearch_path%3D{schema}"
        else:
            db_url = None
        ctx = AppContext.create(load_settings(data_dir=Path(tmp), database_url=db_url,
                                              environment="test"))
        try:
            yield ctx
        finally:
            ctx.close()
            if schema:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
                admin.close()


def run(url: str | None, population: str, n: int, repeat: int) -> None:
    label = "PostgreSQL" if url else "SQLite"
    share = 0.03 if population == "realistic" else 1.0
    with _context(url) as ctx:
        t0 = time.perf_counter()
        _populate(ctx, n, share)
        load_s = time.perf_counter() - t0
        user = User(id=1, username="bench", role=Role.RADIOLOGIST, node_id=None,
                    display_name=None)
        with ctx.db.begin() as conn:
            waiting, _ = worklist_page(conn, user, StudyFilter(), 0, 1)
            total = worklist_page(conn, user, StudyFilter(), 0, 1)[1]
        del waiting

        def query(flt: StudyFilter, offset: int) -> Callable[[], object]:
            def go() -> object:
                with ctx.db.begin() as conn:
                    return worklist_page(conn, user, flt, offset, 50)
            return go

        rows = [
            ("first page (50)", query(StudyFilter(), 0)),
            ("page at offset 1000", query(StudyFilter(), min(1000, max(0, total - 50)))),
            ("CT + one township", query(StudyFilter(modality="CT", node_id=3), 0)),
        ]
        create_user(ctx, "bench", Role.RADIOLOGIST, "bench-password")
        with TestClient(create_app(ctx)) as client:
            token = client.post("/api/auth/token", data={
                "username": "bench", "password": "bench-password"}).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}

            def http() -> object:
                r = client.get("/api/worklist?limit=50", headers=headers)
                assert r.status_code == 200
                return r

            rows.append(("GET /api/worklist (HTTP, auth, audit)", http))
            print(f"\n{label}, {population}: {n} studies, {total} on the worklist "
                  f"(loaded in {load_s:.1f} s)")
            for name, fn in rows:
                p50, p95 = _timed(fn, repeat)
                print(f"  {name:40s} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="PostgreSQL to use too ('' to skip)")
    parser.add_argument("--population", choices=("realistic", "all-waiting", "both"),
                        default="both")
    args = parser.parse_args(argv)
    pops = ("realistic", "all-waiting") if args.population == "both" else (args.population,)
    urls: list[str | None] = [None]
    if args.pg_url:
        try:
            import psycopg

            psycopg.connect(args.pg_url.replace("postgresql+psycopg://", "postgresql://"),
                            connect_timeout=3).close()
            urls.append(args.pg_url)
        except Exception as exc:  # report and go on with SQLite alone
            print(f"PostgreSQL skipped: {exc}")
    for url in urls:
        for pop in pops:
            run(url, pop, args.studies, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
