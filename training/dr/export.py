"""Export a trained DR nodule model to ONNX (+ fp16), check parity, evaluate, write the card.

    nice -n 10 python -m training.dr.export --config training/dr/config.toml \
        --checkpoint var/training/dr_nodule/model.pt [--models-dir models]

Writes ``<models-dir>/dr_nodule/<version>/{model.onnx, model.fp16.onnx, card.json,
CARD.md}``. Parity: onnxruntime vs torch on random and phantom inputs (max abs error);
the fp16 file is shipped only when its error on phantoms stays below ``FP16_TOLERANCE``.
Metrics come from the held-out seeds of the config, run through the service's own
preparation and decoding; the operating threshold is the lowest score threshold whose
false positives stay <= ``OPERATING_FP_RATE`` per image on the analytic and on the DRR
held-out images (a triage flag: a few extra reads are cheaper than a missed mass). The
thresholds that reach each FP rate for nodules >= 10 mm are recorded as
``ge10mm_threshold_at_*_fp`` (``drr_ge10mm_threshold_at_*_fp`` on the DRR set).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.transformers import float16
from tqdm import tqdm

from inference.dr.detect import INPUT_SIZE
from inference.dr.image import KNEE_PHRASE
from models.card import InputSpec, ModelCard, TrainingData
from training.dr.data import Sample, cached_chest, sample_from_chest
from training.dr.heldout import HeldOutReport, evaluate
from training.dr.net import DRNoduleNet, FlipAveraged, ShiftAveraged
from training.dr.size_calibration import SizeCalibration, fit, matched_diameters
from training.dr.train import TrainConfig

logger = logging.getLogger(__name__)

OPSET = 17
FP16_TOLERANCE = 0.02
OPERATING_FP_RATE = 0.25
MIN_OPERATING = 0.3


def load_net(checkpoint: Path) -> DRNoduleNet:
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    net = DRNoduleNet(int(state.get("width", 16)))
    net.load_state_dict(state["model"])
    return net.eval()


# ONNX metadata key naming the shifts of a shift-averaged export (training.dr.net.ShiftAveraged),
# so that training.dr.warm_start can rebuild what the file computes.
SHIFT_METADATA = "countyread.dr.shift_average"


def export_onnx(net: torch.nn.Module, path: Path) -> None:
    dummy = torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE)
    torch.onnx.export(
        net,
        (dummy,),
        str(path),
        input_names=["image"],
        output_names=["heatmap", "diameter"],
        dynamic_axes={"image": {0: "batch"}, "heatmap": {0: "batch"}, "diameter": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    if isinstance(net, ShiftAveraged):
        model = onnx.load(str(path))
        entry = model.metadata_props.add()
        entry.key, entry.value = SHIFT_METADATA, ",".join(str(v) for v in net.shifts)
        onnx.save(model, str(path))
    onnx.checker.check_model(onnx.load(str(path)))


def export_fp16(src: Path, dst: Path) -> None:
    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=False)
    onnx.save(model, str(dst))


def ort_runner(path: Path):  # type: ignore[no-untyped-def]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the CPU is shared (see training.dr.train)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    dtype = np.float16 if "float16" in sess.get_inputs()[0].type else np.float32

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, d = sess.run(["heatmap", "diameter"], {"image": x.astype(dtype)})
        return np.asarray(h, np.float32), np.asarray(d, np.float32)

    return run


def parity(net: torch.nn.Module, path: Path, inputs: list[np.ndarray]) -> float:
    run = ort_runner(path)
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            th, td = net(torch.from_numpy(x))
            oh, od = run(x)
            worst = max(worst, float(np.abs(th.numpy() - oh).max()))
            # diameters in pixels: compare relative to size so both outputs weigh alike
            worst = max(worst, float((np.abs(td.numpy() - od) / np.maximum(td.numpy(), 1)).max()))
    return worst


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def operating_threshold(report: HeldOutReport) -> float:
    """Lowest threshold with <= OPERATING_FP_RATE false positives per held-out image."""
    thr = report.all_sizes.threshold[OPERATING_FP_RATE]
    if not np.isfinite(thr):
        thr = 0.5
    return round(max(MIN_OPERATING, float(thr)), 3)


def held_out_samples(cfg: TrainConfig, raw_cache: Path | None = None) -> list[Sample]:
    seeds = range(*cfg.held_out_seeds)
    return [
        sample_from_chest(cached_chest(s, raw_cache), cfg.prep_knee)
        for s in tqdm(seeds, desc="held-out", unit="img")
    ]


def calibrate_sizes(
    net: DRNoduleNet,
    cfg: TrainConfig,
    model: torch.nn.Module | None = None,
    raw_cache: Path | None = None,
) -> SizeCalibration:
    """Fit the diameter calibration on calibration seeds (neither trained on nor held out).

    ``model`` is what is exported (``net`` or a wrapper of it); its outputs are fitted and
    the calibration goes into ``net``.
    """
    model = net if model is None else model
    if not cfg.calibration_seeds[1] > cfg.calibration_seeds[0]:
        return SizeCalibration(0.0, 1.0, 0)
    samples = [
        sample_from_chest(cached_chest(s, raw_cache), cfg.prep_knee)
        for s in range(*cfg.calibration_seeds)
    ]
    samples += cfg.drr_samples(range(*cfg.drr_calibration_seeds))

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            h, d = model(torch.from_numpy(x))
        return h.numpy(), d.numpy()

    calibration = fit(matched_diameters(run, samples))
    net.size_a.fill_(calibration.a)
    net.size_b.fill_(calibration.b)
    logger.info("size calibration", extra={"a": calibration.a, "b": calibration.b})
    return calibration


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("training/dr/config.toml"))
    parser.add_argument("--checkpoint", type=Path, default=Path("var/training/dr_nodule/model.pt"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--reproduce", default="", help="command recorded in the card")
    parser.add_argument("--base-config", type=Path, default=None, help="stage-1 config")
    parser.add_argument("--notes", default="", help="extra training notes for the card")
    parser.add_argument(
        "--raw-cache",
        type=Path,
        default=None,
        help="keep the analytic held-out and calibration phantoms here (training.dr.data."
        "cached_chest), e.g. var/training/dr_heldout_raw as training.dr.compare uses",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)  # the CPU is shared (see training.dr.train)
    cfg = TrainConfig.load(args.config)
    base_seeds: range = range(0)
    if args.base_config is not None:  # stage 1 of a two-stage run: its seeds count too
        base_seeds = range(*TrainConfig.load(args.base_config).train_seeds)
    out = args.models_dir / cfg.name / cfg.version
    out.mkdir(parents=True, exist_ok=True)
    net = load_net(args.checkpoint)
    # what ships: the network, or the network and its mirror image averaged in one graph
    model: torch.nn.Module = FlipAveraged(net).eval() if cfg.flip_average else net
    if cfg.shift_average:
        model = ShiftAveraged(model, cfg.shift_average).eval()
    calibration = calibrate_sizes(net, cfg, model, args.raw_cache)
    fp32 = out / "model.onnx"
    export_onnx(model, fp32)
    samples = held_out_samples(cfg, args.raw_cache)
    rng = np.random.default_rng(0)
    probes = [rng.random((1, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32) for _ in range(2)]
    probes += [s.image[None, None] for s in samples[:4]]
    parity_error = parity(model, fp32, probes)
    fp16 = out / "model.fp16.onnx"
    export_fp16(fp32, fp16)
    fp16_error = parity(model, fp16, [s.image[None, None] for s in samples[:4]])
    files = {"model.onnx": sha256(fp32)}
    if fp16_error <= FP16_TOLERANCE:
        files["model.fp16.onnx"] = sha256(fp16)
    else:
        fp16.unlink()
        logger.warning("fp16 variant dropped", extra={"error": fp16_error})
    runner = ort_runner(fp32)
    report = evaluate(runner, samples)
    drr = cfg.drr_samples(range(*cfg.drr_held_out_seeds))
    drr_report = evaluate(runner, drr) if drr else None
    # The operating point keeps false positives <= OPERATING_FP_RATE per image on both
    # held-out sets (analytic and CT-projection DRR): the stricter of the two thresholds.
    operating = operating_threshold(report)
    if drr_report is not None:
        operating = max(operating, operating_threshold(drr_report))
    metrics = {k: round(v, 4) for k, v in report.metrics(operating).items()}
    for rate, thr in report.large.threshold.items():
        if np.isfinite(thr):
            metrics[f"ge10mm_threshold_at_{rate:g}_fp"] = round(float(thr), 4)
    if drr_report is not None:
        metrics |= {f"drr_{k}": round(v, 4) for k, v in drr_report.metrics(operating).items()}
        for rate, thr in drr_report.large.threshold.items():
            if np.isfinite(thr):
                metrics[f"drr_ge10mm_threshold_at_{rate:g}_fp"] = round(float(thr), 4)
    card = ModelCard(
        name=cfg.name,
        version=cfg.version,
        task="chest radiograph (DX/CR, PA/AP) nodule detection: centre heatmap + diameter",
        inputs=[
            InputSpec(
                name="image",
                shape=["batch", 1, INPUT_SIZE, INPUT_SIZE],
                spacing_mm=[],
                intensity=(
                    "display values (Modality LUT, VOI LUT/window, MONOCHROME1 inverted, "
                    "collimation cropped), 0.5-99.5 percentile scaled to [0, 1]"
                    + (
                        " with a "
                        + KNEE_PHRASE.format(knee=cfg.knee)
                        + " (values above the 99.5th percentile compressed below 1, not clipped)"
                        if cfg.prep_knee is not None
                        else ""
                    )
                    + ", long side "
                    f"resized to {INPUT_SIZE} px, centred, zero padded (inference.dr.image, "
                    "inference.dr.detect.letterbox); pixel size not fixed"
                ),
            )
        ],
        outputs=[
            "heatmap (batch, 1, 64, 64): nodule-centre probability, stride 4",
            "diameter (batch, 1, 64, 64): nodule diameter in input pixels",
        ],
        classes=["nodule"],
        training_data=TrainingData(
            source=(
                "phantom (training/dr/synth.py analytic chest radiographs"
                + (", training.phantoms.dr CT-projection DRRs)" if cfg.drr_fraction else ")")
            ),
            seeds=sorted(set(range(*cfg.train_seeds)) | set(base_seeds)),
            held_out_seeds=list(range(*cfg.held_out_seeds)),
            config=str(args.config),
            notes=(
                (
                    f"{cfg.steps} steps, batch {cfg.batch_size}"
                    + (f", init {cfg.init}" if cfg.init else "")
                    if cfg.steps
                    else f"no training steps: the network of {cfg.init} as it is"
                )
                + (
                    f"; {cfg.drr_fraction:.0%} of each batch from CT-projection DRR phantoms "
                    f"(training.phantoms.dr seeds {cfg.drr_train_seeds[0]}.."
                    f"{cfg.drr_train_seeds[1] - 1}, held out {cfg.drr_held_out_seeds[0]}.."
                    f"{cfg.drr_held_out_seeds[1] - 1}, metrics drr_*)"
                    if cfg.drr_fraction and cfg.steps
                    else ""
                )
                + (
                    f"; diameters calibrated log d -> {calibration.a} + {calibration.b} log d "
                    f"({calibration.n_pairs} nodules, analytic seeds "
                    f"{cfg.calibration_seeds[0]}..{cfg.calibration_seeds[1] - 1}, DRR seeds "
                    f"{cfg.drr_calibration_seeds[0]}..{cfg.drr_calibration_seeds[1] - 1})"
                    if calibration.n_pairs
                    else ""
                )
                + (
                    "; outputs are the mean of the film's and its mirror image's (one graph, "
                    "training.dr.net.FlipAveraged)"
                    if cfg.flip_average
                    else ""
                )
                + (
                    "; and over the film moved by "
                    f"{', '.join(str(v) for v in cfg.shift_average)} px along the diagonal, "
                    "moved back (training.dr.net.ShiftAveraged)"
                    if cfg.shift_average
                    else ""
                )
                + (f"; {args.notes}" if args.notes else "")
                + "; metrics as NODE21 counts (hit at IoU > 0.2, sensitivity at FP/image), "
                "ge10mm_* for nodules >= 10 mm"
            ),
        ),
        metrics=metrics,
        sha256=files,
        reproduce=args.reproduce
        or (
            f"nice -n 10 python -m training.dr.train --config {args.config} "
            f"--out {args.checkpoint.parent} && nice -n 10 python -m training.dr.export "
            f"--config {args.config} --checkpoint {args.checkpoint}"
        ),
        opset=OPSET,
        parity_max_abs_error=parity_error,
        fp16_max_abs_error=fp16_error,
        operating_threshold=operating,
    )
    (out / "card.json").write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / "CARD.md").write_text(card.markdown(), encoding="utf-8")
    logger.info("exported", extra={"dir": str(out), "metrics": json.dumps(metrics)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
