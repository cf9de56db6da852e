"""``countyread serve``: the DICOM node, analysis workers, outbox and API in one process.

This is the one-box deployment a county hospital's IT staff runs. Each part can also run
alone (``countyread scp``, ``worker``, ``api``) for scale-out.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence
from typing import Any

from countyread.context import AppContext
from countyread.logs import configure_logging
from countyread.retention import RetentionKeeper

logger = logging.getLogger(__name__)


def _build(ctx: AppContext, threads: int) -> list[Any]:
    """Create the background parts; each has start() and stop()."""
    scp = importlib.import_module("dicom_node.scp")
    assembly = importlib.import_module("dicom_node.assembly")
    worker = importlib.import_module("inference.worker")
    registry = importlib.import_module("inference.registry").PipelineRegistry(ctx.settings)
    parts: list[Any] = [scp.DicomNode(ctx), assembly.StabilityMonitor(ctx),
                        RetentionKeeper(ctx)]
    parts += [worker.AnalysisWorker(ctx, registry, name=str(i)) for i in range(threads)]
    try:
        outbox = importlib.import_module("dicom_node.outbox")
    except ModuleNotFoundError:
        logger.warning("results outbox not installed: signed results are not delivered")
    else:
        parts.append(outbox.Outbox(ctx))
    return parts


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread serve",
        description="Run the whole service on one machine: the DICOM node (C-ECHO, C-STORE, "
        "MPPS) on COUNTYREAD_DICOM_PORT, study assembly, analysis workers, the results "
        "outbox, and the worklist API + web page on COUNTYREAD_API_PORT. Defaults: SQLite "
        "and file store in ./var, shipped models, CPU unless a GPU is present.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="analysis worker threads (default COUNTYREAD_WORKERS)",
    )
    args = parser.parse_args(list(argv))
    ctx = AppContext.create()
    settings = ctx.settings
    configure_logging(settings.log_level, settings.log_dir)
    threads = settings.workers if args.workers is None else args.workers
    parts = _build(ctx, threads)
    for part in parts:
        part.start()
    logger.info(
        "countyread serving",
        extra={
            "ae_title": settings.ae_title,
            "dicom_port": settings.dicom_port,
            "api_port": settings.api_port,
            "data_dir": str(settings.data_dir.resolve()),
            "workers": threads,
        },
    )
    try:
        import uvicorn

        create_app = importlib.import_module("api.main").create_app
        uvicorn.run(
            create_app(ctx),
            host=settings.api_host,
            port=settings.api_port,
            log_level=settings.log_level.lower(),
        )
    finally:
        for part in reversed(parts):
            try:
                part.stop()
            except Exception:
                logger.exception("error while stopping", extra={"part": type(part).__name__})
        ctx.close()
    return 0
