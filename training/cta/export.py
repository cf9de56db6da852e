"""Export the trained vessel network to ONNX, check parity, evaluate, write the card.

``nice -n 10 python -m training.cta.export --config training/cta/config.toml``
writes ``models/cta_vessels/<version>/{model.onnx, model.fp16.onnx, card.json, CARD.md}``;
``--add-fp16 models/cta_vessels/1.2.0`` adds the fp16 variant to an exported model.

The fp16 variant is what the runtime serves on CUDA/TensorRT (``models.runtime``). It
ships only when its lumen mask on a held-out phantom agrees with the fp32 mask (Dice
>= ``FP16_MIN_MASK_AGREEMENT``): the logits of a 3-D UNet drift by ~1e-2 in half
precision, which matters only where a voxel sits at the threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16

from inference.cta.segment import Predict, logit_of, predict_logits
from models.card import InputSpec, ModelCard, TrainingData
from models.registry import sha256_file
from training.cta.data import make_case
from training.cta.evaluate import (
    evaluate,
    evaluate_project,
    project_case,
    score_logits,
    synth_case,
)
from training.cta.model import HU_CENTER, HU_SCALE, HU_WINDOW, SPACING_MM, build_net

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
CANDIDATE_THRESHOLDS = (0.5, 0.73, 0.88, 0.92, 0.95, 0.98)
FP16_FILE = "model.fp16.onnx"
FP16_MIN_MASK_AGREEMENT = 0.995


def _predictor(path: Path) -> Predict:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {"image": x.astype(np.float32)})[0], np.float32)

    return predict


def fp16_check(fp32: Path, fp16: Path, seed: int, threshold: float) -> tuple[float, float]:
    """(max abs logit error, Dice of the fp16 mask against the fp32 mask) on a held-out
    synthetic phantom, through the pipeline's tiling."""
    case = synth_case(seed)
    a = predict_logits(case.hu, _predictor(fp32))[0].astype(np.float32)
    b = predict_logits(case.hu, _predictor(fp16))[0].astype(np.float32)
    cut = logit_of(threshold)
    ma, mb = a > cut, b > cut
    agreement = 2.0 * float((ma & mb).sum()) / max(1.0, float(ma.sum() + mb.sum()))
    return float(np.abs(a - b).max()), agreement


def add_fp16(model_dir: Path, seed: int) -> float | None:
    """Write ``model.fp16.onnx`` beside ``model.onnx`` and record it in the card when its
    mask agrees with fp32's; returns the logit error, or None when it was not shipped."""
    fp32, fp16 = model_dir / "model.onnx", model_dir / FP16_FILE
    # keep_io_types: the session still takes and returns float32, the casts are in-graph.
    # Batch norms stay float32: in half precision they moved 1.2.0's logits by up to 10.8
    # and its mask by 4 % (Dice 0.957 against fp32 on phantom 900); kept in float32, 0.03
    # and 0.99996.
    half = convert_float_to_float16(
        onnx.load(str(fp32)), keep_io_types=True, op_block_list=["BatchNormalization"]
    )
    onnx.save(half, str(fp16))
    card = ModelCard.model_validate_json((model_dir / "card.json").read_text(encoding="utf-8"))
    error, agreement = fp16_check(fp32, fp16, seed, card.operating_threshold)
    logger.info("fp16 check", extra={"max_abs_error": error, "mask_dice_vs_fp32": agreement})
    if agreement < FP16_MIN_MASK_AGREEMENT:
        fp16.unlink()
        logger.warning("fp16 variant dropped", extra={"mask_dice_vs_fp32": agreement})
        return None
    card = card.model_copy(
        update={
            "sha256": {**card.sha256, FP16_FILE: sha256_file(fp16)},
            "fp16_max_abs_error": error,
            "metrics": {**card.metrics, "fp16_mask_dice_vs_fp32": round(agreement, 4)},
        }
    )
    _write_card(model_dir, card)
    return error


def _write_card(out_dir: Path, card: ModelCard) -> None:
    (out_dir / "card.json").write_text(
        json.dumps(card.model_dump(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "CARD.md").write_text(card.markdown(), encoding="utf-8")


def export_onnx(net: torch.nn.Module, path: Path) -> None:
    """ONNX opset 17 with free batch and spatial axes (tiles of any size)."""
    net.eval()
    example = torch.zeros(1, 1, 64, 64, 64)
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": axes},
        opset_version=17,
        dynamo=False,
    )


def parity(net: torch.nn.Module, sess: ort.InferenceSession, patch: np.ndarray) -> float:
    """Max abs difference torch vs onnxruntime on random input and on a phantom patch."""
    rng = np.random.default_rng(0)
    worst = 0.0
    inputs = (rng.normal(0, 1, (1, 1, 64, 64, 64)).astype(np.float32), patch[None, None])
    for x in inputs:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"image": x})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def calibrate(predict: Predict, seed: int, project_seed: int | None = None) -> float:
    """The probability threshold with the best score on training phantoms.

    Without ``project_seed``: Dice on synthetic training case ``seed``. With it: the
    mean of Dice and clDice over that case and project training phantom ``project_seed``
    (the acceptance asks for both figures on both phantom families; Dice alone on the
    synthetic family chose a threshold that dropped thin project vessels).
    """
    cases = [synth_case(seed)] + ([project_case(project_seed)] if project_seed is not None else [])
    logits = [predict_logits(c.hu, predict)[0] for c in cases]
    best, best_p = -1.0, 0.5
    for p in CANDIDATE_THRESHOLDS:
        scores = [score_logits(c, lg, logit_of(p)) for c, lg in zip(cases, logits, strict=True)]
        if project_seed is None:
            value = scores[0].dice
        else:
            value = float(np.mean([s.dice + s.cldice for s in scores]))
        if value > best:
            best, best_p = value, p
    return best_p


