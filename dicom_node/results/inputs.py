"""Load a signed study (database rows, stored headers, analysis arrays) for the builders."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.engine import Connection

from countyread.context import AppContext
from countyread.db import analyses, findings, instances, reports, series, studies, users
from countyread.domain import Measurement, ModelRef
from countyread.errors import ConflictError, NotFoundError
from dicom_node.results.common import (
    ConfirmedFinding,
    CroppedMask,
    PatientInfo,
    Reviewer,
    SignedStudy,
    SourceSeries,
)

logger = logging.getLogger(__name__)

#: Verdicts that make a finding part of the signed result.
CONFIRMED = ("accepted", "edited")


def _model(value: Any) -> ModelRef | None:
    if isinstance(value, dict) and value.get("name"):
        return ModelRef(
            str(value["name"]), str(value.get("version", "")), str(value.get("sha256", ""))
        )
    return None


_KEY_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.png)?")


def _measurements(values: Any) -> tuple[Measurement, ...]:
    """Numeric measurements only; a free-text value typed in review is left out."""
    out = []
    for m in values or []:
        try:
            out.append(Measurement(str(m["name"]), float(m["value"]), str(m.get("unit", ""))))
        except (KeyError, TypeError, ValueError):
            logger.warning("non-numeric measurement left out of the results")
    return tuple(out)


def _reviewer(conn: Connection, username: str | None) -> Reviewer:
    name = username or "unknown"
    display = conn.execute(
        select(users.c.display_name).where(users.c.username == name)
    ).scalar_one_or_none()
    return Reviewer(name, display or name)


def _mask_index(row: Any, order: dict[int, int]) -> str | None:
    # The pipeline may name its mask explicitly ("mask": "mask_3"); otherwise masks are
    # numbered by the finding's position among its analysis's AI findings.
    attrs = row["attributes"] or {}
    named = attrs.get("mask")
    if isinstance(named, str) and named.startswith("mask_"):
        return named.removeprefix("mask_")
    if row["source"] == "ai" and row["id"] in order:
        return str(order[row["id"]])
    return None


class _Arrays:
    """Lazily opened ``arrays.npz`` per analysis directory."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def get(self, art_dir: str | None) -> Any:
        if not art_dir:
            return None
        if art_dir not in self._cache:
            path = Path(art_dir) / "arrays.npz"
            self._cache[art_dir] = np.load(path, allow_pickle=False) if path.exists() else None
        return self._cache[art_dir]


def _cropped_mask(npz: Any, index: str | None) -> CroppedMask | None:
    if npz is None or index is None:
        return None
    key, bkey = f"mask_{index}", f"bbox_{index}"
    if key not in npz.files or bkey not in npz.files:
        return None
    mask = np.asarray(npz[key], dtype=bool)
    bbox = [int(v) for v in np.asarray(npz[bkey]).ravel()[:3]]
    if mask.ndim != 3 or not mask.any():
        return None
    return CroppedMask(mask, (bbox[0], bbox[1], bbox[2]))


def _source_series(
    ctx: AppContext, conn: Connection, series_uid: str, order: list[str] | None
) -> SourceSeries | None:
    rows = conn.execute(
        select(instances.c.sop_instance_uid, instances.c.path).where(
            instances.c.series_uid == series_uid
        )
    ).all()
    if not rows:
        return None
    paths = {str(sop): ctx.store.absolute(rel) for sop, rel in rows}
    for_uid = conn.execute(
        select(series.c.frame_of_reference_uid).where(series.c.series_uid == series_uid)
    ).scalar_one_or_none()
    if order and set(order) <= set(paths):
        # The pipeline recorded its slice order (arrays.npz): no header needs reading.
        return SourceSeries(series_uid, for_uid, tuple(order), paths)
    # Otherwise sort along the slice normal (PS3.3 C.7.6.2.1.1), reading every header.
    cache: dict[str, Dataset] = {
        sop: pydicom.dcmread(p, stop_before_pixels=True) for sop, p in paths.items()
    }

    def key(sop: str) -> tuple[float, int]:
        ds = cache[sop]
        ipp = getattr(ds, "ImagePositionPatient", None)
        iop = getattr(ds, "ImageOrientationPatient", None)
        if ipp is None or iop is None:
            return (0.0, int(getattr(ds, "InstanceNumber", 0) or 0))
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        return (float(np.dot(normal, np.asarray(ipp, float))), 0)

    ordered = tuple(sorted(cache, key=key))
    if for_uid is None:
        found = getattr(cache[ordered[0]], "FrameOfReferenceUID", None)
        for_uid = str(found) if found else None
    return SourceSeries(series_uid, for_uid, ordered, paths, cache)


#: The pseudo-reviewer of an unreviewed alert: the service itself (no person verified it).
ALERT_AUTHOR = Reviewer("countyread", "CountyRead AI")
#: Verdicts an unreviewed alert carries: everything the AI said that nobody rejected yet.
ALERTED = ("pending", *CONFIRMED)


def load_signed_study(ctx: AppContext, study_uid: str) -> SignedStudy:
    """Read the signed revision of ``study_uid``; ConflictError when it is not signed."""
    return _load(ctx, study_uid, alert=False)


def load_alert_study(ctx: AppContext, study_uid: str) -> SignedStudy:
    """The AI's unreviewed findings as a preliminary (revision 0) result for an alert.

    Only for the per-node urgent-alert exception (DESIGN.md section 4); the objects built
    from it say on their face that no radiologist has verified them.
    """
    return _load(ctx, study_uid, alert=True)


