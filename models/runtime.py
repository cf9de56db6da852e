"""ONNX Runtime sessions: provider choice at start-up, thread counts, fp16 + IO binding on CUDA.

The service runs on onnxruntime + numpy alone. ``choose_providers`` is a pure function of
the settings and of what ``onnxruntime.get_available_providers()`` offers, so the GPU
paths are selected automatically on a CUDA machine and unit-tested here without one.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from countyread.errors import ConfigurationError, ModelError
from countyread.settings import Settings
from models.registry import ModelArtifact

logger = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}

_logged_once: set[str] = set()
_log_lock = threading.Lock()


def choose_providers(requested: str, enable_tensorrt: bool, available: list[str]) -> list[str]:
    """Ordered execution providers; CPU always closes the list as the fallback.

    ``requested`` is ``'auto'`` (TensorRT if enabled and available, then CUDA, then CPU)
    or a comma list such as ``'cuda,cpu'``; naming a provider this build lacks is a
    configuration error rather than a silent fallback.
    """
    text = requested.strip().lower()
    if text == "auto":
        wanted = ([TENSORRT] if enable_tensorrt else []) + [CUDA, CPU]
        chosen = [p for p in wanted if p in available or p == CPU]
    else:
        chosen = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if part not in _ALIASES:
                raise ConfigurationError(f"unknown execution provider {part!r}")
            provider = _ALIASES[part]
            if provider not in available and provider != CPU:
                raise ConfigurationError(f"execution provider {part!r} is not available here")
            if provider not in chosen:
                chosen.append(provider)
        if CPU not in chosen:
            chosen.append(CPU)
    return chosen


@functools.cache
def nvidia_driver_present() -> bool:
    """True when the NVIDIA driver library loads, i.e. a CUDA device can exist here.

    onnxruntime-gpu advertises CUDA and TensorRT on every machine; asking for them where
    no driver is installed makes onnxruntime log a loud load error and fall back to CPU.
    Checking for ``libcuda.so.1`` first keeps CPU-only boxes quiet and starts them on
    the CPU plan directly.
    """
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def usable_providers() -> list[str]:
    """The providers this build offers, less the GPU ones when no driver is present."""
    available = list(ort.get_available_providers())
    if not nvidia_driver_present():
        dropped = [p for p in available if p in (CUDA, TENSORRT)]
        available = [p for p in available if p not in (CUDA, TENSORRT)]
        if dropped:
            with _log_lock:
                if "no-driver" not in _logged_once:
                    _logged_once.add("no-driver")
                    logger.info("no NVIDIA driver found: running models on the CPU",
                                extra={"not_used": ",".join(dropped)})
    return available


def thread_count(configured: int) -> int:
    """Intra-op threads: the configured number, or one per core this process may use."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """Which file, providers and binding mode a session will use."""

    providers: tuple[str, ...]
    model_file: str
    use_io_binding: bool
    threads: int


def plan_session(artifact_has_fp16: bool, providers: list[str], threads: int) -> SessionPlan:
    """On CUDA/TensorRT use the fp16 variant when shipped and bind IO on the device."""
    on_gpu = providers[0] in (CUDA, TENSORRT)
    model_file = "model.fp16.onnx" if on_gpu and artifact_has_fp16 else "model.onnx"
    return SessionPlan(tuple(providers), model_file, on_gpu, threads)


class ModelSession:
    """One onnxruntime session, created once per worker and reused for every call."""

    def __init__(self, artifact: ModelArtifact, plan: SessionPlan) -> None:
        self.artifact = artifact
        self.plan = plan
        options = ort.SessionOptions()
        options.intra_op_num_threads = plan.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = artifact.directory / plan.model_file
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=list(plan.providers)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {path.name}: {exc}") from exc
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._input_dtype = (
            np.float16 if "float16" in self._session.get_inputs()[0].type else np.float32
        )
        self.active_provider = self._session.get_providers()[0]
        key = f"{artifact.card.name}@{artifact.card.version}:{self.active_provider}"
        with _log_lock:
            if key not in _logged_once:
                _logged_once.add(key)
                logger.info(
                    "onnxruntime session ready",
                    extra={
                        "model": f"{artifact.card.name}@{artifact.card.version}",
                        "provider": self.active_provider,
                        "file": plan.model_file,
                        "threads": plan.threads,
                        "io_binding": plan.use_io_binding,
                    },
                )

    def run(self, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[np.float32]]:
        """Run the network; outputs come back as float32 whatever the variant."""
        feed = {k: np.ascontiguousarray(v, dtype=self._input_dtype) for k, v in inputs.items()}
        if self.plan.use_io_binding:
            outputs = self._run_bound(feed)
        else:
            outputs = self._session.run(self.output_names, feed)
        return {
            n: np.asarray(o, dtype=np.float32)
            for n, o in zip(self.output_names, outputs, strict=True)
        }

    def _run_bound(self, feed: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        # Inputs copied to the device once, outputs allocated there: avoids the extra
        # host round trips a plain run() makes per call on CUDA.
        binding = self._session.io_binding()
        for name, array in feed.items():
            device_value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
            binding.bind_ortvalue_input(name, device_value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        self._session.run_with_iobinding(binding)
        return [np.asarray(v) for v in binding.copy_outputs_to_cpu()]


def create_session(artifact: ModelArtifact, settings: Settings) -> ModelSession:
    """Build the session the settings and this machine call for.

    onnxruntime-gpu lists CUDA among its providers even on a machine without a GPU
    and then quietly falls back to CPU; when that happens the session is rebuilt
    with the CPU plan (fp32 file, no device binding) so the GPU-only paths never run
    on host memory.
    """
    threads = thread_count(settings.intra_op_threads)
    providers = choose_providers(
        settings.providers, settings.enable_tensorrt, usable_providers()
    )
    plan = plan_session(artifact.fp16_path is not None, providers, threads)
    session = ModelSession(artifact, plan)
    if plan.use_io_binding and session.active_provider == CPU:
        logger.warning(
            "GPU provider unavailable at run time, using CPU",
            extra={"model": artifact.card.name, "requested": ",".join(providers)},
        )
        session = ModelSession(artifact, plan_session(False, [CPU], threads))
    return session
