"""``countyread scp``, ``countyread send`` and ``countyread nodes``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from countyread.context import AppContext
from countyread.domain import NodeKind
from countyread.logs import configure_logging
from countyread.nodes import OBJECT_FAMILIES, add_node, list_nodes, set_active
from countyread.settings import load_settings


def scp_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread scp",
        description="Run the DICOM node alone: C-ECHO, C-STORE (durable ingest) and MPPS, "
        "plus the series stability monitor that queues analysis jobs. Runs until Ctrl-C "
        "or SIGTERM. Settings come from COUNTYREAD_* variables (COUNTYREAD_AE_TITLE, "
        "COUNTYREAD_DICOM_PORT, COUNTYREAD_ACCEPT_ANY_AE, COUNTYREAD_DATA_DIR ...).",
    )
    parser.add_argument("--port", type=int, help="override COUNTYREAD_DICOM_PORT")
    parser.add_argument("--ae-title", help="override COUNTYREAD_AE_TITLE")
    parser.add_argument("--accept-any-ae", action="store_true",
                        help="accept unknown calling AE titles (set-up only)")
    args = parser.parse_args(list(argv))
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["dicom_port"] = args.port
    if args.ae_title:
        overrides["ae_title"] = args.ae_title
    if args.accept_any_ae:
        overrides["accept_any_ae"] = True
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_dir)
    ctx = AppContext.create(settings)

    from dicom_node.assembly import StabilityMonitor
    from dicom_node.scp import DicomNode

    node = DicomNode(ctx)
    monitor = StabilityMonitor(ctx)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    node.start()
    monitor.start()
    print(f"countyread scp: {settings.ae_title} listening on {settings.dicom_host}:{node.port}"
          f" (data in {settings.data_dir})", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        monitor.stop()
        node.stop()
        ctx.close()
    return 0


def send_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread send",
        description="Send DICOM files (directories are walked) to a DICOM node with C-STORE "
        "over one association; prints one line per failure and a summary. Exit status 0 "
        "when every instance got Success.",
    )
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS")
    parser.add_argument("--aet", default="COUNTYREAD", help="our (calling) AE title")
    parser.add_argument("--aec", default="ANY-SCP", help="the peer's (called) AE title")
    parser.add_argument("--tls-ca", type=Path, help="CA to verify the peer (enables TLS)")
    parser.add_argument("--tls-cert", type=Path, help="our client certificate")
    parser.add_argument("--tls-key", type=Path, help="key of our client certificate")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(list(argv))

    from tqdm import tqdm

    from dicom_node.scu import SendResult, client_tls, collect_files, send_paths

    files, skipped = collect_files(args.paths)
    if skipped:
        print(f"skipped {len(skipped)} non-DICOM file(s), e.g. {skipped[0]}", file=sys.stderr)
    if not files:
        print("countyread send: no files found", file=sys.stderr)
        return 2
    tls = (client_tls(args.tls_ca, args.tls_cert, args.tls_key)
           if args.tls_ca or args.tls_cert else None)
    bar = tqdm(total=len(files), unit="inst", disable=args.no_progress, file=sys.stderr)

    def _progress(res: SendResult) -> None:
        bar.update(1)
        if not res.ok:
            code = f"0x{res.status:04X}" if res.status is not None else "not sent"
            bar.write(f"FAILED {res.path}: {code} {res.error_comment or ''}".rstrip())

    t0 = time.perf_counter()
    results = send_paths(args.host, args.port, args.aec, files, calling_ae=args.aet, tls=tls,
                         on_result=_progress)
    bar.close()
    elapsed = time.perf_counter() - t0
    ok = sum(r.ok for r in results)
    size = sum(Path(r.path).stat().st_size for r in results if r.ok and r.path)
    print(f"sent {ok}/{len(results)} instances, {size / 1e6:.1f} MB in {elapsed:.2f} s "
          f"({size / 1e6 / max(elapsed, 1e-9):.1f} MB/s); failed {len(results) - ok}")
    return 0 if ok == len(results) else 1


def nodes_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread nodes",
        description="Manage known DICOM nodes: township scanners allowed to send to us and "
        "destinations (township consoles, PACS) that receive results.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list nodes")
    add = sub.add_parser("add", help="register a node")
    add.add_argument("--name", required=True, help="township hospital or PACS name")
    add.add_argument("--ae", required=True, help="its AE title (allow-list key)")
    add.add_argument("--host", help="host to send results to (with --port)")
    add.add_argument("--port", type=int, help="port to send results to (with --host)")
    add.add_argument("--kind", choices=[k.value for k in NodeKind], default="township")
    add.add_argument("--send", help=f"comma list of result families from {OBJECT_FAMILIES}")
    dis = sub.add_parser("disable", help="disable a node (its associations are rejected)")
    dis.add_argument("id", type=int)
    ena = sub.add_parser("enable", help="enable a disabled node")
    ena.add_argument("id", type=int)
    args = parser.parse_args(list(argv))
    ctx = AppContext.create(load_settings())
    try:
        if args.cmd == "list":
            rows = list_nodes(ctx.db)
            print(f"{'id':>3}  {'ae_title':16}  {'kind':8}  {'active':6}  {'address':22}  "
                  "send  name")
            for n in rows:
                addr = f"{n.host}:{n.port}" if n.host else "-"
                print(f"{n.id:>3}  {n.ae_title:16}  {n.kind.value:8}  {n.active!s:6}  "
                      f"{addr:22}  {','.join(n.send)}  {n.name}")
        elif args.cmd == "add":
            send = tuple(s.strip().upper() for s in args.send.split(",")) if args.send else None
            n = add_node(ctx.db, name=args.name, ae_title=args.ae, host=args.host,
                         port=args.port, kind=NodeKind(args.kind), send=send)
            print(f"added node {n.id}: {n.ae_title} ({n.name})")
        else:
            set_active(ctx.db, args.id, args.cmd == "enable")
            print(f"node {args.id} {args.cmd}d")
    finally:
        ctx.close()
    return 0