def _load(ctx: AppContext, study_uid: str, *, alert: bool) -> SignedStudy:
    with ctx.db.begin() as conn:
        study = (
            conn.execute(select(studies).where(studies.c.study_uid == study_uid)).mappings().first()
        )
        if study is None:
            raise NotFoundError(f"study {study_uid} not found")
        report = (
            conn.execute(select(reports).where(reports.c.study_uid == study_uid)).mappings().first()
        )
        if not alert and (report is None or not report["signed_by"]):
            raise ConflictError("study is not signed; nothing leaves before sign-off")
        rows = list(
            conn.execute(
                select(findings).where(findings.c.study_uid == study_uid).order_by(findings.c.id)
            ).mappings()
        )
        analysis_rows = {
            r["id"]: r
            for r in conn.execute(
                select(analyses).where(analyses.c.study_uid == study_uid)
            ).mappings()
        }
        # Order of each AI finding within its analysis (the pipeline's mask index).
        order: dict[int, int] = {}
        per_analysis: dict[int, int] = {}
        for r in rows:
            if r["source"] == "ai" and r["analysis_id"] is not None:
                order[r["id"]] = per_analysis.get(r["analysis_id"], 0)
                per_analysis[r["analysis_id"]] = order[r["id"]] + 1
        reviewer = ALERT_AUTHOR if alert or report is None else _reviewer(
            conn, report["signed_by"])
        wanted_verdicts = ALERTED if alert else CONFIRMED
        arrays = _Arrays()
        confirmed: list[ConfirmedFinding] = []
        slice_orders: dict[str, list[str]] = {}
        for r in rows:
            if r["verdict"] not in wanted_verdicts or (alert and r["source"] != "ai"):
                continue
            analysis = analysis_rows.get(r["analysis_id"])
            art_dir = analysis["artifacts_dir"] if analysis else None
            npz = arrays.get(art_dir)
            if npz is not None and "slice_sop_uids" in npz.files and r["series_uid"]:
                slice_orders.setdefault(r["series_uid"], [str(u) for u in npz["slice_sop_uids"]])
            key_image = None
            name = str(r["key_image"] or "")
            # A plain file name only: the value comes from the database, never a path.
            if art_dir and _KEY_IMAGE.fullmatch(name):
                path = Path(art_dir) / (name if name.endswith(".png") else f"{name}.png")
                key_image = path if path.is_file() else None
            center = None
            if r["center_x"] is not None and r["center_y"] is not None:
                center = (float(r["center_x"]), float(r["center_y"]), float(r["center_z"] or 0))
            confirmed.append(
                ConfirmedFinding(
                    id=int(r["id"]),
                    analysis_id=r["analysis_id"],
                    number=len(confirmed) + 1,
                    kind=str(r["kind"]),
                    source=str(r["source"]),
                    verdict=str(r["verdict"]),
                    series_uid=r["series_uid"],
                    sop_instance_uid=r["sop_instance_uid"],
                    center_lps=center,
                    measurements=_measurements(r["measurements"]),
                    attributes=tuple(
                        sorted((str(k), str(v)) for k, v in (r["attributes"] or {}).items())
                    ),
                    category=r["category"],
                    model=_model(r["model"]),
                    key_image=key_image,
                    mask=_cropped_mask(npz, _mask_index(r, order)),
                    comment=r["comment"],
                )
            )
        wanted = list(dict.fromkeys(f.series_uid for f in confirmed if f.series_uid))
        if not wanted:
            # No confirmed finding: the SR still needs the study's images as evidence.
            wanted = [
                str(uid)
                for uid in conn.execute(
                    select(series.c.series_uid)
                    .where(series.c.study_uid == study_uid)
                    .order_by(series.c.instance_count.desc())
                    .limit(1)
                ).scalars()
            ]
        sources = []
        for series_uid in wanted:
            src = _source_series(ctx, conn, series_uid, slice_orders.get(series_uid))
            if src is not None:
                sources.append(src)
        artifacts = tuple(
            (str(a["pipeline"]), Path(a["artifacts_dir"]))
            for a in sorted(analysis_rows.values(), key=lambda a: a["id"])
            if a["artifacts_dir"] and any(f.analysis_id == a["id"] for f in confirmed)
        )
        models = {
            m.sha256 or f"{m.name}@{m.version}": m
            for m in (f.model for f in confirmed)
            if m is not None
        }
        patient = PatientInfo(
            study["patient_name"],
            study["patient_id"],
            study["patient_birth_date"],
            study["patient_sex"],
            study["accession_number"],
            study["study_date"],
            study["study_time"],
            study["study_description"],
        )
        text = None
        if report is not None and not alert:
            lang = report["language"] or "zh"
            text = report["impression_text"] if lang == "zh" else report["impression_text_en"]
    revision = 0 if alert else int(study["revision"])
    logger.info(
        "alert study loaded" if alert else "signed study loaded",
        extra={"study_uid": study_uid, "revision": revision, "findings": len(confirmed)},
    )
    return SignedStudy(
        study_uid=study_uid,
        revision=revision,
        patient=patient,
        reviewer=reviewer,
        signed_at=None if alert or report is None else report["signed_at"],
        findings=tuple(confirmed),
        sources=tuple(sources),
        models=tuple(sorted(models.values(), key=lambda m: m.name)),
        report_text=text,
        artifacts=artifacts,
        preliminary=alert,
    )
