"""The contract between the analysis worker and the pipelines.

The worker gathers a study's stored series into a :class:`StudyInput`, calls
``Pipeline.analyze`` and persists the :class:`PipelineOutput` (findings to the database,
images as PNG and arrays as ``.npz`` under the analysis directory). Pipelines raise
:class:`countyread.errors.NotAnalyzableError` with the reason a radiologist will read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from countyread.domain import AnalysisResult


@dataclass(frozen=True, slots=True)
class SeriesInput:
    """One stored series: header summary plus the paths of its instance files."""

    series_uid: str
    modality: str | None
    series_description: str | None
    body_part: str | None
    paths: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class StudyInput:
    """All stable series of a study; ``trigger_series_uid`` is the one that became stable."""

    study_uid: str
    trigger_series_uid: str
    series: tuple[SeriesInput, ...]


@dataclass(frozen=True, slots=True)
class PipelineOutput:
    """A result plus what the worker writes beside it.

    ``images``: name -> RGB uint8 array (H x W x 3), saved as ``<name>.png``; a finding's
    ``key_image`` names one of them. ``arrays``: name -> array, saved together in
    ``arrays.npz`` (e.g. segmentation masks for the SEG export, with the selected series'
    geometry recorded by the pipeline in ``arrays``).
    """

    result: AnalysisResult
    images: tuple[tuple[str, npt.NDArray[np.uint8]], ...] = ()
    arrays: tuple[tuple[str, npt.NDArray[Any]], ...] = ()


class Pipeline(Protocol):
    """An analysis pipeline; created once per worker and reused (sessions are costly)."""

    name: str

    def analyze(self, study: StudyInput) -> PipelineOutput: ...
