"""Command-line entry points of the training package (``countyread phantom|train|export|eval``).

Each ``*_main(argv)`` parses its own arguments and returns an exit code; the core CLI
(:mod:`countyread.cli`) maps subcommand names to them and imports this module lazily.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)

_PHANTOM_EPILOG = """\
examples:
  countyread phantom ct --seed 1000 --count 50 --out var/phantoms/ct-train --size small
  countyread phantom ct --seed 9000 --count 20 --out var/phantoms/ct-heldout --nodules 6
  countyread phantom dr --seed 1 --count 5 --out var/phantoms/dr --format both
  countyread phantom cta --seed 7 --count 2 --out var/phantoms/cta --phase noncontrast

Case i is made from seed S+i, so a set is reproduced exactly by its first seed and
count; keep training and held-out seed ranges apart. Each case goes to
OUT/<kind>-<seed>/ with dicom/ and/or nifti/ inside and truth.json (LPS mm) beside the
images; OUT/manifest.json lists the cases.
"""


def _phantom_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="countyread phantom",
        description="Make a set of synthetic phantoms with ground truth: chest CT with "
        "Lung-RADS nodules (ct), chest radiographs (dr) or head/neck CT angiography (cta).",
        epilog=_PHANTOM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=["ct", "dr", "cta"], help="what to make")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    p.add_argument("--count", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument(
        "--format",
        choices=["dicom", "nifti", "both"],
        default="dicom",
        help="DICOM series for the DICOM node, NIfTI image+labels for training, "
        "or both (default dicom)",
    )
    p.add_argument(
        "--size",
        choices=["small", "full"],
        default="full",
        help="full: clinical size (CT 512x512 at 0.6-0.9 mm, DR ~2500 px, CTA "
        "512x512); small: fast training size (CT 256x256 at 1.4 mm, DR 512 px, "
        "CTA 256x256 at 0.8 mm) (default full)",
    )
    p.add_argument(
        "--nodules",
        type=int,
        default=None,
        help="ct/dr: nodules per case, 0 for nodule-free cases (default: drawn "
        "from the seed, 0-6 for CT, 0-4 for DR)",
    )
    p.add_argument(
        "--nodule-size",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=None,
        help="ct/dr: nodule diameter range in mm (default 3 30 for CT, 5 30 for DR;"
        " a MAX over 30 allows masses)",
    )
    p.add_argument(
        "--phase",
        choices=["arterial", "venous", "noncontrast"],
        default=None,
        help="cta: contrast phase (default: arterial for 80%% of seeds)",
    )
    p.add_argument(
        "--vendor",
        choices=["GE", "SIEMENS", "PHILIPS", "UIH"],
        default=None,
        help="DICOM tag style (default: drawn from the seed)",
    )
    p.add_argument(
        "--charset",
        choices=["GB18030", "ISO_IR 192", "GBK"],
        default="GB18030",
        help="Specific Character Set of the Chinese patient names (default GB18030)",
    )
    return p


def _make(kind: str, seed: int, args: argparse.Namespace) -> Any:
    small = args.size == "small"
    if kind == "ct":
        from training.phantoms.ct import ChestCTConfig, make_chest_ct

        ct_kw: dict[str, Any] = {"n_nodules": args.nodules}
        if args.nodule_size:
            ct_kw["nodule_size_mm"] = tuple(args.nodule_size)
        cfg = ChestCTConfig.small(**ct_kw) if small else ChestCTConfig(**ct_kw)
        return make_chest_ct(seed, cfg)
    if kind == "dr":
        from training.phantoms.dr import ChestDRConfig, make_chest_dr

        dr_kw: dict[str, Any] = {"n_nodules": args.nodules}
        if args.nodule_size:
            dr_kw["nodule_size_mm"] = tuple(args.nodule_size)
        if small:
            dr_kw.update(size_px=512, ct_matrix=192, ct_pixel_mm=2.2, ct_slice_mm=2.5)
        return make_chest_dr(seed, ChestDRConfig(**dr_kw))
    from training.phantoms.cta import CTAConfig, make_head_neck_cta

    cta_cfg = CTAConfig.small(phase=args.phase) if small else CTAConfig(phase=args.phase)
    return make_head_neck_cta(seed, cta_cfg)


def _summary(phantom: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("nodules", "stenoses", "occlusions", "plaques"):
        if hasattr(phantom, name):
            out[name] = len(getattr(phantom, name))
    if hasattr(phantom, "phase"):
        out["phase"] = phantom.phase
    return out


def phantom_main(argv: Sequence[str]) -> int:
    """``countyread phantom``: make a reproducible set of phantoms on disk."""
    args = _phantom_parser().parse_args(list(argv))
    if args.count < 1:
        _phantom_parser().error("--count must be >= 1")
    if args.nodules is not None and args.nodules < 0:
        _phantom_parser().error("--nodules must be >= 0")
    from training.phantoms.dicom_writer import DicomOptions, write_dicom
    from training.phantoms.nifti import write_nifti

    options = DicomOptions(vendor=args.vendor, charset=args.charset)
    args.out.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in tqdm(range(args.count), desc=f"phantom {args.kind}", unit="case"):
        seed = args.seed + i
        phantom = _make(args.kind, seed, args)
        case_dir = args.out / f"{args.kind}-{seed:06d}"
        if args.format in ("dicom", "both"):
            write_dicom(phantom, case_dir / "dicom", options)
        if args.format in ("nifti", "both"):
            write_nifti(phantom, case_dir / "nifti")
        cases.append({"seed": seed, "dir": case_dir.name, **_summary(phantom)})
    manifest = {
        "kind": args.kind,
        "first_seed": args.seed,
        "count": args.count,
        "size": args.size,
        "format": args.format,
        "cases": cases,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.count} {args.kind} phantom(s) to {args.out}")
    return 0


# --- train / export / eval: dispatch on the config's ``name`` -----------------------
# Each task keeps its own steps in ``training/<task>/cli.py`` with ``train_main``,
# ``export_main`` and ``eval_main``; add your task to this table (append-only file).
TASK_CLIS: dict[str, str] = {"ct_nodule": "training.ct_nodule.cli"}


def _task_step(step: str, argv: Sequence[str]) -> int:
    import importlib
    import tomllib
    from pathlib import Path

    args = list(argv)
    config = next((a for a in args if a.endswith(".toml")), None)
    if config is None:
        print(f"usage: countyread {step} CONFIG.toml [options]  (tasks: {', '.join(TASK_CLIS)})")
        return 2
    name = str(tomllib.loads(Path(config).read_text(encoding="utf-8")).get("name", ""))
    if name not in TASK_CLIS:
        print(f"countyread {step}: no trainer for {name!r} (known: {', '.join(TASK_CLIS)})")
        return 2
    module = importlib.import_module(TASK_CLIS[name])
    return int(getattr(module, f"{step}_main")(args))


def train_main(argv: Sequence[str]) -> int:
    return _task_step("train", argv)


def export_main(argv: Sequence[str]) -> int:
    return _task_step("export", argv)


def eval_main(argv: Sequence[str]) -> int:
    return _task_step("eval", argv)
