"""Fixtures for the DICOM node tests: a real node on an ephemeral port, real dcmtk peers."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from countyread.context import AppContext
from countyread.nodes import add_node
from countyread.settings import load_settings
from dicom_node.scp import DicomNode
from tests.conftest import require

SCU_AE = "TOWNSHIP1"


@cache
def _dcmtk_path(name: str) -> str | None:
    """The dcmtk binary called ``name``; pynetdicom installs same-named Python apps."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]
    for d in dirs:
        candidate = Path(d) / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        try:
            out = subprocess.run([str(candidate), "--version"], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return str(candidate)
    return None


def dcmtk(name: str) -> str:
    path = _dcmtk_path(name)
    require(path is not None, f"dcmtk {name} is not installed (apt-get install dcmtk)")
    assert path is not None
    return path


def dcmtk_env() -> dict[str, str]:
    # DESIGN.md 6: without TCP_NODELAY dcmtk stalls on Nagle + delayed ACK.
    return {**os.environ, "TCP_NODELAY": "1"}


def run_dcmtk(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk(name), *args], capture_output=True, text=True,
                          timeout=timeout, env=dcmtk_env())


def make_ctx(data_dir: Path, **overrides: Any) -> AppContext:
    settings = load_settings(data_dir=data_dir, dicom_host="127.0.0.1", environment="test",
                             **overrides)
    # Settings validate dicom_port >= 1; an ephemeral port (0) is a test-only need.
    settings = settings.model_copy(update={"dicom_port": 0})
    return AppContext.create(settings)


#: Both protocol engines serve every node test (setting ``dicom_engine``).
ENGINES = ("fast", "pynetdicom")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def ctx(tmp_path: Path, engine: str) -> Iterator[AppContext]:
    context = make_ctx(tmp_path / "var", dicom_engine=engine)
    add_node(context.db, name="Township 1 hospital", ae_title=SCU_AE)
    yield context
    context.close()


@pytest.fixture()
def node(ctx: AppContext) -> Iterator[DicomNode]:
    n = DicomNode(ctx)
    n.start()
    yield n
    n.stop()


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "send"
    d.mkdir()
    return d


def realdata_series() -> Path:
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata" / (
        "lung-ct-A0002/series-B40f"
    )


def copytree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
