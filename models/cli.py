"""``countyread models [list|verify]``: list shipped models and verify their sha256."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from countyread.errors import ModelError
from models.registry import ModelRegistry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="countyread models", description=__doc__)
    parser.add_argument("action", choices=["list", "verify"], nargs="?", default="list")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: settings")
    args = parser.parse_args(list(argv) if argv is not None else None)
    models_dir = args.models_dir
    if models_dir is None:
        from countyread.settings import load_settings

        models_dir = load_settings().models_dir
    registry = ModelRegistry(models_dir)
    failures = 0
    for name in registry.names():
        for version in registry.versions(name):
            spec = f"{name}@{version}"
            if args.action == "list":
                card = registry.read_card(name, version)
                metrics = ", ".join(f"{k}={v:.3g}" for k, v in sorted(card.metrics.items()))
                print(f"{spec}\t{card.task}\t{metrics}\t{card.statement}")
                continue
            try:
                registry.load(spec)
            except ModelError as exc:
                failures += 1
                print(f"FAIL {spec}: {exc}", file=sys.stderr)
            else:
                print(f"ok   {spec}")
    return 1 if failures else 0
