"""Structured logging: ``time level logger message key=value ...``.

Callers pass structured fields with ``extra={...}`` (study_uid, series_uid, model,
duration_ms). Patient names and IDs are never passed, so they never reach a log.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STD_ATTRS}
        if not fields:
            return base
        return base + " " + " ".join(f"{k}={v}" for k, v in sorted(fields.items()))


def configure_logging(level: str = "INFO", log_dir: Path | None = None) -> None:
    """Log to stderr and, when ``log_dir`` is given, to ``log_dir/countyread.log``."""
    fmt = KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_dir / "countyread.log", encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    # pynetdicom logs every PDU at INFO; keep its association chatter at WARNING.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
