"""Pipelines by name, created lazily once per worker and then reused."""

from __future__ import annotations

import importlib
import logging
import threading

from countyread.settings import Settings
from inference.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: pipeline name -> "module:Class"; the class has ``create(settings) -> Pipeline``.
PIPELINES: dict[str, str] = {
    "ct_nodule": "inference.ct_nodule:CTNodulePipeline",
    "cta": "inference.cta:CTAPipeline",
    "dr_nodule": "inference.dr:DRNodulePipeline",
}


class PipelineRegistry:
    """Creates each pipeline on first use; ``get`` returns None when it is not installed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pipelines: dict[str, Pipeline] = {}
        self._missing: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Pipeline | None:
        with self._lock:
            if name in self._pipelines:
                return self._pipelines[name]
            if name in self._missing:
                return None
            target = PIPELINES.get(name)
            if target is None:
                self._missing[name] = "unknown pipeline"
                return None
            module_name, cls_name = target.split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                # Only "the pipeline package is absent" means not installed; a missing
                # dependency inside an existing pipeline is a real error and propagates.
                if exc.name is None or not module_name.startswith(exc.name):
                    raise
                self._missing[name] = "not installed"
                logger.info("pipeline not installed", extra={"pipeline": name})
                return None
            pipeline: Pipeline = getattr(module, cls_name).create(self.settings)
            self._pipelines[name] = pipeline
            return pipeline

    def why_missing(self, name: str) -> str:
        return self._missing.get(name, "unknown pipeline")
