"""Command-line steps for the CT nodule model: train, export (ONNX + card), eval.

``countyread train|export|eval training/configs/ct_nodule.toml`` reach these through
``training.cli``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from countyread.logs import configure_logging
from models.registry import SHIPPED_DIR
from training.ct_nodule.config import load_config

logger = logging.getLogger(__name__)


def _args(argv: Sequence[str] | None, what: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"countyread {what}", description=__doc__)
    p.add_argument("config", type=Path, help="TOML config, e.g. training/configs/ct_nodule.toml")
    p.add_argument("--models-dir", type=Path, default=SHIPPED_DIR, help="where to ship the model")
    p.add_argument("--held-out", type=int, default=0, help="evaluate on only the first N seeds")
    return p.parse_args(list(argv) if argv is not None else None)


def train_main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv, "train")
    configure_logging("INFO")
    from training.ct_nodule.train import train

    t0 = time.perf_counter()
    path = train(load_config(args.config))
    print(f"checkpoint {path} after {time.perf_counter() - t0:.0f} s")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """Export, evaluate on the held-out phantoms, choose the threshold and write the card."""
    args = _args(argv, "export")
    configure_logging("INFO")
    from training.ct_nodule.dataset import build_case
    from training.ct_nodule.evaluate import (
        choose_threshold,
        evaluate_phantoms,
        held_out_phantoms,
        onnx_runner,
        write_report,
    )
    from training.ct_nodule.export import export, write_card

    cfg = load_config(args.config)
    case = build_case(cfg.data.train_list[0], cfg.data, Path(cfg.work_dir) / "cases")
    with np.load(case) as d:
        parity_x = d["patches"][:16, None].astype(np.float32)
    out_dir, parity, fp16_err = export(cfg, args.models_dir, parity_x)
    print(f"ONNX parity (onnxruntime vs torch) max abs error {parity:.2e}; fp16 {fp16_err:.2e}")
    seeds = cfg.data.held_out_list[: args.held_out] if args.held_out else None
    phantoms = held_out_phantoms(cfg, seeds)
    run = onnx_runner(out_dir)
    if cfg.data.validation_list:  # threshold from validation seeds, metrics from held-out
        val = held_out_phantoms(cfg, cfg.data.validation_list)
        val_dets = evaluate_phantoms(val, run, threshold=0.5)[3]
        threshold = choose_threshold(
            val, val_dets, cfg.data.threshold_fp_per_scan, cfg.data.threshold_floor
        )
        metrics, result, _, dets = evaluate_phantoms(phantoms, run, threshold)
    else:
        metrics, result, _, dets = evaluate_phantoms(phantoms, run, threshold=0.5)
        threshold = choose_threshold(
            phantoms, dets, cfg.data.threshold_fp_per_scan, cfg.data.threshold_floor
        )
        if threshold != 0.5:
            metrics, result, _, dets = evaluate_phantoms(phantoms, run, threshold)
    report_dir = Path(cfg.work_dir) / "eval"
    write_report(report_dir, metrics, result)
    write_card(
        cfg, out_dir, parity, fp16_err, {k: round(v, 4) for k, v in metrics.items()}, threshold
    )
    print(json.dumps(metrics, indent=2))
    print(
        f"operating threshold {threshold:.3f}; card and ONNX in {out_dir}; report in {report_dir}"
    )
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv, "eval")
    configure_logging("INFO")
    from models.registry import ModelRegistry
    from training.ct_nodule.evaluate import (
        evaluate_phantoms,
        held_out_phantoms,
        onnx_runner,
        write_report,
    )

    cfg = load_config(args.config)
    artifact = ModelRegistry(args.models_dir).load(f"{cfg.name}@{cfg.version}")
    seeds = cfg.data.held_out_list[: args.held_out] if args.held_out else None
    metrics, result, _, _ = evaluate_phantoms(
        held_out_phantoms(cfg, seeds),
        onnx_runner(artifact.directory),
        artifact.card.operating_threshold,
    )
    write_report(Path(cfg.work_dir) / "eval", metrics, result)
    print(json.dumps(metrics, indent=2))
    return 0
