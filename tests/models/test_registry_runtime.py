"""Model registry (sha256 at load) and onnxruntime provider selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from countyread.errors import ConfigurationError, ModelError
from countyread.settings import Settings
from models.card import ModelCard
from models.cli import main as models_main
from models.registry import ModelRegistry, parse_spec, sha256_file
from models.runtime import CPU, CUDA, TENSORRT, choose_providers, create_session, plan_session


def _write_model(root: Path, name: str = "toy", version: str = "1.0.0") -> Path:
    """A real ONNX graph (y = 2x) with a card, laid out as the registry expects."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "toy", [x], [y], [two]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory = root / name / version
    directory.mkdir(parents=True)
    onnx.save(model, directory / "model.onnx")
    card = {
        "name": name,
        "version": version,
        "task": "toy doubling",
        "inputs": [{"name": "x", "shape": ["n", 3], "spacing_mm": [], "intensity": "raw"}],
        "outputs": ["y"],
        "classes": ["value"],
        "training_data": {"source": "none", "config": "-"},
        "metrics": {"cpm": 1.0},
        "sha256": {"model.onnx": sha256_file(directory / "model.onnx")},
        "reproduce": "python make_toy.py",
    }
    (directory / "card.json").write_text(json.dumps(card))
    return directory


def test_load_verifies_sha256_and_runs(tmp_path: Path) -> None:
    _write_model(tmp_path, version="1.0.0")
    _write_model(tmp_path, version="1.10.0")
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["toy"]
    assert registry.versions("toy") == ["1.0.0", "1.10.0"]
    artifact = registry.load("toy")  # latest by numeric version order
    assert artifact.card.version == "1.10.0"
    assert artifact.ref.sha256 == artifact.card.sha256["model.onnx"]
    session = create_session(artifact, Settings(providers="cpu", intra_op_threads=1))
    out = session.run({"x": np.ones((2, 3), np.float32)})
    np.testing.assert_allclose(out["y"], 2.0)
    assert session.active_provider == CPU


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    directory = _write_model(tmp_path)
    with (directory / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        ModelRegistry(tmp_path).load("toy@1.0.0")
    assert models_main(["verify", "--models-dir", str(tmp_path)]) == 1


def test_missing_model_and_bad_spec(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        ModelRegistry(tmp_path).load("absent@1.0")
    with pytest.raises(ModelError):
        parse_spec("../etc@1")
    card_dir = _write_model(tmp_path)
    (card_dir / "card.json").write_text("{}")
    with pytest.raises(ModelError, match="invalid"):
        ModelRegistry(tmp_path).load("toy@1.0.0")


def test_card_markdown_has_statement() -> None:
    card = ModelCard.model_validate(
        {
            "name": "n",
            "version": "1",
            "task": "t",
            "inputs": [],
            "outputs": [],
            "classes": [],
            "training_data": {"source": "phantom", "seeds": [1, 2, 3, 4], "config": "c.toml"},
            "metrics": {},
            "sha256": {},
            "reproduce": "cmd",
        }
    )
    assert "not clinically validated" in card.markdown()
    assert "1..4 (4)" in card.markdown()


ALL = [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize(
    ("requested", "trt", "available", "expected"),
    [
        ("auto", False, [CPU], [CPU]),
        ("auto", False, ALL, [CUDA, CPU]),
        ("auto", True, ALL, [TENSORRT, CUDA, CPU]),
        ("auto", True, [CUDA, CPU], [CUDA, CPU]),
        ("cpu", True, ALL, [CPU]),
        ("cuda, cpu", False, ALL, [CUDA, CPU]),
        ("tensorrt", True, ALL, [TENSORRT, CPU]),
    ],
)
def test_choose_providers(
    requested: str, trt: bool, available: list[str], expected: list[str]
) -> None:
    assert choose_providers(requested, trt, available) == expected


def test_choose_providers_refuses_unknown_or_absent() -> None:
    with pytest.raises(ConfigurationError):
        choose_providers("rocm", False, ALL)
    with pytest.raises(ConfigurationError):
        choose_providers("cuda", False, [CPU])


def test_plan_uses_fp16_and_io_binding_only_on_gpu() -> None:
    gpu = plan_session(True, [CUDA, CPU], 4)
    assert (gpu.model_file, gpu.use_io_binding) == ("model.fp16.onnx", True)
    assert plan_session(False, [CUDA, CPU], 4).model_file == "model.onnx"
    cpu = plan_session(True, [CPU], 2)
    assert (cpu.model_file, cpu.use_io_binding, cpu.threads) == ("model.onnx", False, 2)


def test_auto_falls_back_to_cpu_without_a_device(tmp_path: Path) -> None:
    # onnxruntime-gpu lists CUDA even where no GPU exists; the session must still run.
    _write_model(tmp_path)
    artifact = ModelRegistry(tmp_path).load("toy@1.0.0")
    session = create_session(artifact, Settings(providers="auto", intra_op_threads=1))
    out = session.run({"x": np.full((1, 3), 3.0, np.float32)})
    np.testing.assert_allclose(out["y"], 6.0)


def test_gpu_providers_only_where_a_driver_is(tmp_path: Path) -> None:
    from models.runtime import nvidia_driver_present, usable_providers

    _write_model(tmp_path)
    artifact = ModelRegistry(tmp_path).load("toy@1.0.0")
    session = create_session(artifact, Settings(providers="auto", intra_op_threads=1))
    if nvidia_driver_present():
        assert session.plan.providers[0] in (CUDA, TENSORRT)
    else:
        # Straight to the CPU plan: no failed CUDA load first, fp32 file, no binding.
        assert CUDA not in usable_providers() and TENSORRT not in usable_providers()
        assert session.plan.providers == (CPU,)
        assert session.plan.model_file == "model.onnx" and not session.plan.use_io_binding


@pytest.mark.gpu
def test_cuda_session_uses_fp16_and_io_binding() -> None:
    """On a CUDA machine the shipped CT model runs fp16 with device IO binding."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here")
    artifact = ModelRegistry().load("ct_nodule")
    session = create_session(artifact, Settings(providers="auto"))
    if session.active_provider == CPU:
        pytest.skip("CUDA provider listed but no usable GPU on this machine")
    assert session.plan.model_file == "model.fp16.onnx"
    assert session.plan.use_io_binding
    x = np.zeros((2, 1, 16, 16, 16), np.float32)
    out = session.run({"patch": x})
    assert out["logit"].shape == (2, 1) and out["logit"].dtype == np.float32
