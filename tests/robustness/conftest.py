"""Fixtures shared by the robustness modules: one small chest phantom per session."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from countyread.settings import Settings
from inference.ct_nodule import CTNodulePipeline
from tests.robustness.harness import base_datasets, small_chest_ct
from training.phantoms.ct import CTPhantom


@pytest.fixture(scope="session")
def phantom() -> CTPhantom:
    return small_chest_ct()


@pytest.fixture(scope="session")
def series(phantom: CTPhantom) -> list[Dataset]:
    """The phantom as the head-first supine scanner sends it; tests edit clones only."""
    return base_datasets(phantom)


@pytest.fixture(scope="session")
def pipeline() -> CTNodulePipeline:
    """The CT nodule pipeline for direct runs (``harness.analyse``); one thread: shared CPUs."""
    return CTNodulePipeline.create(Settings(intra_op_threads=1))
