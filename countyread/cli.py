"""The ``countyread`` console script: one entry point, subcommands owned by packages.

Each subcommand lives in the package that owns it and parses its own arguments, so
``countyread phantom --help`` is written next to the phantom code. The core only maps
names to ``module:function`` and imports lazily (the core never imports a feature
package at import time).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from countyread import __version__
from countyread.errors import CountyReadError

#: name -> (module:function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("countyread.serve:main", "run DICOM node, analysis workers and API together"),
    "scp": ("dicom_node.cli:scp_main", "run the DICOM node (C-ECHO, C-STORE, MPPS) alone"),
    "worker": ("inference.worker:main", "run analysis workers alone"),
    "api": ("api.main:main", "run the worklist API and web page alone"),
    "send": ("dicom_node.cli:send_main", "send DICOM files to a node (C-STORE SCU)"),
    "nodes": ("dicom_node.cli:nodes_main", "list / add / disable known DICOM nodes"),
    "users": ("api.users_cli:main", "create and list users"),
    "db": ("countyread.dbcli:main", "create the database schema, show counts"),
    "doctor": ("countyread.doctor:main", "check this installation (disk, DB, models, GPU, ports)"),
    "prune": ("countyread.retention:main", "free disk: source images of old delivered studies"),
    "phantom": ("training.cli:phantom_main", "make synthetic phantom sets (CT, DR, CTA)"),
    "train": ("training.cli:train_main", "train a model from a config file"),
    "export": ("training.cli:export_main", "export a checkpoint to ONNX with parity check"),
    "eval": ("training.cli:eval_main", "evaluate a model on a held-out set"),
    "export-labels": ("training.labels_cli:main", "signed findings, DICOM SEG to LUNA16/NIfTI"),
    "models": ("models.cli:main", "list shipped models and verify their sha256"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        f"countyread {__version__}: imaging-AI service for county review centers",
        "",
        "usage: countyread COMMAND [options]   (countyread COMMAND --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        "Settings come from COUNTYREAD_* environment variables and the TOML file named by",
        "COUNTYREAD_CONFIG; see README.md (Configuration).",
    ]
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[Sequence[str]], int]:
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    func: Callable[[Sequence[str]], int] = getattr(module, func_name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        print(f"countyread {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"countyread: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return int(_resolve(COMMANDS[name][0])(rest) or 0)
    except CountyReadError as exc:
        print(f"countyread {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
