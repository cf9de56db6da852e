"""Seed a real database + store with a small synthetic chest CT, findings and a signature.

Used by the results tests and by ``benchmarks/deliver.py``. Everything goes through the
real schema and the real file store; nothing is mocked.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from sqlalchemy import update

from countyread.context import AppContext
from countyread.db import analyses, findings, instances, reports, series, studies, users
from countyread.domain import NodeKind
from countyread.nodes import add_node
from countyread.store import write_durable
from countyread.uids import derive_uid

PATIENT_NAME = "张三^伟"
REVIEWER_NAME = "李医生"
MODEL = {"name": "ct_nodule_det", "version": "1.2.0", "sha256": "ab" * 32}


@dataclass(frozen=True, slots=True)
class SeededStudy:
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    finding_ids: tuple[int, ...]
    analysis_id: int


def _ct_slice(
    study_uid: str, series_uid: str, for_uid: str, k: int, n: int, size: int, seed: int
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    sop = derive_uid("seed-ct", series_uid, k)
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    # Township scanners send GB18030 names (DESIGN.md section 4).
    ds.SpecificCharacterSet = "GB18030"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.PatientName = PATIENT_NAME
    ds.PatientID = "TS0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate = "20261123"
    ds.StudyTime = "080000"
    ds.AccessionNumber = "A1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "Township"
    ds.SeriesNumber = 2
    ds.InstanceNumber = k + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PositionReferenceIndicator = ""
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.ImagePositionPatient = [-100.0, -100.0, float(k) * 2.5]  # ascending, as sorted
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [200.0 / size, 200.0 / size]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    rng = np.random.default_rng(seed + k)
    ds.PixelData = rng.integers(-1000, 400, (size, size), dtype=np.int16).tobytes()
    return ds


def seed_study(
    ctx: AppContext,
    *,
    n_slices: int = 16,
    size: int = 64,
    n_findings: int = 2,
    source_node_id: int | None = None,
    tag: str = "1",
    reviewer: str = "lidoc",
    slice_order: bool = True,
    reviewed: bool = True,
    urgency: str = "routine",
) -> SeededStudy:
    """Store a synthetic CT and insert an analysis with ``n_findings`` confirmed nodules.

    ``reviewed=False`` leaves the AI findings pending and the study unsigned, ready for
    review at ``urgency`` (what an urgent alert before sign-off starts from).
    """
    study_uid = derive_uid("seed-study", tag)
    series_uid = derive_uid("seed-series", tag)
    for_uid = derive_uid("seed-for", tag)
    sops = []
    with ctx.db.begin() as conn:
        conn.execute(
            studies.insert().values(
                study_uid=study_uid,
                patient_name="张三^伟",
                patient_id="TS0001",
                patient_birth_date="19600101",
                patient_sex="M",
                accession_number="A1",
                study_date="20261123",
                study_time="080000",
                study_description="胸部CT Chest",
                modalities="CT",
                source_node_id=source_node_id,
                status="ready",
                urgency=urgency,
            )
        )
        conn.execute(
            series.insert().values(
                series_uid=series_uid,
                study_uid=study_uid,
                modality="CT",
                series_number=2,
                frame_of_reference_uid=for_uid,
                instance_count=n_slices,
                state="stable",
            )
        )
        for k in range(n_slices):
            ds = _ct_slice(study_uid, series_uid, for_uid, k, n_slices, size, seed=7)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            path = ctx.store.instance_path(study_uid, series_uid, ds.SOPInstanceUID)
            size_b = ctx.store.write(path, buf.getvalue())
            conn.execute(
                instances.insert().values(
                    sop_instance_uid=ds.SOPInstanceUID,
                    series_uid=series_uid,
                    study_uid=study_uid,
                    sop_class_uid=CTImageStorage,
                    transfer_syntax_uid=ExplicitVRLittleEndian,
                    instance_number=k + 1,
                    path=ctx.store.relative(path),
                    size_bytes=size_b,
                )
            )
            sops.append(str(ds.SOPInstanceUID))
        res = conn.execute(
            analyses.insert().values(
                study_uid=study_uid,
                series_uid=series_uid,
                pipeline="ct_nodule",
                status="ready",
                urgency=urgency,
                category="4A",
                models=[MODEL],
            )
        )
        pk = res.inserted_primary_key
        assert pk is not None
        analysis_id = int(pk[0])
        art_dir = ctx.settings.results_dir / study_uid / f"analysis-{analysis_id}"
        conn.execute(
            update(analyses).where(analyses.c.id == analysis_id).values(artifacts_dir=str(art_dir))
        )
        arrays: dict[str, np.ndarray] = {"geometry": np.eye(4)}
        if slice_order:
            arrays["slice_sop_uids"] = np.array(sops)
        ids = []
        lobes = ["RUL", "LLL", "RML", "LUL", "RLL"]
        for i in range(n_findings):
            k0, j0, i0 = 2 + (i * 3) % max(1, n_slices - 6), 10 + 8 * i, 12 + 9 * i
            mask = np.zeros((3, 6, 6), dtype=np.uint8)  # uint8, as the CTA pipeline saves
            mask[:, 1:5, 1:5] = 1
            arrays[f"mask_{i}"] = mask
            arrays[f"bbox_{i}"] = np.array([k0, j0, i0, k0 + 3, j0 + 6, i0 + 6])
            rgb = np.zeros((size, size, 3), dtype=np.uint8)
            rgb[..., 0] = 40 * i
            rgb[j0 : j0 + 6, i0 : i0 + 6, 1] = 255
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG")
            write_durable(art_dir / f"key_{i}.png", buf.getvalue())
            res = conn.execute(
                findings.insert().values(
                    study_uid=study_uid,
                    analysis_id=analysis_id,
                    series_uid=series_uid,
                    sop_instance_uid=sops[k0 + 1],
                    kind="nodule",
                    source="ai",
                    probability=0.9,
                    center_x=-100.0 + (i0 + 3) * 200.0 / size,
                    center_y=-100.0 + (j0 + 3) * 200.0 / size,
                    center_z=(k0 + 1) * 2.5,
                    measurements=[
                        {"name": "long_axis", "value": 9.1 + i, "unit": "mm"},
                        {"name": "short_axis", "value": 7.3 + i, "unit": "mm"},
                        {"name": "mean_diameter", "value": 8.2 + i, "unit": "mm"},
                        {"name": "volume", "value": 310.0 + 10 * i, "unit": "mm3"},
                    ],
                    attributes={"type": "solid", "lobe": lobes[i % len(lobes)]},
                    category="4A",
                    model=MODEL,
                    key_image=f"key_{i}",
                    verdict=("accepted" if i % 2 == 0 else "edited") if reviewed else "pending",
                    revision=1 if reviewed else 0,
                    reviewed_by=reviewer if reviewed else None,
                    reviewed_at=datetime.now(UTC) if reviewed else None,
                )
            )
            pk = res.inserted_primary_key
            assert pk is not None
            ids.append(int(pk[0]))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        write_durable(art_dir / "arrays.npz", buf.getvalue())
        # One rejected finding: it must not appear in any output.
        conn.execute(
            findings.insert().values(
                study_uid=study_uid,
                analysis_id=analysis_id,
                series_uid=series_uid,
                kind="nodule",
                source="ai",
                probability=0.3,
                measurements=[],
                attributes={},
                verdict="rejected",
                reviewed_by=reviewer,
            )
        )
        if conn.execute(users.select().where(users.c.username == reviewer)).first() is None:
            conn.execute(
                users.insert().values(
                    username=reviewer,
                    display_name=REVIEWER_NAME,
                    password_hash="x",
                    role="radiologist",
                )
            )
    if reviewed:
        sign(ctx, study_uid, reviewer)
    return SeededStudy(study_uid, series_uid, tuple(sops), tuple(ids), analysis_id)


def sign(ctx: AppContext, study_uid: str, reviewer: str = "lidoc") -> int:
    """What the API's sign does to the rows we read: bump revision, mark signed."""
    now = datetime.now(UTC)
    with ctx.db.begin() as conn:
        rev = (
            conn.execute(studies.select().where(studies.c.study_uid == study_uid))
            .mappings()
            .one()["revision"]
            + 1
        )
        conn.execute(
            update(studies)
            .where(studies.c.study_uid == study_uid)
            .values(revision=rev, status="signed")
        )
        existing = conn.execute(reports.select().where(reports.c.study_uid == study_uid)).first()
        values = {
            "language": "zh",
            "impression_text": "右肺上叶实性结节，Lung-RADS 4A。",
            "impression_text_en": "Solid nodule RUL, Lung-RADS 4A.",
            "revision": rev,
            "signed_by": reviewer,
            "signed_at": now,
            "updated_by": reviewer,
        }
        if existing is None:
            conn.execute(reports.insert().values(study_uid=study_uid, **values))
        else:
            conn.execute(update(reports).where(reports.c.study_uid == study_uid).values(**values))
    return int(rev)


