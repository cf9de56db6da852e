"""Sign-to-delivered time: a signed chest CT with 3 findings, results to a local Orthanc.

Measures what the API does after the sign transaction commits: ``schedule_delivery``
(load the signed review, build SR/SEG/SC/KOS, write them durably, queue) and the running
outbox thread sending them by C-STORE, until the study is ``delivered``. The outbox
warms the builders up when it starts (highdicom's standard tables, the caption font), as
in ``countyread serve``; that start-up cost is printed separately. Goal: <= 2 s.

Orthanc runs in a private network namespace reached over a veth link (it cannot bind to
loopback only); with ``--peer pynetdicom`` a pynetdicom Storage SCP on 127.0.0.1 is used
instead. Run from the repository root as root (``ip netns``)::

    nice -n 10 python -m benchmarks.deliver --studies 4 --slices 120 --size 512
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from countyread.context import AppContext  # noqa: E402
from countyread.db import studies  # noqa: E402
from countyread.domain import NodeKind  # noqa: E402
from countyread.nodes import add_node  # noqa: E402
from countyread.settings import load_settings  # noqa: E402
from dicom_node.outbox import Outbox, schedule_delivery  # noqa: E402
from tests.results.seed import seed_study  # noqa: E402


@contextlib.contextmanager
def _peer(kind: str, workdir: Path) -> Iterator[tuple[str, int, str, str]]:
    """Yield (host, port, AE title, description) of a running Storage SCP."""
    if kind == "orthanc":
        from tests.peers.orthanc import orthanc_peer

        with orthanc_peer(workdir) as orthanc:
            yield (
                orthanc.address,
                orthanc.dicom_port,
                orthanc.ae_title,
                f"Orthanc {orthanc.get('/system')['Version']} via veth {orthanc.address}",
            )
    else:
        from tests.peers.storage_scp import StorageSCP

        scp = StorageSCP().start()
        try:
            yield "127.0.0.1", scp.port, scp.ae_title, "pynetdicom Storage SCP on 127.0.0.1"
        finally:
            scp.stop()


def _status(ctx: AppContext, study_uid: str) -> str:
    with ctx.db.begin() as conn:
        return str(
            conn.execute(
                select(studies.c.status).where(studies.c.study_uid == study_uid)
            ).scalar_one()
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=4, help="signed studies to deliver")
    parser.add_argument("--slices", type=int, default=120, help="CT slices per study")
    parser.add_argument("--size", type=int, default=512, help="CT matrix (rows = columns)")
    parser.add_argument("--findings", type=int, default=3)
    parser.add_argument("--peer", choices=("orthanc", "pynetdicom"), default="orthanc")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="crt-bench-") as tmp:
        root = Path(tmp)
        (root / "peer").mkdir()
        ctx = AppContext.create(load_settings(data_dir=root / "var", environment="test"))
        print(
            f"seeding {args.studies} studies: {args.slices} x {args.size}^2 CT, "
            f"{args.findings} confirmed findings each ...",
            flush=True,
        )
        seeded = [
            seed_study(
                ctx,
                n_slices=args.slices,
                size=args.size,
                n_findings=args.findings,
                tag=f"bench-{i}",
            )
            for i in range(args.studies)
        ]
        with _peer(args.peer, root / "peer") as (host, port, ae, what):
            add_node(
                ctx.db,
                name="bench PACS",
                ae_title=ae,
                host=host,
                port=port,
                kind=NodeKind.PACS,
                send=("SR", "SEG", "SC", "KOS"),
            )
            box = Outbox(ctx, poll_s=1.0)
            box.start()
            t_start = time.perf_counter()
            box.ready.wait(60)  # a service warms its builders at start, long before a sign
            warm_s = time.perf_counter() - t_start
            rows = []
            try:
                for study in seeded:
                    t0 = time.perf_counter()
                    schedule_delivery(ctx, study.study_uid)
                    t1 = time.perf_counter()
                    while _status(ctx, study.study_uid) != "delivered":
                        if time.perf_counter() - t0 > 60:
                            raise SystemExit("not delivered within 60 s")
                        time.sleep(0.005)
                    t2 = time.perf_counter()
                    rows.append((t1 - t0, t2 - t1, t2 - t0))
            finally:
                box.stop()
        ctx.close()

    print(f"peer: {what}; outbox warm-up at start: {warm_s:.3f} s")
    print(f"{'study':>5} {'build+queue s':>14} {'send s':>8} {'sign->delivered s':>18}")
    for i, (build, send, total) in enumerate(rows):
        note = "  (first sign-off after start)" if i == 0 else ""
        print(f"{i:>5} {build:>14.3f} {send:>8.3f} {total:>18.3f}{note}")
    warm = [r[2] for r in rows[1:]] or [rows[0][2]]
    print(
        f"first sign->delivered: {rows[0][2]:.3f} s; then median: "
        f"{statistics.median(warm):.3f} s, max: {max(warm):.3f} s (goal <= 2 s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
