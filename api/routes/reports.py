"""Report draft, edits and sign-off (which hands the study to the results outbox)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select, update

from api import audit, reporting, review
from api.deps import ClientIP, CtxDep, CurrentUser, RadiologistUser
from api.queries import load_study, study_findings
from api.routes.studies import StudyUID
from api.schemas import ReportPublic, ReportUpdate, SignResult
from countyread.db import reports, utcnow
from countyread.domain import StudyStatus
from countyread.errors import CountyReadError

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/studies", tags=["reports"])


def _report(conn: Any, study: Mapping[Any, Any], regenerate: bool = False) -> ReportPublic:
    rows = study_findings(conn, study["study_uid"])
    draft = reporting.generate(study, rows)
    rep = conn.execute(select(reports).where(
        reports.c.study_uid == study["study_uid"])).mappings().first()
    if rep is None or (regenerate and rep["signed_at"] is None):
        return ReportPublic(
            study_uid=study["study_uid"], state="generated", language="zh",
            findings_text=draft.findings_zh, impression_text=draft.impression_zh,
            findings_text_en=draft.findings_en, impression_text_en=draft.impression_en,
            lung_rads=draft.lung_rads, revision=study["revision"], signed_by=None,
            signed_at=None, updated_by=None, updated_at=None)
    return ReportPublic(
        study_uid=study["study_uid"], state="signed" if rep["signed_at"] else "draft",
        language=rep["language"] if rep["language"] in ("zh", "en") else "zh",
        findings_text=rep["findings_text"] or "", impression_text=rep["impression_text"] or "",
        findings_text_en=rep["findings_text_en"] or "",
        impression_text_en=rep["impression_text_en"] or "", lung_rads=draft.lung_rads,
        revision=rep["revision"], signed_by=rep["signed_by"], signed_at=rep["signed_at"],
        updated_by=rep["updated_by"], updated_at=rep["updated_at"])


@router.get("/{study_uid}/report", response_model=ReportPublic)
def get_report(
    ctx: CtxDep, user: CurrentUser, study_uid: StudyUID, client: ClientIP,
    regenerate: bool = Query(False, description="return a fresh draft from the findings "
                             "instead of the saved (unsigned) one"),
) -> ReportPublic:
    """The report: saved draft or signed text, else a draft generated from confirmed findings."""
    with ctx.db.begin() as conn:
        study = load_study(conn, user, study_uid)
        out = _report(conn, study, regenerate)
        audit.record(conn, username=user.username, action="report_view", client=client,
                     study_uid=study_uid)
    return out


@router.put("/{study_uid}/report", response_model=ReportPublic)
def put_report(ctx: CtxDep, user: RadiologistUser, study_uid: StudyUID, body: ReportUpdate,
               client: ClientIP) -> ReportPublic:
    """Save edits to the draft; fields left out keep their current (or generated) text."""
    with ctx.db.begin() as conn:
        study = load_study(conn, user, study_uid)
        review.require_claim(conn, ctx.settings, user, study)
        current = _report(conn, study)
        values = {
            "language": body.language or current.language,
            "findings_text": _pick(body.findings_text, current.findings_text),
            "impression_text": _pick(body.impression_text, current.impression_text),
            "findings_text_en": _pick(body.findings_text_en, current.findings_text_en),
            "impression_text_en": _pick(body.impression_text_en, current.impression_text_en),
            "updated_by": user.username, "updated_at": utcnow(),
        }
        if current.state == "generated":
            conn.execute(reports.insert().values(study_uid=study_uid,
                                                 revision=study["revision"], **values))
        else:
            conn.execute(update(reports).where(reports.c.study_uid == study_uid)
                         .values(**values))
        audit.record(conn, username=user.username, action="report_edit", client=client,
                     study_uid=study_uid,
                     detail={"fields": sorted(body.model_dump(exclude_none=True))})
        return _report(conn, study)


def _pick(new: str | None, old: str) -> str:
    return old if new is None else new


@router.post("/{study_uid}/sign", response_model=SignResult,
             responses={409: {"description": "not claimed by you, pending findings, or signed"}})
def sign_study(ctx: CtxDep, user: RadiologistUser, study_uid: StudyUID,
               client: ClientIP) -> SignResult:
    """Sign: freezes the review at a new revision and schedules delivery of the results."""
    with ctx.db.begin() as conn:
        study = load_study(conn, user, study_uid)
        revision, signed_at = review.sign(conn, ctx.settings, user, study)
        rep = _report(conn, {**study, "revision": revision})
        audit.record(conn, username=user.username, action="sign", client=client,
                     study_uid=study_uid, detail={
                         "revision": revision, "findings_text": rep.findings_text,
                         "impression_text": rep.impression_text})
    delivery_ids: list[int] = []
    error: str | None = None
    try:
        # Imported here: the outbox belongs to dicom_node and the API must start without it.
        outbox = importlib.import_module("dicom_node.outbox")
        delivery_ids = list(outbox.schedule_delivery(ctx, study_uid))
    except ModuleNotFoundError as exc:
        error = f"results outbox not installed ({exc.name}); nothing was scheduled"
        logger.error("sign without outbox", extra={"study_uid": study_uid})
    except Exception as exc:
        # The signature is committed and stands; the failure is reported in the answer
        # and the log, and signing again after an amendment schedules the new revision.
        error = (str(exc) if isinstance(exc, CountyReadError)
                 else f"building results failed: {type(exc).__name__}: {exc}")[:500]
        logger.exception("scheduling delivery failed", extra={"study_uid": study_uid})
    if delivery_ids:
        with ctx.db.begin() as conn:
            audit.record(conn, username=user.username, action="export", client=client,
                         study_uid=study_uid, detail={"revision": revision,
                                                      "delivery_ids": delivery_ids})
    return SignResult(study_uid=study_uid, status=StudyStatus.SIGNED, revision=revision,
                      signed_by=user.username, signed_at=signed_at,
                      delivery_ids=delivery_ids, delivery_error=error)
