"""Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE and N-SET.

A scanner creates the step IN PROGRESS when it starts and sets it COMPLETED (or
DISCONTINUED) with the Performed Series Sequence listing every image it produced. We
keep the per-series image counts so the stability monitor can call a series complete as
soon as that many instances arrived, instead of waiting for the quiet time.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select, update

from countyread.context import AppContext
from countyread.db import mpps, utcnow
from countyread.uids import is_valid_uid
from dicom_node import status as st

logger = logging.getLogger(__name__)

# PS3.3 C.4.14 Performed Procedure Step Status defined terms
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
_FINAL = {COMPLETED, DISCONTINUED}


def _status_ds(status: int, comment: str, error_id: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    if error_id is not None:
        ds.ErrorID = error_id
    return ds


def series_counts(ds: Dataset) -> dict[str, int]:
    """Images per series from the Performed Series Sequence (PS3.3 C.4.15)."""
    counts: dict[str, int] = {}
    for item in ds.get("PerformedSeriesSequence") or []:
        uid = str(item.get("SeriesInstanceUID", "") or "")
        if not is_valid_uid(uid):
            continue
        refs = item.get("ReferencedImageSequence") or []
        counts[uid] = counts.get(uid, 0) + len(refs)
    return counts


def _study_uid(ds: Dataset) -> str | None:
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        uid = str(item.get("StudyInstanceUID", "") or "")
        if is_valid_uid(uid):
            return uid
    return None


class MppsScp:
    """Event handlers for N-CREATE / N-SET on the MPPS SOP class."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def on_create(self, event: Any) -> tuple[Dataset | int, Dataset | None]:
        try:
            return self._create(event)
        except Exception:
            logger.exception("MPPS N-CREATE failed")
            return _status_ds(st.PROCESSING_FAILURE, "internal error"), None

    def on_set(self, event: Any) -> tuple[Dataset | int, Dataset | None]:
        try:
            return self._set(event)
        except Exception:
            logger.exception("MPPS N-SET failed")
            return _status_ds(st.PROCESSING_FAILURE, "internal error"), None

    def _create(self, event: Any) -> tuple[Dataset | int, Dataset | None]:
        req = event.request
        uid = str(req.AffectedSOPInstanceUID or "")
        if not is_valid_uid(uid):
            # PS3.4 F.7.2.1.1: the SCU supplies the SOP Instance UID; we do not invent one.
            return _status_ds(st.INVALID_ATTRIBUTE_VALUE, "Affected SOP Instance UID"), None
        attrs = event.attribute_list
        state = str(attrs.get("PerformedProcedureStepStatus", "") or "").strip()
        if state != IN_PROGRESS:
            # PS3.4 F.7.2.1.1: an MPPS is created IN PROGRESS.
            return _status_ds(st.INVALID_ATTRIBUTE_VALUE, "status must be IN PROGRESS"), None
        with self.ctx.db.begin() as conn:
            if conn.execute(select(mpps.c.sop_instance_uid)
                            .where(mpps.c.sop_instance_uid == uid)).first():
                return _status_ds(st.DUPLICATE_SOP_INSTANCE, "MPPS exists"), None
            conn.execute(mpps.insert().values(
                sop_instance_uid=uid, study_uid=_study_uid(attrs), status=state,
                series=series_counts(attrs), updated_at=utcnow(),
            ))
        logger.info("MPPS created", extra={"mpps_uid": uid, "study_uid": _study_uid(attrs)})
        return st.SUCCESS, attrs

    def _set(self, event: Any) -> tuple[Dataset | int, Dataset | None]:
        req = event.request
        uid = str(req.RequestedSOPInstanceUID or "")
        mods = event.modification_list
        with self.ctx.db.begin() as conn:
            row = conn.execute(
                select(mpps).where(mpps.c.sop_instance_uid == uid)
            ).mappings().first()
            if row is None:
                return _status_ds(st.NO_SUCH_OBJECT_INSTANCE, "no such MPPS"), None
            if row["status"] in _FINAL:
                # PS3.4 F.7.2.2.1: Processing failure, ErrorID 0xA710.
                return _status_ds(st.PROCESSING_FAILURE, "MPPS may no longer be updated",
                                  st.MPPS_ERROR_ID_NOT_UPDATABLE), None
            values: dict[str, Any] = {"updated_at": utcnow()}
            if "PerformedProcedureStepStatus" in mods:
                new = str(mods.PerformedProcedureStepStatus or "").strip()
                if new not in {IN_PROGRESS, *_FINAL}:
                    return _status_ds(st.INVALID_ATTRIBUTE_VALUE, "unknown step status"), None
                values["status"] = new
            if "PerformedSeriesSequence" in mods:
                values["series"] = series_counts(mods)
            conn.execute(update(mpps).where(mpps.c.sop_instance_uid == uid).values(values))
        logger.info("MPPS updated", extra={"mpps_uid": uid, "mpps_status": values.get("status")})
        return st.SUCCESS, mods
