"""Claim, review, amend and sign: the state changes of the review workflow.

Every function runs inside the caller's transaction and uses compare-and-set updates
(``WHERE claimed_by ... / revision = ...``), so two radiologists racing for one study or
one finding cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection

from api import clinical, reporting
from api.deps import User
from api.queries import active_claimant
from api.schemas import FindingCreate, FindingReview
from countyread.db import (
    audit,
    finding_revisions,
    findings,
    instances,
    reports,
    series,
    studies,
    utcnow,
)
from countyread.domain import Role, StudyStatus
from countyread.errors import ConflictError, InvalidInputError, NotFoundError
from countyread.settings import Settings
from countyread.status import refresh_study_status

CLAIMABLE = (StudyStatus.READY.value, StudyStatus.IN_REVIEW.value,
             StudyStatus.NOT_ANALYZABLE.value)
FROZEN = (StudyStatus.SIGNED.value, StudyStatus.DELIVERED.value)


def _free_or_mine(username: str, now: datetime) -> Any:
    return or_(studies.c.claimed_by.is_(None), studies.c.claimed_by == username,
               studies.c.claim_expires_at.is_(None), studies.c.claim_expires_at <= now)


def claim(conn: Connection, settings: Settings, user: User, row: Mapping[Any, Any]) -> None:
    """Take (or renew) the review lock; the study moves to ``in_review``."""
    uid, now = row["study_uid"], utcnow()
    if row["status"] in FROZEN:
        raise ConflictError("study is signed; amend it to reopen the review")
    if row["status"] not in CLAIMABLE:
        raise ConflictError(f"study is {row['status']}; it is not ready for review")
    holder = active_claimant(row, now)
    if holder and holder != user.username:
        raise ConflictError(f"study is claimed by {holder} until "
                            f"{row['claim_expires_at']:%H:%M:%S} UTC")
    res = conn.execute(update(studies).where(
        studies.c.study_uid == uid, studies.c.status.in_(CLAIMABLE),
        _free_or_mine(user.username, now),
    ).values(claimed_by=user.username, status=StudyStatus.IN_REVIEW.value,
             claim_expires_at=now + timedelta(seconds=settings.claim_ttl_s)))
    if res.rowcount != 1:
        raise ConflictError("study was claimed by another radiologist a moment ago")


def release(conn: Connection, settings: Settings, user: User, row: Mapping[Any, Any]) -> None:
    """Drop the lock (claimant, or an admin for anyone's); status goes back to the queue."""
    holder = active_claimant(row)
    if holder and holder != user.username and user.role != Role.ADMIN:
        raise ConflictError(f"study is claimed by {holder}; only they or an admin can release it")
    if row["status"] in FROZEN:
        conn.execute(update(studies).where(studies.c.study_uid == row["study_uid"])
                     .values(claimed_by=None, claim_expires_at=None))
        return
    # Back to "received" and let the core derive ready / not_analyzable from analyses.
    conn.execute(update(studies).where(studies.c.study_uid == row["study_uid"]).values(
        claimed_by=None, claim_expires_at=None, status=StudyStatus.RECEIVED.value))
    refresh_study_status(conn, settings, row["study_uid"])


def require_claim(conn: Connection, settings: Settings, user: User,
                  row: Mapping[Any, Any]) -> None:
    """Refuse unless ``user`` holds an unexpired claim on an unsigned study; renew it."""
    if row["status"] in FROZEN:
        raise ConflictError("study is signed; its review is frozen (amend to reopen)")
    holder = active_claimant(row)
    if holder is None:
        raise ConflictError("claim the study before reviewing it")
    if holder != user.username:
        raise ConflictError(f"study is claimed by {holder}")
    conn.execute(update(studies).where(studies.c.study_uid == row["study_uid"]).values(
        claim_expires_at=utcnow() + timedelta(seconds=settings.claim_ttl_s)))


def snapshot(f: Mapping[Any, Any]) -> dict[str, Any]:
    """The reviewable content of a finding, as stored in ``finding_revisions``."""
    return {
        "kind": f["kind"], "source": f["source"], "probability": f["probability"],
        "center_lps": None if f["center_x"] is None else [f["center_x"], f["center_y"],
                                                           f["center_z"]],
        "series_uid": f["series_uid"], "sop_instance_uid": f["sop_instance_uid"],
        "measurements": list(f["measurements"] or []), "category": f["category"],
        "attributes": dict(f["attributes"] or {}), "verdict": f["verdict"],
    }


def _derived(kind: str, measurements: list[dict[str, Any]], attributes: dict[str, Any],
             category_given: bool, grade_given: bool) -> tuple[str | None, dict[str, Any]]:
    """Re-derive a category / stenosis grade from edited measurements when not given."""
    category: str | None = None
    if kind in reporting.NODULE_KINDS and not category_given:
        size = clinical.nodule_size(measurements)
        category = clinical.lung_rads_baseline(clinical.nodule_type(attributes), size)
    if kind in ("stenosis",) and not grade_given:
        pct = clinical.stenosis_percent(measurements)
        if pct is not None:
            attributes = {**attributes, "grade": clinical.nascet_grade(pct)}
    return category, attributes


def review_finding(conn: Connection, settings: Settings, user: User, f: Mapping[Any, Any],
                   study: Mapping[Any, Any], body: FindingReview) -> None:
    require_claim(conn, settings, user, study)
    edits = body.model_dump(exclude={"verdict", "comment"}, exclude_none=True)
    if body.verdict == "edited" and not edits:
        raise InvalidInputError("verdict 'edited' needs at least one edited field")
    if body.verdict != "edited" and edits:
        raise InvalidInputError(f"edited fields need verdict 'edited', not {body.verdict!r}")
    now = utcnow()
    if f["revision"] == 0:
        # Keep what the AI said before anyone touched it: it is the training label's origin.
        conn.execute(finding_revisions.insert().values(
            finding_id=f["id"], revision=0, verdict=f["verdict"], snapshot=snapshot(f),
            comment=None, changed_by=f["reviewed_by"] or f["source"], changed_at=f["created_at"]))
    values: dict[str, Any] = {"verdict": body.verdict, "reviewed_by": user.username,
                              "reviewed_at": now, "comment": body.comment,
                              "revision": f["revision"] + 1}
    if edits:
        kind = body.kind or f["kind"]
        attrs = dict(f["attributes"] or {})
        for k, v in (body.attributes or {}).items():
            if v is None:
                attrs.pop(k, None)
            else:
                attrs[k] = v
        meas = ([m.model_dump() for m in body.measurements] if body.measurements is not None
                else list(f["measurements"] or []))
        category, attrs = _derived(
            kind, meas, attrs, body.category is not None,
            body.attributes is not None and "grade" in body.attributes)
        values.update(kind=kind, attributes=attrs, measurements=meas,
                      category=body.category if body.category is not None
                      else (category if body.measurements is not None and category
                            else f["category"]))
        if body.center_lps is not None:
            values.update(center_x=body.center_lps[0], center_y=body.center_lps[1],
                          center_z=body.center_lps[2])
    res = conn.execute(update(findings).where(
        findings.c.id == f["id"], findings.c.revision == f["revision"]).values(**values))
    if res.rowcount != 1:
        raise ConflictError("finding changed meanwhile; reload and try again")
    new = conn.execute(select(findings).where(findings.c.id == f["id"])).mappings().one()
    conn.execute(finding_revisions.insert().values(
        finding_id=f["id"], revision=new["revision"], verdict=new["verdict"],
        snapshot=snapshot(new), comment=body.comment, changed_by=user.username, changed_at=now))


def add_finding(conn: Connection, settings: Settings, user: User, study: Mapping[Any, Any],
                body: FindingCreate) -> int:
    require_claim(conn, settings, user, study)
    if body.series_uid is not None:
        found = conn.execute(select(series.c.series_uid).where(
            series.c.series_uid == body.series_uid,
            series.c.study_uid == study["study_uid"])).first()
        if found is None:
            raise InvalidInputError("series_uid is not a series of this study")
    now = utcnow()
    meas = [m.model_dump() for m in body.measurements]
    category, attrs = _derived(body.kind, meas, dict(body.attributes),
                               body.category is not None, "grade" in body.attributes)
    attrs = {k: v for k, v in attrs.items() if v is not None}
    res = conn.execute(findings.insert().values(
        study_uid=study["study_uid"], analysis_id=None, series_uid=body.series_uid,
        sop_instance_uid=body.sop_instance_uid, kind=body.kind, source="radiologist",
        probability=None,
        center_x=body.center_lps[0] if body.center_lps else None,
        center_y=body.center_lps[1] if body.center_lps else None,
        center_z=body.center_lps[2] if body.center_lps else None,
        measurements=meas, attributes=attrs, category=body.category or category,
        model=None, key_image=None, verdict="accepted", revision=1,
        reviewed_by=user.username, reviewed_at=now, comment=body.comment, created_at=now))
    pk = res.inserted_primary_key
    assert pk is not None
    new = conn.execute(select(findings).where(findings.c.id == pk[0])).mappings().one()
    conn.execute(finding_revisions.insert().values(
        finding_id=new["id"], revision=1, verdict="accepted", snapshot=snapshot(new),
        comment=body.comment, changed_by=user.username, changed_at=now))
    return int(new["id"])


def sign(conn: Connection, settings: Settings, user: User,
         study: Mapping[Any, Any]) -> tuple[int, datetime]:
    """Freeze the review and the report at a new study revision."""
    require_claim(conn, settings, user, study)
    uid = study["study_uid"]
    pending = conn.execute(select(func.count()).select_from(findings).where(
        findings.c.study_uid == uid, findings.c.source == "ai",
        findings.c.verdict == "pending")).scalar_one()
    if pending:
        raise ConflictError(f"{pending} AI finding(s) still need a verdict before signing")
    revision, now = study["revision"] + 1, utcnow()
    rep = conn.execute(select(reports).where(reports.c.study_uid == uid)).mappings().first()
    signed = {"revision": revision, "signed_by": user.username, "signed_at": now}
    if rep is None:
        rows = conn.execute(select(findings).where(findings.c.study_uid == uid)
                            .order_by(findings.c.id)).mappings().all()
        draft = reporting.generate(study, rows)
        conn.execute(reports.insert().values(
            study_uid=uid, language="zh", findings_text=draft.findings_zh,
            impression_text=draft.impression_zh, findings_text_en=draft.findings_en,
            impression_text_en=draft.impression_en, updated_by=user.username,
            updated_at=now, **signed))
    else:
        conn.execute(update(reports).where(reports.c.study_uid == uid).values(**signed))
    res = conn.execute(update(studies).where(and_(
        studies.c.study_uid == uid, studies.c.revision == study["revision"],
        studies.c.claimed_by == user.username)).values(
        status=StudyStatus.SIGNED.value, revision=revision, claimed_by=None,
        claim_expires_at=None))
    if res.rowcount != 1:
        raise ConflictError("study changed meanwhile; reload and try again")
    return revision, now


def amend(conn: Connection, settings: Settings, user: User, study: Mapping[Any, Any]) -> None:
    """Reopen a signed study for review by ``user``; the next sign makes a new revision."""
    if study["status"] not in FROZEN:
        raise ConflictError(f"study is {study['status']}; only a signed study can be amended")
    pruned = conn.execute(select(audit.c.id).where(
        audit.c.study_uid == study["study_uid"], audit.c.action == "prune").limit(1)).first()
    held = conn.execute(select(instances.c.sop_instance_uid).where(
        instances.c.study_uid == study["study_uid"]).limit(1)).first()
    if pruned is not None and held is None:  # images re-sent after a prune: fine again
        # Retention removed the source images (countyread/retention.py): new results
        # could not reference them. The signed results stay in PACS, which can amend.
        raise ConflictError("source images were removed by retention; amend in PACS "
                            "/ 原始图像已按保存期限清理，请在 PACS 中修订")
    now = utcnow()
    res = conn.execute(update(studies).where(
        studies.c.study_uid == study["study_uid"], studies.c.status.in_(FROZEN),
        studies.c.revision == study["revision"],
    ).values(status=StudyStatus.IN_REVIEW.value, claimed_by=user.username,
             claim_expires_at=now + timedelta(seconds=settings.claim_ttl_s)))
    if res.rowcount != 1:
        raise ConflictError("study changed meanwhile; reload and try again")
    conn.execute(update(reports).where(reports.c.study_uid == study["study_uid"])
                 .values(signed_by=None, signed_at=None, updated_by=user.username,
                         updated_at=now))


def get_finding(conn: Connection, finding_id: int) -> Mapping[Any, Any]:
    row = conn.execute(select(findings).where(findings.c.id == finding_id)).mappings().first()
    if row is None:
        raise NotFoundError(f"finding {finding_id} not found")
    return row
