"""One complete path with real peers: scanner -> DICOM node -> AI -> radiologist -> PACS.

dcmtk's storescu plays the township scanner, our node stores and assembles the study,
the CT nodule pipeline analyses it with the shipped ONNX model, a radiologist reviews and
signs through the HTTP API, and the outbox delivers SR/SEG/SC/KOS to a real Orthanc,
where every object arrives exactly once and passes dciodvfy.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from api.users_cli import create_user
from countyread.context import AppContext
from countyread.db import jobs, utcnow
from countyread.domain import NodeKind, Role
from countyread.nodes import add_node
from countyread.settings import load_settings
from dicom_node.assembly import StabilityMonitor
from dicom_node.outbox import Outbox
from dicom_node.scp import DicomNode
from inference.worker import AnalysisWorker
from tests.dicom_node.conftest import dcmtk, dcmtk_env
from tests.peers.orthanc import OrthancPeer
from tests.results.conftest import dciodvfy_errors
from training.phantoms.ct import ChestCTConfig, make_chest_ct
from training.phantoms.dicom_writer import DicomOptions, write_dicom
from training.phantoms.nodule_shapes import NoduleSpec

pytestmark = pytest.mark.integration

SCANNER_AE = "TOWNSHIP1"


def _phantom_series(out: Path) -> tuple[list[Path], list[float]]:
    """A small chest CT with two solid nodules whose truth we know."""
    config = ChestCTConfig(
        matrix=256, pixel_spacing_mm=1.3, slice_thickness_mm=1.25, coverage_mm=250.0,
        nodule_specs=(
            NoduleSpec(diameter_mm=18.0, kind="solid", side="right"),
            NoduleSpec(diameter_mm=9.0, kind="solid", side="left"),
        ),
    )
    phantom = make_chest_ct(7, config)
    paths = write_dicom(phantom, out, DicomOptions(vendor="GE", charset="GB18030"))
    return [p for p in paths if p.suffix == ".dcm"], [n.mean_diameter_mm for n in phantom.nodules]


def test_scanner_to_radiologist_to_pacs(tmp_path: Path, orthanc: OrthancPeer) -> None:
    settings = load_settings(
        data_dir=tmp_path / "var", dicom_host="127.0.0.1", environment="test",
        stable_quiet_s=0.5, export_retry_base_s=0.2, export_retry_max_s=1.0,
    ).model_copy(update={"dicom_port": 0})
    ctx = AppContext.create(settings)
    add_node(ctx.db, name="城关镇卫生院", ae_title=SCANNER_AE)
    add_node(ctx.db, name="County PACS", ae_title=orthanc.ae_title, host=orthanc.address,
             port=orthanc.dicom_port, kind=NodeKind.PACS, send=("SR", "SEG", "SC", "KOS"))
    create_user(ctx, "dr_wang", Role.RADIOLOGIST, "correct-horse-1", display_name="王医生")
    node = DicomNode(ctx)
    node.start()
    try:
        # 1. The township scanner pushes the series.
        files, truth_diameters = _phantom_series(tmp_path / "scanner")
        sent = subprocess.run(
            [dcmtk("storescu"), "-aet", SCANNER_AE, "-aec", settings.ae_title,
             "127.0.0.1", str(node.port), *map(str, files)],
            capture_output=True, text=True, timeout=300, env=dcmtk_env())
        assert sent.returncode == 0, sent.stderr[-2000:]
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

        # 2. The series becomes stable and one CT nodule job is queued.
        stable = StabilityMonitor(ctx).tick(now=utcnow() + timedelta(seconds=5))
        assert len(stable) == 1
        with ctx.db.begin() as conn:
            queued = conn.execute(select(jobs.c.pipeline, jobs.c.state)).all()
        assert queued == [("ct_nodule", "queued")]

        # 3. The worker analyses it with the shipped model.
        assert AnalysisWorker(ctx).run_once()

        client = TestClient(create_app(ctx))
        token = client.post("/api/auth/token", data={
            "username": "dr_wang", "password": "correct-horse-1"}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        study = client.get(f"/api/studies/{study_uid}", headers=auth).json()
        assert study["status"] == "ready", study.get("reason")
        assert study["urgency"] == "urgent"  # an 18 mm solid nodule is Lung-RADS 4B
        found = sorted(
            next(m["value"] for m in f["measurements"] if m["name"] == "mean_diameter")
            for f in study["findings"]
        )
        assert len(found) == 2, found
        for got, want in zip(found, sorted(truth_diameters), strict=True):
            assert abs(got - want) <= 1.5, (found, truth_diameters)

        # 4. The radiologist sees it first in the worklist, claims, reviews and signs.
        items = client.get("/api/worklist", headers=auth).json()["items"]
        assert items[0]["study_uid"] == study_uid
        assert client.post(f"/api/studies/{study_uid}/claim", headers=auth).status_code == 200
        for finding in study["findings"]:
            r = client.patch(f"/api/findings/{finding['id']}", headers=auth,
                             json={"verdict": "accepted"})
            assert r.status_code == 200, r.text
        report = client.get(f"/api/studies/{study_uid}/report", headers=auth).json()
        assert "4B" in report["impression_text"]
        signed = client.post(f"/api/studies/{study_uid}/sign", headers=auth)
        assert signed.status_code == 200, signed.text

        # 5. Nothing left before sign-off; now the outbox delivers to the PACS.
        assert orthanc.sop_instance_uids() == []
        Outbox(ctx).tick()
        deliveries = client.get(f"/api/studies/{study_uid}/deliveries", headers=auth).json()
        assert [d["state"] for d in deliveries] == ["sent"], deliveries
        received = orthanc.sop_instance_uids()
        assert len(received) == len(set(received)) >= 4  # SR, SEG, 2 SC, KOS
        assert client.get(f"/api/studies/{study_uid}", headers=auth).json()["status"] == (
            "delivered")

        # 6. Every object we produced is valid DICOM by dciodvfy.
        results = sorted((settings.results_dir / study_uid).glob("r*/**/*.dcm"))
        assert len(results) == len(received)
        for path in results:
            assert dciodvfy_errors(path) == [], path.parent.name

        # 7. The SR says what the radiologist confirmed, coded: a nodule, where (lobe or
        # lung with laterality, as the pipeline found it), its Lung-RADS category.
        sr = next(pydicom.dcmread(p) for p in results if pydicom.dcmread(p).Modality == "SR")
        report_sr = hd.sr.MeasurementReport.from_sequence([sr])
        groups = report_sr.get_volumetric_roi_measurement_groups()
        assert len(groups) == 2
        for group in groups:
            kind = group.finding_type
            assert kind is not None and kind.value == "27925004"  # SCT Nodule
            evaluations = {e.name.meaning: str(getattr(e.value, "meaning", ""))
                           for e in group.get_qualitative_evaluations()}
            assert evaluations["Lung-RADS v2022 assessment category"].startswith("Lung-RADS ")
            site = group.finding_sites[0]
            lung_sites = {"39607008", "45653009", "90572001", "72481006"}  # lung, lobes
            assert site.value.value in lung_sites
            assert site.laterality is not None or site.value.value == "72481006"  # RML
    finally:
        node.stop()
        ctx.close()