def export(config_path: Path, models_dir: Path | None = None) -> ModelCard:
    """Export, check and card the trained network into ``models_dir/cta_vessels/<version>``.

    ``models_dir`` defaults to the shipped ``models/``; a scratch directory keeps a
    candidate out of the registry (which serves the highest version by default).
    """
    cfg = tomllib.loads(config_path.read_text(encoding="utf-8"))
    torch.set_num_threads(int(cfg["threads"]))
    state = torch.load(Path(cfg["out_dir"]) / "checkpoint.pt", weights_only=False)
    net = build_net()
    net.load_state_dict(state["net"])
    net.eval()
    out_dir = (models_dir or REPO / "models") / "cta_vessels" / str(cfg["version"])
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    export_onnx(net, onnx_path)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    case = make_case(int(cfg["held_out_seeds"][0]))
    worst = parity(net, sess, case.image[60:124, 20:84, 30:94])

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {"image": x})[0])

    # operating threshold calibrated on training cases only (never on held-out seeds)
    calib_project = cfg.get("calibration_project_seed")
    threshold = calibrate(
        predict,
        int(cfg["train_seeds"][0]),
        int(calib_project) if calib_project is not None else None,
    )
    logit = logit_of(threshold)
    metrics = evaluate(list(range(*cfg["held_out_seeds"])), predict, logit)
    if cfg.get("project_held_out_seeds"):
        metrics.update(
            evaluate_project(list(range(*cfg["project_held_out_seeds"])), predict, logit)
        )
    metrics["train_iterations"] = float(state["iteration"])
    card = ModelCard(
        name="cta_vessels",
        version=str(cfg["version"]),
        task="head/neck CTA arterial lumen segmentation (binary), 3-D UNet run on 64^3 tiles",
        inputs=[
            InputSpec(
                name="image",
                shape=["batch", 1, "z", "y", "x"],
                spacing_mm=[SPACING_MM] * 3,
                intensity=f"HU clipped to [{HU_WINDOW[0]:g}, {HU_WINDOW[1]:g}], "
                f"(HU - {HU_CENTER:g}) / {HU_SCALE:g}",
            )
        ],
        outputs=["logits (lumen where sigmoid(logit) > operating_threshold)"],
        classes=["vessel_lumen"],
        training_data=TrainingData(
            source=(
                "phantom: training.cta.synth (arterial)"
                + (
                    " + training.phantoms.cta (cached project phantoms)"
                    if cfg.get("project_cases")
                    else ""
                )
            ),
            seeds=list(range(*cfg["train_seeds"])),
            held_out_seeds=list(range(*cfg["held_out_seeds"])),
            config=str(config_path),
            notes=str(
                cfg.get(
                    "card_notes",
                    "Dice/clDice on held-out phantoms at 1 mm through the pipeline's tiling",
                )
            ),
        ),
        metrics={k: round(v, 4) for k, v in metrics.items()},
        sha256={"model.onnx": sha256_file(onnx_path)},
        reproduce=str(
            cfg.get(
                "reproduce",
                f"nice -n 10 python -m training.cta.train --config {config_path} --fresh && "
                f"nice -n 10 python -m training.cta.export --config {config_path}",
            )
        ),
        opset=17,
        parity_max_abs_error=worst,
        operating_threshold=threshold,
    )
    _write_card(out_dir, card)
    add_fp16(out_dir, int(cfg["held_out_seeds"][0]))
    logger.info("exported", extra={"metrics": metrics, "parity": worst})
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("training/cta/config.toml"))
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="write here instead of models/"
    )
    parser.add_argument(
        "--add-fp16",
        type=Path,
        default=None,
        metavar="MODEL_DIR",
        help="only add the fp16 variant to this exported model (e.g. models/cta_vessels/1.2.0)",
    )
    parser.add_argument("--fp16-seed", type=int, default=900, help="held-out phantom for the check")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.add_fp16 is not None:
        error = add_fp16(args.add_fp16, args.fp16_seed)
        print("fp16 not shipped: mask disagrees" if error is None else f"fp16 error {error:.2e}")
        return
    card = export(args.config, args.models_dir)
    print(json.dumps(card.metrics, indent=2))


if __name__ == "__main__":
    main()
