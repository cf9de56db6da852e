"""Less common signed studies: radiologist-added and vessel findings, no findings, renders."""

from __future__ import annotations

from collections.abc import Iterator

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import update

from countyread.context import AppContext
from countyread.db import findings
from countyread.domain import NodeKind
from countyread.nodes import add_node
from dicom_node.outbox import schedule_delivery
from dicom_node.results import Family, build_results, register_series
from dicom_node.results.builder import unregister_series
from dicom_node.results.common import SignedStudy
from tests.results.conftest import dciodvfy_errors
from tests.results.seed import SeededStudy, seed_study, sign


def _insert(ctx: AppContext, study: SeededStudy, **values: object) -> None:
    with ctx.db.begin() as conn:
        conn.execute(findings.insert().values(study_uid=study.study_uid, **values))


def test_radiologist_and_vessel_findings_are_coded(ctx: AppContext,
                                                   seeded: SeededStudy) -> None:
    # A nodule the AI missed (point only, no mask, no model) and a carotid stenosis.
    _insert(ctx, seeded, series_uid=seeded.series_uid, sop_instance_uid=seeded.sop_uids[8],
            kind="nodule", source="radiologist", center_x=0.0, center_y=10.0, center_z=20.0,
            measurements=[{"name": "mean_diameter", "value": 5.5, "unit": "mm"},
                          {"name": "hu_mean", "value": 40, "unit": "[hnsf'U]"}],
            attributes={"type": "part-solid", "lobe": "LUL"}, category="3",
            verdict="accepted", reviewed_by="lidoc")
    _insert(ctx, seeded, series_uid=seeded.series_uid, sop_instance_uid=seeded.sop_uids[9],
            kind="stenosis", source="radiologist", center_x=5.0, center_y=5.0, center_z=22.5,
            measurements=[{"name": "stenosis_percent", "value": 72.0, "unit": "%"}],
            attributes={"vessel": "left_ica", "grade": "severe"}, verdict="edited",
            reviewed_by="lidoc")
    result = build_results(ctx, seeded.study_uid)
    for o in result.objects:
        assert dciodvfy_errors(ctx.settings.results_dir / o.path) == [], o.family
    ds = pydicom.dcmread(ctx.settings.results_dir / result.of("SR")[0].path)
    report = hd.sr.MeasurementReport.from_sequence([ds])
    planar = report.get_planar_roi_measurement_groups()
    assert len(planar) == 2 and len(report.get_volumetric_roi_measurement_groups()) == 3
    stenosis = next(g for g in planar if g.finding_type.value == "415582006")
    assert stenosis.finding_sites[0].value.value == "86117002"  # internal carotid artery
    [pct] = stenosis.get_measurements()
    assert pct.value == 72.0 and pct.unit.value == "%"
    grades = {e.value.meaning for e in stenosis.get_qualitative_evaluations()}
    assert grades == {"severe"}
    added = next(g for g in planar if g.finding_type.value == "27925004")
    assert [m.name.meaning for m in added.get_measurements()] == ["Diameter"]  # HU left out
    assert added.reference_type.value == "111030"  # Image Region
    # Findings without a key image get no SC; the SEG still has the 3 masked nodules only.
    assert len(result.of("SC")) == 3
    assert len(pydicom.dcmread(ctx.settings.results_dir
                               / result.of("SEG")[0].path).SegmentSequence) == 3


def test_all_findings_rejected_still_yields_a_valid_report(ctx: AppContext,
                                                           seeded: SeededStudy) -> None:
    with ctx.db.begin() as conn:
        conn.execute(update(findings).values(verdict="rejected"))
    sign(ctx, seeded.study_uid)
    result = build_results(ctx, seeded.study_uid)
    assert sorted(o.family for o in result.objects) == ["KOS", "SR"]
    for o in result.objects:
        assert dciodvfy_errors(ctx.settings.results_dir / o.path) == [], o.family
    sr = pydicom.dcmread(ctx.settings.results_dir / result.of("SR")[0].path)
    assert sr.VerificationFlag == "VERIFIED"
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == seeded.study_uid


def _render(signed: SignedStudy) -> list[Dataset]:
    """A stand-in CTA MIP series: one RGB SC built with the shared UID rules."""
    return [hd.sc.SCImage(
        pixel_array=np.zeros((32, 32, 3), dtype=np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=signed.study_uid,
        series_instance_uid=signed.uid(Family.RENDER, "series", "mip"),
        series_number=9500, sop_instance_uid=signed.uid(Family.RENDER, "instance", "mip", 1),
        instance_number=1, manufacturer="CountyRead", patient_orientation=("L", "P"))]


@pytest.fixture()
def render_plugin() -> Iterator[None]:
    register_series("test_mip", _render)
    yield
    unregister_series("test_mip")


def test_render_series_plug_in_and_are_routed(ctx: AppContext, render_plugin: None) -> None:
    viewer = add_node(ctx.db, name="3D viewer", ae_title="VIEWER", host="127.0.0.1",
                      port=104, kind=NodeKind.PACS, send=("RENDER",))
    study = seed_study(ctx, n_findings=1)
    result = build_results(ctx, study.study_uid)
    [render] = result.of("RENDER")
    assert render.path.split("/")[-2] == "RENDER"
    (delivery_id,) = schedule_delivery(ctx, study.study_uid)
    from sqlalchemy import select

    from countyread.db import deliveries

    with ctx.db.begin() as conn:
        row = conn.execute(select(deliveries).where(
            deliveries.c.id == delivery_id)).mappings().one()
    assert row["node_id"] == viewer.id
    assert [o["sop_instance_uid"] for o in row["objects"]] == [render.sop_instance_uid]
