"""``countyread doctor``: check an installation before the first study arrives.

For the county hospital's IT staff: one command that says, line by line in Chinese and
English, whether the data directory is durable and has room, the database answers, the
shipped models verify, ONNX Runtime has the expected execution provider, compressed
transfer syntaxes can be decoded, the ports are free, and the security settings are
sane. Exit status 1 when anything is FAIL, so an installer script can stop on it.

Feature packages (models, inference) are imported lazily inside the checks: the core
never imports them at import time.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import importlib.util
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, text

from countyread.context import AppContext
from countyread.db import jobs, utcnow
from countyread.domain import JobState
from countyread.errors import StorageError
from countyread.settings import Settings, load_settings
from countyread.store import write_durable

GB = 1024**3
#: Below this much free space on the data directory the node will soon refuse studies.
WARN_FREE_GB = 20.0
FAIL_FREE_GB = 2.0
#: Models every pipeline needs.
REQUIRED_MODELS = ("ct_nodule", "cta_vessels", "dr_nodule")
#: Decoder plug-ins per compressed transfer syntax family (pydicom's pixel handlers).
DECODERS = {
    "JPEG baseline / lossless": ("libjpeg", "gdcm"),
    "JPEG-LS": ("libjpeg", "gdcm"),
    "JPEG 2000": ("openjpeg", "gdcm"),
    "RLE": ("rle", "numpy"),
}


class Level(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"

    @property
    def zh(self) -> str:
        return {"OK": "正常", "WARN": "注意", "FAIL": "错误"}[self.value]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    detail: str


def _masked_url(url: str) -> str:
    # postgresql://user:secret@host/db -> postgresql://user:***@host/db
    head, sep, tail = url.partition("@")
    if sep and ":" in head.split("//", 1)[-1]:
        scheme, _, cred = head.partition("//")
        return f"{scheme}//{cred.split(':', 1)[0]}:***@{tail}"
    return url


def check_storage(settings: Settings) -> list[Check]:
    out = []
    probe = settings.data_dir / ".doctor-probe"
    try:
        write_durable(probe, b"countyread doctor")
        probe.unlink()
        out.append(Check("data dir", Level.OK, f"{settings.data_dir.resolve()} writable, fsync ok"))
    except (OSError, StorageError) as exc:
        out.append(Check("data dir", Level.FAIL, f"{settings.data_dir}: {exc}"))
        return out
    usage = shutil.disk_usage(settings.data_dir)
    free = usage.free / GB
    level = Level.FAIL if free < FAIL_FREE_GB else Level.WARN if free < WARN_FREE_GB else Level.OK
    out.append(Check("disk", level, f"{free:.1f} GB free of {usage.total / GB:.1f} GB"))
    return out


def check_database(ctx: AppContext) -> list[Check]:
    url = _masked_url(ctx.settings.resolved_database_url)
    try:
        with ctx.db.begin() as conn:
            studies = conn.execute(text("SELECT count(*) FROM studies")).scalar_one()
            detail = f"{ctx.db.engine.dialect.name} {url}, {studies} studies"
            if ctx.db.engine.dialect.name == "sqlite":
                mode = conn.execute(text("PRAGMA journal_mode")).scalar_one()
                detail += f", journal {mode}"
                if str(mode).lower() != "wal":
                    return [Check("database", Level.WARN, detail + " (expected wal)")]
    except Exception as exc:  # any driver error is the finding itself
        return [Check("database", Level.FAIL, f"{url}: {type(exc).__name__}: {exc}"[:300])]
    return [Check("database", Level.OK, detail)]


#: Jobs due this long ago and still queued mean no worker is taking them.
STALE_JOB_S = 300.0


def check_queue(ctx: AppContext) -> list[Check]:
    """Jobs waiting (and for how long); with Celery, whether the broker answers."""
    late = utcnow() - timedelta(seconds=STALE_JOB_S)
    with ctx.db.begin() as conn:
        queued = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.state == JobState.QUEUED.value)
        ).scalar_one()
        stale = conn.execute(
            select(func.count())
            .select_from(jobs)
            .where(jobs.c.state == JobState.QUEUED.value, jobs.c.run_after < late)
        ).scalar_one()
    backend = ctx.settings.queue_backend
    detail = f"{backend}: {queued} queued"
    out = [
        Check(
            "job queue",
            Level.WARN if stale else Level.OK,
            detail + (f", {stale} due over {STALE_JOB_S:.0f} s ago (is a worker running?)"
                      if stale else ""),
        )
    ]
    if backend == "celery":
        url = _masked_url(ctx.settings.broker_url)
        try:
            broker = importlib.import_module("countyread.celery_queue").make_app(ctx.settings)
            with broker.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
            out.append(Check("broker", Level.OK, f"{url} answers"))
        except Exception as exc:  # any transport error is the finding itself
            out.append(Check("broker", Level.FAIL,
                             f"{url}: {type(exc).__name__}: {exc} (jobs wait for the sweep)"[:300]))
    return out


def check_models(settings: Settings) -> list[Check]:
    registry_mod = importlib.import_module("models.registry")
    registry = registry_mod.ModelRegistry(settings.models_dir)
    out = []
    for name in REQUIRED_MODELS:
        try:
            artifact = registry.load(name)
        except Exception as exc:  # ModelError: missing, sha256 mismatch, bad card
            out.append(Check(f"model {name}", Level.FAIL, str(exc)[:300]))
        else:
            card = artifact.card
            digest = card.sha256["model.onnx"][:12]
            out.append(Check(f"model {name}", Level.OK,
                             f"{card.name}@{card.version} sha256 {digest}…"))
    return out


def check_runtime(settings: Settings) -> list[Check]:
    runtime = importlib.import_module("models.runtime")
    ort = importlib.import_module("onnxruntime")
    usable = runtime.usable_providers()
    try:
        chosen = runtime.choose_providers(settings.providers, settings.enable_tensorrt, usable)
    except Exception as exc:
        return [Check("onnxruntime", Level.FAIL, f"COUNTYREAD_PROVIDERS: {exc}")]
    gpu = chosen[0] != "CPUExecutionProvider"
    detail = f"{ort.__version__}: runs on {chosen[0]}" + (
        "" if gpu else " (no usable GPU: CPU is slower but correct)")
    return [Check("onnxruntime", Level.OK, detail)]


def check_decoders() -> list[Check]:
    present = {
        "libjpeg": importlib.util.find_spec("libjpeg") is not None,
        "openjpeg": importlib.util.find_spec("openjpeg") is not None,
        "rle": importlib.util.find_spec("rle") is not None,
        "gdcm": importlib.util.find_spec("gdcm") is not None,
        "numpy": True,  # pydicom decodes RLE in numpy, slowly
    }
    out = []
    for family, plugins in DECODERS.items():
        have = [p for p in plugins if present[p]]
        level = Level.OK if have else Level.FAIL
        out.append(Check(f"decode {family}", level,
                         f"via {have[0]}" if have else f"install one of {', '.join(plugins)}"))
    return out


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(settings: Settings) -> list[Check]:
    out = []
    for name, port in (("DICOM port", settings.dicom_port), ("API port", settings.api_port)):
        if port == 0:
            continue
        free = _port_free("0.0.0.0", port)
        out.append(Check(name, Level.OK if free else Level.WARN,
                         f"{port} free" if free else f"{port} in use (service already running?)"))
    return out


def check_security(ctx: AppContext) -> list[Check]:
    settings = ctx.settings
    out = []
    if settings.uses_placeholder_secret:
        out.append(Check("secret key", Level.WARN,
                         "placeholder: set COUNTYREAD_SECRET_KEY before real use"))
    else:
        out.append(Check("secret key", Level.OK, "set"))
    if settings.accept_any_ae:
        out.append(Check("AE allow-list", Level.WARN,
                         "COUNTYREAD_ACCEPT_ANY_AE=true: any scanner may send (set-up only)"))
    nodes_mod = importlib.import_module("countyread.nodes")
    nodes = nodes_mod.list_nodes(ctx.db)
    towns = [n for n in nodes if n.kind.value == "township" and n.active]
    pacs = [n for n in nodes if n.kind.value == "pacs" and n.can_receive]
    if not towns and not settings.accept_any_ae:
        out.append(Check("nodes", Level.WARN,
                         "no township node known: every scanner will be refused "
                         "(countyread nodes add ...)"))
    else:
        out.append(Check("nodes", Level.OK, f"{len(towns)} township node(s), "
                                            f"{len(pacs)} PACS destination(s)"))
    if not pacs:
        out.append(Check("PACS", Level.WARN, "no PACS destination: signed results go only "
                                             "to the originating township"))
    return out


def check_fonts() -> list[Check]:
    render = importlib.import_module("inference.render")
    font = render.get_font(14)
    if render.has_cjk_font(font):
        return [Check("CJK font", Level.OK, str(getattr(font, "path", "")))]
    return [Check("CJK font", Level.WARN,
                  "no CJK font: key image captions are English only (install fonts-noto-cjk)")]


def run_checks(settings: Settings) -> list[Check]:
    checks = check_storage(settings)
    if any(c.level is Level.FAIL for c in checks):
        return checks
    ctx = AppContext.create(settings)
    try:
        steps: list[Callable[[], list[Check]]] = [
            lambda: check_database(ctx),
            lambda: check_queue(ctx),
            lambda: check_models(settings),
            lambda: check_runtime(settings),
            check_decoders,
            lambda: check_ports(settings),
            lambda: check_security(ctx),
            check_fonts,
        ]
        for step in steps:
            try:
                checks += step()
            except Exception as exc:  # a broken check is reported, the others still run
                checks.append(Check(getattr(step, "__name__", "check"), Level.FAIL,
                                    f"{type(exc).__name__}: {exc}"[:300]))
    finally:
        ctx.close()
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread doctor",
        description="Check this installation (data dir, disk, database, models, ONNX "
        "Runtime providers, DICOM decoders, ports, security settings, fonts) with the "
        "current COUNTYREAD_* settings. Exit status 1 if any check FAILs.",
    )
    parser.parse_args(list(argv) if argv is not None else None)
    settings = load_settings()
    checks = run_checks(settings)
    width = max(len(c.name) for c in checks)
    color = os.isatty(1)
    paint = {Level.OK: "32", Level.WARN: "33", Level.FAIL: "31"}
    for c in checks:
        tag = f"{c.level.zh} {c.level.value:<4}"
        if color:
            tag = f"\033[{paint[c.level]}m{tag}\033[0m"
        print(f"{tag}  {c.name.ljust(width)}  {c.detail}")
    fails = sum(c.level is Level.FAIL for c in checks)
    warns = sum(c.level is Level.WARN for c in checks)
    print(f"\n{len(checks)} checks: {fails} FAIL, {warns} WARN"
          + ("" if fails else "  — ready / 可以启用"))
    return 1 if fails else 0
