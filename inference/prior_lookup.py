"""The worker's look-up of a patient's prior chest CT (database and stored arrays).

The same patient: equal Patient ID and, where both studies carry them, equal birth date
and name. Township hospitals issue their own IDs, so an ID alone could join two people;
the extra checks make such a collision practically impossible, at the price of missing
a prior whose name was typed differently (then the follow-up is read as a baseline,
which is the conservative error).

A reviewed prior (signed or delivered) contributes what the radiologist confirmed,
including nodules they added; an unreviewed one contributes the AI's findings that
nobody rejected, and the comparison says so.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, select

from countyread.context import AppContext
from countyread.db import analyses, findings, studies
from countyread.domain import StudyStatus
from inference.ct_nodule.priors import PriorNodule, PriorStudy

logger = logging.getLogger(__name__)

NODULE_KINDS = ("lung_nodule", "lung_mass", "nodule")
_REVIEWED = (StudyStatus.SIGNED.value, StudyStatus.DELIVERED.value)
_CONFIRMED = ("accepted", "edited")


def study_date(row: Any) -> date | None:
    """StudyDate (DA, YYYYMMDD), else the day the study first arrived."""
    raw = (row["study_date"] or "").strip()
    try:
        return datetime.strptime(raw[:8], "%Y%m%d").date()
    except ValueError:
        received = row["first_received_at"]
        return received.date() if received is not None else None


def _norm(name: str | None) -> str:
    return "".join((name or "").replace("^", " ").split()).upper()


def z_range(artifacts_dir: str | None) -> tuple[float, float] | None:
    """Superior-inferior extent (LPS z) of the analysed series, from its arrays."""
    if not artifacts_dir:
        return None
    path = Path(artifacts_dir) / "arrays.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        if "geometry" not in npz.files or "slice_sop_uids" not in npz.files:
            return None
        return z_range_of(np.asarray(npz["geometry"]), len(npz["slice_sop_uids"]))


def z_range_of(affine: np.ndarray, n_slices: int) -> tuple[float, float] | None:
    if affine.shape != (4, 4) or n_slices < 1:
        return None
    first = affine @ np.array([0.0, 0.0, 0.0, 1.0])
    last = affine @ np.array([0.0, 0.0, float(n_slices - 1), 1.0])
    return (float(min(first[2], last[2])), float(max(first[2], last[2])))


def _nodule(row: Any) -> PriorNodule | None:
    if row["center_x"] is None or row["center_y"] is None or row["center_z"] is None:
        return None
    values = {m.get("name"): m.get("value") for m in row["measurements"] or []
              if isinstance(m, dict)}
    try:
        diameter = float(values.get("mean_diameter") or values.get("long_axis") or 0.0)
        raw_volume = values.get("volume")
        volume = float(raw_volume) if raw_volume is not None else None
    except (TypeError, ValueError):
        return None
    if diameter <= 0:
        return None
    attrs = row["attributes"] or {}
    return PriorNodule(
        center_lps=(float(row["center_x"]), float(row["center_y"]), float(row["center_z"])),
        mean_diameter_mm=diameter,
        volume_mm3=volume,
        type=str(attrs.get("type") or "solid"),
        side=attrs.get("side"),
        finding_id=int(row["id"]),
    )


def find_prior(ctx: AppContext, study_uid: str) -> tuple[PriorStudy, date] | None:
    """The most recent earlier chest CT of the same patient with a CT nodule analysis."""
    with ctx.db.begin() as conn:
        cur = conn.execute(
            select(studies).where(studies.c.study_uid == study_uid)).mappings().first()
        if cur is None or not (cur["patient_id"] or "").strip():
            return None
        cur_date = study_date(cur)
        if cur_date is None:
            return None
        rows = conn.execute(select(studies).where(and_(
            studies.c.patient_id == cur["patient_id"], studies.c.study_uid != study_uid,
        ))).mappings().all()
        candidates = []
        for r in rows:
            if cur["patient_birth_date"] and r["patient_birth_date"] and (
                    r["patient_birth_date"] != cur["patient_birth_date"]):
                continue
            if cur["patient_name"] and r["patient_name"] and (
                    _norm(r["patient_name"]) != _norm(cur["patient_name"])):
                continue
            d = study_date(r)
            if d is not None and d < cur_date:
                candidates.append((d, r))
        for d, r in sorted(candidates, key=lambda x: x[0], reverse=True):
            analysis = conn.execute(
                select(analyses).where(and_(
                    analyses.c.study_uid == r["study_uid"], analyses.c.pipeline == "ct_nodule",
                    analyses.c.status == StudyStatus.READY.value,
                )).order_by(analyses.c.id.desc()).limit(1)
            ).mappings().first()
            if analysis is None:
                continue
            reviewed = r["status"] in _REVIEWED
            cond = [findings.c.study_uid == r["study_uid"], findings.c.kind.in_(NODULE_KINDS)]
            if reviewed:
                cond.append(findings.c.verdict.in_(_CONFIRMED))
            else:
                cond += [findings.c.verdict != "rejected", findings.c.source == "ai",
                         findings.c.analysis_id == analysis["id"]]
            rows_f = conn.execute(select(findings).where(and_(*cond))).mappings().all()
            nodules = tuple(n for n in (_nodule(f) for f in rows_f) if n is not None)
            prior = PriorStudy(
                study_uid=str(r["study_uid"]), study_date=d, nodules=nodules,
                z_range=z_range(analysis["artifacts_dir"]), reviewed=reviewed,
            )
            logger.info("prior study found", extra={
                "study_uid": study_uid, "prior_study_uid": prior.study_uid,
                "prior_nodules": len(nodules), "reviewed": reviewed})
            return prior, cur_date
    return None
