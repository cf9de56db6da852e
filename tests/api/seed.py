"""Seed the real schema with studies, series, analyses, findings and users for API tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from api.users_cli import create_user
from countyread.context import AppContext
from countyread.db import analyses, findings, nodes, series, studies, utcnow
from countyread.domain import Role, Urgency
from countyread.status import deadline_for

PASSWORD = "correct-horse-battery"
_counter = itertools.count(1)


def uid(prefix: str = "1.2.826.0.1.3680043.8.498") -> str:
    return f"{prefix}.{next(_counter)}"


def add_node(ctx: AppContext, ae: str, name: str = "Township") -> int:
    with ctx.db.begin() as conn:
        pk = conn.execute(nodes.insert().values(
            name=name, ae_title=ae, host=None, port=None, kind="township", send=["SC", "KOS"],
            active=True)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def add_user(ctx: AppContext, name: str, role: Role, node_id: int | None = None) -> str:
    create_user(ctx, name, role, PASSWORD, node_id=node_id)
    return name


def add_study(
    ctx: AppContext, *, status: str = "ready", urgency: str | None = "routine",
    received: datetime | None = None, node_id: int | None = None, modality: str = "CT",
    deadline: bool = True, patient_name: str = "张三", reason: str | None = None,
    study_uid: str | None = None,
) -> str:
    study_uid = study_uid or uid()
    received = received or utcnow()
    deadline_at = (deadline_for(ctx.settings, Urgency(urgency), received)
                   if deadline and urgency else None)
    with ctx.db.begin() as conn:
        conn.execute(studies.insert().values(
            study_uid=study_uid, patient_name=patient_name, patient_id="P001",
            patient_sex="M", study_date=received.strftime("%Y%m%d"), modalities=modality,
            source_ae="TOWN1", source_node_id=node_id, first_received_at=received,
            last_received_at=received, status=status, urgency=urgency,
            deadline_at=deadline_at, reason=reason, revision=0,
        ))
    return study_uid


def add_series(ctx: AppContext, study_uid: str, modality: str = "CT", count: int = 120) -> str:
    series_uid = uid()
    with ctx.db.begin() as conn:
        conn.execute(series.insert().values(
            series_uid=series_uid, study_uid=study_uid, modality=modality, series_number=2,
            series_description="Lung 1.0", instance_count=count, state="stable",
            stable_at=utcnow()))
    return series_uid


def add_analysis(ctx: AppContext, study_uid: str, series_uid: str, pipeline: str = "ct_nodule",
                 urgency: str = "urgent", images: tuple[str, ...] = ("nodule_1",),
                 category: str | None = "4B") -> int:
    with ctx.db.begin() as conn:
        pk = conn.execute(analyses.insert().values(
            study_uid=study_uid, series_uid=series_uid, pipeline=pipeline, status="ready",
            urgency=urgency, category=category, recommendation=None,
            models=[{"name": "nodule-det", "version": "1.0.0", "sha256": "ab" * 32}],
            notes=[], timings_ms={"model": 812.0})).inserted_primary_key
        assert pk is not None
        analysis_id = int(pk[0])
        art = ctx.settings.results_dir / study_uid / f"analysis-{analysis_id}"
        art.mkdir(parents=True, exist_ok=True)
        for name in images:
            rgb = np.zeros((16, 16, 3), np.uint8)
            rgb[4:12, 4:12, 0] = 255
            Image.fromarray(rgb).save(art / f"{name}.png")
        conn.execute(analyses.update().where(analyses.c.id == analysis_id)
                     .values(artifacts_dir=str(art)))
    return analysis_id


def nodule_measurements(long_mm: float, short_mm: float, solid: float | None = None,
                        volume: float | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": "long_axis", "value": long_mm, "unit": "mm"},
        {"name": "short_axis", "value": short_mm, "unit": "mm"},
        {"name": "mean_diameter", "value": round((long_mm + short_mm) / 2, 1), "unit": "mm"},
    ]
    if solid is not None:
        out.append({"name": "solid_part_diameter", "value": solid, "unit": "mm"})
    if volume is not None:
        out.append({"name": "volume", "value": volume, "unit": "mm3"})
    return out


def add_finding(
    ctx: AppContext, study_uid: str, series_uid: str, analysis_id: int | None, *,
    kind: str = "lung_nodule", probability: float = 0.91,
    measurements: list[dict[str, Any]] | None = None, attributes: dict[str, Any] | None = None,
    category: str | None = "4B", key_image: str | None = "nodule_1",
) -> int:
    with ctx.db.begin() as conn:
        pk = conn.execute(findings.insert().values(
            study_uid=study_uid, analysis_id=analysis_id, series_uid=series_uid,
            sop_instance_uid=uid(), kind=kind, source="ai", probability=probability,
            center_x=-80.5, center_y=40.25, center_z=-120.0,
            measurements=measurements if measurements is not None
            else nodule_measurements(18.0, 14.0, volume=2100.0),
            attributes=attributes if attributes is not None
            else {"type": "solid", "lobe": "RUL"},
            category=category, model={"name": "nodule-det", "version": "1.0.0",
                                      "sha256": "ab" * 32},
            key_image=key_image, verdict="pending", revision=0)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def ready_ct_study(ctx: AppContext, *, node_id: int | None = None,
                   received: datetime | None = None) -> tuple[str, list[int]]:
    """A chest CT ready for review with two AI nodules (4B solid RUL, 3 part-solid LLL)."""
    received = received or utcnow() - timedelta(minutes=5)
    study_uid = add_study(ctx, urgency="urgent", node_id=node_id, received=received)
    s = add_series(ctx, study_uid)
    a = add_analysis(ctx, study_uid, s, images=("nodule_1", "nodule_2", "overview"))
    f1 = add_finding(ctx, study_uid, s, a)
    f2 = add_finding(ctx, study_uid, s, a, measurements=nodule_measurements(9.0, 7.0, solid=4.0),
                     attributes={"type": "part_solid", "lobe": "LLL"}, category="3",
                     key_image="nodule_2", probability=0.74)
    return study_uid, [f1, f2]


def artifacts_dir(ctx: AppContext, study_uid: str) -> Path:
    return ctx.settings.results_dir / study_uid


def stored_ct_study(ctx: AppContext, *, node_id: int | None = None,
                    n_slices: int = 8, size: int = 64) -> tuple[str, list[int]]:
    """A small real CT series in the file store (instances indexed) with two AI nodules.

    Needed where the results export reads the source headers (SR/SEG/SC references).
    """
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    from countyread.db import instances

    study_uid = add_study(ctx, urgency="urgent", node_id=node_id,
                          received=utcnow() - timedelta(minutes=3))
    series_uid, for_uid = uid(), uid()
    sops: list[str] = []
    with ctx.db.begin() as conn:
        conn.execute(series.insert().values(
            series_uid=series_uid, study_uid=study_uid, modality="CT", series_number=3,
            frame_of_reference_uid=for_uid, instance_count=n_slices, state="stable"))
        for k in range(n_slices):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop = uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "GB18030"
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.FrameOfReferenceUID = for_uid
            ds.PatientName, ds.PatientID = "张^三", "P001"
            ds.PatientBirthDate, ds.PatientSex = "19610203", "M"
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261123", "0800", "", "1"
            ds.ReferringPhysicianName = ""
            ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "CT", "T", 3, k + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.PositionReferenceIndicator, ds.KVP, ds.AcquisitionNumber = "", 120, 1
            ds.PatientPosition = "HFS"
            ds.ImagePositionPatient = [-100.0, -100.0, -2.5 * k]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.SliceThickness, ds.PixelSpacing = 2.5, [200.0 / size, 200.0 / size]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = size
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.PixelData = np.full((size, size), 24, np.int16).tobytes()
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            path = ctx.store.instance_path(study_uid, series_uid, sop)
            nbytes = ctx.store.write(path, buf.getvalue())
            conn.execute(instances.insert().values(
                sop_instance_uid=sop, series_uid=series_uid, study_uid=study_uid,
                sop_class_uid=CTImageStorage, transfer_syntax_uid=ExplicitVRLittleEndian,
                instance_number=k + 1, path=ctx.store.relative(path), size_bytes=nbytes))
            sops.append(sop)
    a = add_analysis(ctx, study_uid, series_uid, images=("nodule_1", "nodule_2"))
    ids = []
    for i, key in enumerate(("nodule_1", "nodule_2")):
        fid = add_finding(ctx, study_uid, series_uid, a, key_image=key)
        with ctx.db.begin() as conn:
            conn.execute(findings.update().where(findings.c.id == fid).values(
                sop_instance_uid=sops[2 + 3 * i], center_z=-2.5 * (2 + 3 * i)))
        ids.append(fid)
    return study_uid, ids