def results_root(ctx: AppContext, study_uid: str) -> Path:
    return ctx.settings.results_dir / study_uid


def seed_dr_study(ctx: AppContext, *, reviewer: str = "lidoc", tag: str = "dr") -> SeededStudy:
    """A chest radiograph (DX) with one confirmed nodule located in image pixels."""
    from pydicom.uid import DigitalXRayImageStorageForPresentation as DX

    study_uid, series_uid = derive_uid("seed-dr-study", tag), derive_uid("seed-dr-series", tag)
    sop = derive_uid("seed-dr", tag)
    ds = _ct_slice(study_uid, series_uid, derive_uid("seed-for", tag), 0, 1, 256, seed=3)
    for keyword in (
        "FrameOfReferenceUID",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "SliceThickness",
        "PixelSpacing",
        "KVP",
        "PositionReferenceIndicator",
    ):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.Modality = "DX"
    ds.ImagerPixelSpacing = [0.5, 0.5]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path = ctx.store.instance_path(study_uid, series_uid, sop)
    with ctx.db.begin() as conn:
        conn.execute(
            studies.insert().values(
                study_uid=study_uid,
                patient_name=PATIENT_NAME,
                patient_id="TS0002",
                study_description="胸片 Chest PA",
                modalities="DX",
                status="ready",
            )
        )
        conn.execute(
            series.insert().values(
                series_uid=series_uid,
                study_uid=study_uid,
                modality="DX",
                series_number=1,
                instance_count=1,
                state="stable",
            )
        )
        conn.execute(
            instances.insert().values(
                sop_instance_uid=sop,
                series_uid=series_uid,
                study_uid=study_uid,
                sop_class_uid=DX,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                instance_number=1,
                path=ctx.store.relative(path),
                size_bytes=ctx.store.write(path, buf.getvalue()),
            )
        )
        res = conn.execute(
            analyses.insert().values(
                study_uid=study_uid,
                series_uid=series_uid,
                pipeline="dr_nodule",
                status="ready",
                urgency="routine",
                models=[MODEL],
            )
        )
        pk = res.inserted_primary_key
        assert pk is not None
        art_dir = ctx.settings.results_dir / study_uid / f"analysis-{int(pk[0])}"
        conn.execute(
            update(analyses).where(analyses.c.id == int(pk[0])).values(artifacts_dir=str(art_dir))
        )
        png = io.BytesIO()
        Image.fromarray(np.full((256, 256, 3), 90, dtype=np.uint8)).save(png, format="PNG")
        write_durable(art_dir / "dr_key.png", png.getvalue())
        res = conn.execute(
            findings.insert().values(
                study_uid=study_uid,
                analysis_id=int(pk[0]),
                series_uid=series_uid,
                sop_instance_uid=sop,
                kind="dr_nodule",
                source="ai",
                probability=0.8,
                center_x=50.0,
                center_y=60.0,
                center_z=0.0,
                measurements=[{"name": "diameter", "value": 14.0, "unit": "mm"}],
                attributes={"type": "nodule", "unit": "mm", "pixel_center": "100.0,120.0"},
                model=MODEL,
                key_image="dr_key",
                verdict="accepted",
                reviewed_by=reviewer,
            )
        )
        fid = res.inserted_primary_key
        assert fid is not None
        if conn.execute(users.select().where(users.c.username == reviewer)).first() is None:
            conn.execute(
                users.insert().values(
                    username=reviewer,
                    display_name=REVIEWER_NAME,
                    password_hash="x",
                    role="radiologist",
                )
            )
    sign(ctx, study_uid, reviewer)
    return SeededStudy(study_uid, series_uid, (sop,), (int(fid[0]),), int(pk[0]))


ALL_FAMILIES = ("SR", "SEG", "SC", "KOS")


def pacs_node(ctx: AppContext, port: int, send: tuple[str, ...] = ALL_FAMILIES,
              ae_title: str = "PACS1") -> int:
    """A PACS destination on loopback receiving ``send``; returns its node id."""
    return add_node(ctx.db, name="PACS", ae_title=ae_title, host="127.0.0.1", port=port,
                    kind=NodeKind.PACS, send=send).id
