"""Less common signed studies: radiologist-added and vessel findings, no findings, renders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from sqlalchemy import select, update

from countyread.context import AppContext
from countyread.db import analyses, findings
from countyread.domain import NodeKind
from countyread.nodes import add_node
from dicom_node.outbox import schedule_delivery
from dicom_node.results import Family, build_results, register_series
from dicom_node.results.builder import unregister_series
from dicom_node.results.common import SignedStudy
from tests.results.conftest import dciodvfy_errors
from tests.results.seed import SeededStudy, seed_dr_study, seed_study, sign


def _insert(ctx: AppContext, study: SeededStudy, **values: object) -> None:
    with ctx.db.begin() as conn:
        conn.execute(findings.insert().values(study_uid=study.study_uid, **values))


def test_radiologist_and_vessel_findings_are_coded(ctx: AppContext, seeded: SeededStudy) -> None:
    # A nodule the AI missed (point only, no mask, no model) and a carotid stenosis.
    _insert(
        ctx,
        seeded,
        series_uid=seeded.series_uid,
        sop_instance_uid=seeded.sop_uids[8],
        kind="nodule",
        source="radiologist",
        center_x=0.0,
        center_y=10.0,
        center_z=20.0,
        measurements=[
            {"name": "mean_diameter", "value": 5.5, "unit": "mm"},
            {"name": "hu_mean", "value": 40, "unit": "[hnsf'U]"},
        ],
        attributes={"type": "part-solid", "lobe": "LUL"},
        category="3",
        verdict="accepted",
        reviewed_by="lidoc",
    )
    _insert(
        ctx,
        seeded,
        series_uid=seeded.series_uid,
        sop_instance_uid=seeded.sop_uids[9],
        kind="stenosis",
        source="radiologist",
        center_x=5.0,
        center_y=5.0,
        center_z=22.5,
        measurements=[{"name": "stenosis_percent", "value": 72.0, "unit": "%"}],
        attributes={"vessel": "left_ica", "grade": "severe"},
        verdict="edited",
        reviewed_by="lidoc",
    )
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
    assert (
        len(pydicom.dcmread(ctx.settings.results_dir / result.of("SEG")[0].path).SegmentSequence)
        == 3
    )


def test_all_findings_rejected_still_yields_a_valid_report(
    ctx: AppContext, seeded: SeededStudy
) -> None:
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
    return [
        hd.sc.SCImage(
            pixel_array=np.zeros((32, 32, 3), dtype=np.uint8),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=signed.study_uid,
            series_instance_uid=signed.uid(Family.RENDER, "series", "mip"),
            series_number=9500,
            sop_instance_uid=signed.uid(Family.RENDER, "instance", "mip", 1),
            instance_number=1,
            manufacturer="CountyRead",
            patient_orientation=("L", "P"),
        )
    ]


@pytest.fixture()
def render_plugin() -> Iterator[None]:
    register_series("test_mip", _render)
    yield
    unregister_series("test_mip")


def test_render_series_plug_in_and_are_routed(ctx: AppContext, render_plugin: None) -> None:
    viewer = add_node(
        ctx.db,
        name="3D viewer",
        ae_title="VIEWER",
        host="127.0.0.1",
        port=104,
        kind=NodeKind.PACS,
        send=("RENDER",),
    )
    study = seed_study(ctx, n_findings=1)
    result = build_results(ctx, study.study_uid)
    [render] = result.of("RENDER")
    assert render.path.split("/")[-2] == "RENDER"
    (delivery_id,) = schedule_delivery(ctx, study.study_uid)
    from countyread.db import deliveries

    with ctx.db.begin() as conn:
        row = (
            conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).mappings().one()
        )
    assert row["node_id"] == viewer.id
    assert [o["sop_instance_uid"] for o in row["objects"]] == [render.sop_instance_uid]


def test_cta_vessel_masks_become_artery_segments(ctx: AppContext, seeded: SeededStudy) -> None:
    with ctx.db.begin() as conn:
        conn.execute(
            update(findings)
            .where(findings.c.verdict != "rejected")
            .values(
                kind="stenosis",
                category="severe",
                measurements=[
                    {"name": "stenosis_percent", "value": 74.0, "unit": "%"},
                    {"name": "min_diameter", "value": 1.3, "unit": "mm"},
                    {"name": "reference_diameter", "value": 5.0, "unit": "mm"},
                    {"name": "length", "value": 6.0, "unit": "mm"},
                ],
                attributes={"vessel": "ICA_L", "grade": "severe", "method": "NASCET"},
            )
        )
        conn.execute(update(analyses).values(pipeline="cta"))
        art_dir = Path(conn.execute(select(analyses.c.artifacts_dir)).scalar_one())
    for name in ("mip_axial", "mip_coronal", "vr_000", "vr_001", "cpr_ICA_L", "scpr_ICA_L"):
        Image.fromarray(np.full((40, 60, 3), 120, dtype=np.uint8)).save(art_dir / f"{name}.png")
    result = build_results(ctx, seeded.study_uid)
    renders = [pydicom.dcmread(ctx.settings.results_dir / o.path) for o in result.of("RENDER")]
    assert len(renders) == 6
    by_series: dict[str, list[str]] = {}
    for ds in renders:
        by_series.setdefault(ds.SeriesDescription, []).append(ds.ImageComments)
    assert sorted(map(sorted, by_series.values())) == [
        ["cpr_ICA_L", "scpr_ICA_L"],
        ["mip_axial", "mip_coronal"],
        ["vr_000", "vr_001"],
    ]
    assert len({ds.SeriesNumber for ds in renders}) == 3
    for o in result.objects:
        assert dciodvfy_errors(ctx.settings.results_dir / o.path) == [], o.family
    seg = pydicom.dcmread(ctx.settings.results_dir / result.of("SEG")[0].path)
    assert {s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence} == {
        "51114001"
    }  # SCT Artery
    sr = pydicom.dcmread(ctx.settings.results_dir / result.of("SR")[0].path)
    groups = hd.sr.MeasurementReport.from_sequence([sr]).get_volumetric_roi_measurement_groups()
    site = groups[0].finding_sites[0]
    assert site.value.value == "86117002" and site.laterality.value == "7771000"  # left ICA
    names = sorted(m.name.meaning for m in groups[0].get_measurements())
    assert names == [
        "Length",
        "Lumen Diameter Stenosis",
        "Vessel lumen diameter",
        "Vessel lumen diameter",
    ]  # minimal (qualified) and reference
    sc = pydicom.dcmread(ctx.settings.results_dir / result.of("SC")[0].path)
    assert "左颈内动脉" in sc.ImageComments and "74%" in sc.ImageComments


def test_radiograph_finding_is_a_circle_on_the_image(ctx: AppContext) -> None:
    study = seed_dr_study(ctx)
    result = build_results(ctx, study.study_uid)
    assert sorted(o.family for o in result.objects) == ["KOS", "SC", "SR"]
    for o in result.objects:
        assert dciodvfy_errors(ctx.settings.results_dir / o.path) == [], o.family
    sr = pydicom.dcmread(ctx.settings.results_dir / result.of("SR")[0].path)
    [group] = hd.sr.MeasurementReport.from_sequence([sr]).get_planar_roi_measurement_groups()
    assert sr.ContentSequence  # procedure reported is plain radiography, not CT
    procedures = [
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert procedures[0].ConceptCodeSequence[0].CodeValue == "168537006"
    region = group.roi
    assert region.graphic_type.value == "CIRCLE"
    # 14 mm at 0.5 mm per pixel: radius 14 px around (100, 120).
    assert np.allclose(region.value, [[100.0, 120.0], [114.0, 120.0]])
    assert (
        region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == study.sop_uids[0]
    )


def test_overlapping_masks_keep_both_segments(ctx: AppContext) -> None:
    """Two findings on one vessel share a mask: the SEG holds both, overlapping."""
    study = seed_study(ctx, n_findings=2)
    with ctx.db.begin() as conn:  # the pipeline may name a finding's mask explicitly
        conn.execute(
            update(findings)
            .where(findings.c.id == study.finding_ids[1])
            .values(attributes={"type": "solid", "lobe": "RUL", "mask": "mask_0"})
        )
    sign(ctx, study.study_uid)
    result = build_results(ctx, study.study_uid)
    path = ctx.settings.results_dir / result.of("SEG")[0].path
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 2 and seg.SegmentsOverlap == "YES"
    sources = [
        {
            f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for f in seg.PerFrameFunctionalGroupsSequence
            if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == n
        }
        for n in (1, 2)
    ]
    assert sources[0] == sources[1] == set(study.sop_uids[2:5])
    assert int(seg.pixel_array.sum()) == 2 * 48


def test_hostile_key_image_name_and_text_measurement_are_ignored(
    ctx: AppContext, seeded: SeededStudy
) -> None:
    _insert(
        ctx,
        seeded,
        series_uid=seeded.series_uid,
        kind="nodule",
        source="radiologist",
        measurements=[
            {"name": "mean_diameter", "value": "n/a", "unit": "mm"},
            {"name": "long_axis", "value": 7.0, "unit": "mm"},
        ],
        attributes={},
        key_image="../../../../etc/hostname",
        verdict="accepted",
        reviewed_by="lidoc",
    )
    result = build_results(ctx, seeded.study_uid)
    assert len(result.of("SC")) == 3  # no key image for the added finding
    sr = pydicom.dcmread(ctx.settings.results_dir / result.of("SR")[0].path)
    report = hd.sr.MeasurementReport.from_sequence([sr])
    [added] = [
        g for g in report.get_image_measurement_groups() if g.tracking_identifier == "nodule-4"
    ]
    assert [m.value for m in added.get_measurements()] == [7.0]  # "n/a" left out
