"""``countyread doctor`` finds what is wrong with an installation, and only that."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from countyread import doctor
from countyread.doctor import Level, run_checks
from countyread.settings import load_settings
from models.registry import ModelRegistry

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_fresh_installation_passes_with_set_up_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COUNTYREAD_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("COUNTYREAD_DICOM_PORT", "0")
    monkeypatch.setenv("COUNTYREAD_API_PORT", "18765")
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    assert "正常 OK" in out and "0 FAIL" in out and "可以启用" in out
    checks = _by_name(run_checks(load_settings(data_dir=tmp_path / "var", dicom_port=0)))
    assert checks["database"].level is Level.OK and "journal wal" in checks["database"].detail
    for name in doctor.REQUIRED_MODELS:
        assert checks[f"model {name}"].level is Level.OK
    assert checks["secret key"].level is Level.WARN  # the dev placeholder
    assert checks["nodes"].level is Level.WARN  # nobody may send yet


def test_a_tampered_model_fails(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(REPO_MODELS, models, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    latest = ModelRegistry(models).versions("dr_nodule")[-1]  # the one the doctor loads
    onnx = models / "dr_nodule" / latest / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    settings = load_settings(data_dir=tmp_path / "var", models_dir=models, dicom_port=0)
    checks = _by_name(run_checks(settings))
    assert checks["model dr_nodule"].level is Level.FAIL
    assert "sha256 mismatch" in checks["model dr_nodule"].detail
    assert checks["model ct_nodule"].level is Level.OK


def test_port_in_use_and_unwritable_data_dir(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        checks = _by_name(run_checks(load_settings(data_dir=tmp_path / "var", dicom_port=port)))
    assert checks["DICOM port"].level is Level.WARN and "in use" in checks["DICOM port"].detail
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    checks = _by_name(run_checks(load_settings(data_dir=blocker / "var")))
    assert checks["data dir"].level is Level.FAIL
    assert "database" not in checks  # nothing else is tried on a data dir that cannot hold data


def test_queue_check_reports_stale_jobs_and_an_unreachable_broker(tmp_path: Path) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from countyread.context import AppContext
    from countyread.db import jobs, utcnow

    var = tmp_path / "var"
    ctx = AppContext.create(load_settings(data_dir=var))
    try:
        job = ctx.queue.enqueue("analyze", "k1", series_uid="1.2.3")
        with ctx.db.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job).values(
                run_after=utcnow() - timedelta(minutes=10)))
    finally:
        ctx.close()
    checks = _by_name(run_checks(load_settings(data_dir=var, dicom_port=0)))
    assert checks["job queue"].level is Level.WARN
    assert "1 queued, 1 due over 300 s ago" in checks["job queue"].detail
    assert "broker" not in checks  # the database queue needs none
    down = load_settings(data_dir=var, dicom_port=0, queue_backend="celery",
                         broker_url="redis://127.0.0.1:9/0")  # nothing listens there
    checks = _by_name(run_checks(down))
    assert checks["broker"].level is Level.FAIL and "127.0.0.1:9" in checks["broker"].detail
