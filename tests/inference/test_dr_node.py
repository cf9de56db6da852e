"""Phantom chest films pushed through the real DICOM node, analysed by the real worker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from countyread.db import analyses, findings, studies, utcnow
from countyread.nodes import add_node
from dicom_node.assembly import StabilityMonitor
from dicom_node.scp import DicomNode
from dicom_node.scu import send_paths
from inference.worker import AnalysisWorker
from tests.dicom_node.conftest import SCU_AE, make_ctx
from training.dr.dicom import DXStyle, uid, write_chest
from training.dr.synth import SynthConfig, make_synth_chest

pytestmark = pytest.mark.integration


def test_dr_study_from_scanner_to_findings(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "var")
    add_node(ctx.db, name="Township 1 hospital", ae_title=SCU_AE)
    node = DicomNode(ctx)
    node.start()
    try:
        send = tmp_path / "send"
        nodule = make_synth_chest(920003, SynthConfig(nodule_diameters=(22.0,)))
        paths = [
            write_chest(send / "pa.dcm", nodule, 77, DXStyle(photometric="MONOCHROME1"), series=1),
            write_chest(
                send / "lat.dcm", nodule, 77, DXStyle(view="LL", description="Chest LAT"), series=2
            ),
            write_chest(
                send / "clean.dcm",
                make_synth_chest(920101, SynthConfig(p_no_nodule=1)),
                78,
                DXStyle(spacing="none"),
            ),
        ]
        results = send_paths("127.0.0.1", node.port, "COUNTYREAD", paths, calling_ae=SCU_AE)
        assert all(r.ok for r in results), results
        stable = StabilityMonitor(ctx).tick(now=utcnow() + timedelta(hours=1))
        assert len(stable) == 3
        worker = AnalysisWorker(ctx)
        while worker.run_once():
            pass
        with ctx.db.begin() as conn:
            rows = {r["study_uid"]: r for r in conn.execute(select(studies)).mappings()}
            runs = list(conn.execute(select(analyses)).mappings())
            found = list(conn.execute(select(findings)).mappings())
    finally:
        node.stop()
        ctx.close()
    positive, negative = uid(77, 1), uid(78, 1)
    assert rows[positive]["status"] == "ready" and rows[negative]["status"] == "ready"
    assert {r["pipeline"] for r in runs} == {"dr_nodule"}
    # both series of the positive study were read through the PA film
    assert all(r["series_uid"] == uid(77, 1, 1) for r in runs if r["study_uid"] == positive)
    assert any("LL view" in " ".join(r["notes"]) for r in runs if r["study_uid"] == positive)
    ours = [f for f in found if f["study_uid"] == positive]
    assert ours and all(f["kind"] == "dr_nodule" for f in ours)
    assert ours[0]["sop_instance_uid"] == uid(77, 1, 1, 1)
    assert {m["unit"] for f in ours for m in f["measurements"]} == {"mm"}
    # (whether the nodule-free film stays clean is the model's accuracy, tested in
    # test_dr_pipeline.py; here: it was analysed and labelled)
    clean_notes = " ".join(next(r for r in runs if r["study_uid"] == negative)["notes"])
    assert "sizes are in pixels (px)" in clean_notes
    for r in runs:
        assert (Path(r["artifacts_dir"]) / "dr_key.png").is_file()
