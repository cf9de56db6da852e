"""Export a NoduleNet checkpoint to ONNX (opset 17) with a parity check, an fp16 variant,
and the model card; the result is a registry entry ``models/<name>/<version>/``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16

from models.card import InputSpec, ModelCard, TrainingData
from models.networks import NoduleNet
from models.registry import FP16_FILE, FP32_FILE, sha256_file
from training.ct_nodule.config import NoduleTrainingConfig
from training.ct_nodule.train import checkpoint_path

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_LIMIT = 1e-4
MAX_ONNX_BYTES = 20 * 1024 * 1024


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def export(
    cfg: NoduleTrainingConfig, out_root: Path, parity_inputs: np.ndarray | None = None
) -> tuple[Path, float, float]:
    """Write model.onnx + model.fp16.onnx; returns (directory, fp32 parity, fp16 error)."""
    from inference.ct_nodule.patches import PATCH

    model = NoduleNet()
    state = torch.load(checkpoint_path(cfg), weights_only=False)
    model.load_state_dict(state["model"])
    model.eval()
    out_dir = out_root / cfg.name / cfg.version
    out_dir.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, 1, PATCH, PATCH, PATCH)
    fp32 = out_dir / FP32_FILE
    torch.onnx.export(
        model,
        (dummy,),
        str(fp32),
        input_names=["patch"],
        output_names=["logit", "mask_logit"],
        dynamic_axes={"patch": {0: "batch"}, "logit": {0: "batch"}, "mask_logit": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(fp32)))
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, (8, 1, PATCH, PATCH, PATCH)).astype(np.float32)]
    if parity_inputs is not None:
        inputs.append(parity_inputs.astype(np.float32))
    sess = _session(fp32)
    parity = 0.0
    ref_outputs = []
    with torch.no_grad():
        for x in inputs:
            ref = [t.numpy() for t in model(torch.from_numpy(x))]
            got = sess.run(None, {"patch": x})
            ref_outputs.append((x, ref))
            parity = max(
                parity, *(float(np.abs(r - g).max()) for r, g in zip(ref, got, strict=True))
            )
    if parity >= PARITY_LIMIT:
        raise RuntimeError(f"ONNX parity failed: max abs error {parity:.2e} >= {PARITY_LIMIT}")
    half = convert_float_to_float16(
        onnx.load(str(fp32)), keep_io_types=True, op_block_list=["Resize"]
    )
    fp16 = out_dir / FP16_FILE
    onnx.save(half, str(fp16))
    sess16 = _session(fp16)
    fp16_err = 0.0
    for x, ref in ref_outputs:
        got = sess16.run(None, {"patch": x})
        fp16_err = max(
            fp16_err, *(float(np.abs(r - g).max()) for r, g in zip(ref, got, strict=True))
        )
    for path in (fp32, fp16):
        if path.stat().st_size > MAX_ONNX_BYTES:
            raise RuntimeError(f"{path.name} is larger than 20 MB")
    logger.info("exported", extra={"parity": parity, "fp16_error": fp16_err})
    return out_dir, parity, fp16_err


def _notes(cfg: NoduleTrainingConfig) -> str:
    d, t = cfg.data, cfg.train
    parts = [
        f"candidates from inference.ct_nodule.candidates; {d.n_nodules} nodules per case, "
        f"sizes {d.nodule_size_mm} mm, matrix {d.matrix}"
    ]
    if t.init_from is not None:
        parts.append(f"fine-tuned from {t.init_from}")
    if d.hard_negative_model is not None:
        parts.append(
            f"{d.hard_negatives_per_case} hard negatives per case mined with "
            f"{d.hard_negative_model}"
            + (f" among candidates ranked below {d.mine_ranks}" if d.mine_ranks else "")
        )
    if d.validation_list:
        parts.append(
            f"operating threshold chosen on validation seeds "
            f"{d.validation_list[0]}..{d.validation_list[-1]} "
            f"(<= {d.threshold_fp_per_scan:g} false positives per scan above it, "
            f"floor {d.threshold_floor:g})"
        )
    if cfg.real:
        parts.append("real sources: " + ", ".join(s.kind for s in cfg.real))
    return "; ".join(parts)


def write_card(
    cfg: NoduleTrainingConfig,
    out_dir: Path,
    parity: float,
    fp16_err: float,
    metrics: dict[str, float],
    threshold: float,
) -> ModelCard:
    from inference.ct_nodule.patches import PATCH

    files = [FP32_FILE] + ([FP16_FILE] if (out_dir / FP16_FILE).exists() else [])
    card = ModelCard(
        name=cfg.name,
        version=cfg.version,
        task="chest CT pulmonary nodule candidate classification and segmentation "
        "(false-positive reduction + nodule mask per candidate)",
        inputs=[
            InputSpec(
                name="patch",
                shape=["batch", 1, PATCH, PATCH, PATCH],
                spacing_mm=[1.0, 1.0, 1.0],
                intensity="HU clipped to [-1000, 500], mapped linearly to [-1, 1]; "
                "isotropic spacing max(1, radius/4) mm along the volume axes",
            )
        ],
        outputs=["logit (batch, 1): nodule vs not", "mask_logit (batch, 1, 16, 16, 16)"],
        classes=["not_nodule", "nodule"],
        training_data=TrainingData(
            source="phantom (training.phantoms.ct.make_chest_ct)",
            seeds=cfg.data.train_list,
            held_out_seeds=cfg.data.held_out_list,
            config=str(cfg.source),
            notes=_notes(cfg),
        ),
        metrics=metrics,
        sha256={f: sha256_file(out_dir / f) for f in files},
        reproduce=(
            f"nice -n 10 countyread train {cfg.source} && countyread export {cfg.source} && "
            f"countyread eval {cfg.source}"
        ),
        opset=OPSET,
        parity_max_abs_error=parity,
        fp16_max_abs_error=fp16_err,
        operating_threshold=threshold,
    )
    (out_dir / "card.json").write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out_dir / "CARD.md").write_text(card.markdown(), encoding="utf-8")
    return card
