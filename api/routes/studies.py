"""Studies: index, detail, claim/release, adding a missed finding, amendment."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from api import audit, review
from api.deps import ClientIP, CtxDep, CurrentUser, RadiologistUser, StaffUser
from api.queries import finding_public, load_study, study_detail, study_summary
from api.schemas import ClaimPublic, FindingCreate, FindingPublic, StudyDetail, StudyPage
from api.worklist import StudyFilter, study_page
from countyread.domain import StudyStatus, Urgency

router = APIRouter(prefix="/api/studies", tags=["studies"])

StudyUID = Annotated[str, Path(max_length=64, description="Study Instance UID")]
Modality = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$")]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]


@router.get("", response_model=StudyPage)
def list_studies(
    ctx: CtxDep, user: CurrentUser, client: ClientIP,
    status_: Annotated[list[StudyStatus] | None, Query(alias="status")] = None,
    modality: Modality = None,
    node_id: Annotated[int | None, Query(description="township node (source)")] = None,
    urgency: Urgency | None = None,
    date_from: Annotated[date | None, Query(description="arrival on or after (UTC)")] = None,
    date_to: Annotated[date | None, Query(description="arrival on or before (UTC)")] = None,
    offset: Offset = 0, limit: Limit = 50,
) -> StudyPage:
    """Every study the caller may see, newest arrival first."""
    flt = StudyFilter(tuple(s.value for s in status_ or ()), modality, node_id, urgency,
                      date_from, date_to)
    with ctx.db.begin() as conn:
        rows, total = study_page(conn, user, flt, offset, limit)
        audit.record(conn, username=user.username, action="list", client=client,
                     detail={"what": "studies", "count": len(rows)})
    return StudyPage(items=[study_summary(ctx.settings, r) for r in rows], total=total,
                     offset=offset, limit=limit)


@router.get("/{study_uid}", response_model=StudyDetail)
def get_study(ctx: CtxDep, user: CurrentUser, study_uid: StudyUID,
              client: ClientIP) -> StudyDetail:
    """Status, series, jobs, analyses and findings of one study."""
    with ctx.db.begin() as conn:
        row = load_study(conn, user, study_uid)
        detail = study_detail(conn, ctx.settings, row)
        audit.record(conn, username=user.username, action="view", client=client,
                     study_uid=study_uid)
    return detail


def _claim_state(ctx: CtxDep, user: CurrentUser, study_uid: str) -> ClaimPublic:
    with ctx.db.begin() as conn:
        s = study_summary(ctx.settings, load_study(conn, user, study_uid))
    return ClaimPublic(study_uid=s.study_uid, status=s.status, claimed_by=s.claimed_by,
                       claim_expires_at=s.claim_expires_at)


@router.post("/{study_uid}/claim", response_model=ClaimPublic,
             responses={409: {"description": "claimed by another radiologist, or signed"}})
def claim_study(ctx: CtxDep, user: RadiologistUser, study_uid: StudyUID,
                client: ClientIP) -> ClaimPublic:
    """Lock the study for review (renews your own claim); status becomes in_review."""
    with ctx.db.begin() as conn:
        row = load_study(conn, user, study_uid)
        review.claim(conn, ctx.settings, user, row)
        audit.record(conn, username=user.username, action="claim", client=client,
                     study_uid=study_uid)
    return _claim_state(ctx, user, study_uid)


@router.delete("/{study_uid}/claim", response_model=ClaimPublic)
def release_study(ctx: CtxDep, user: StaffUser, study_uid: StudyUID,
                  client: ClientIP) -> ClaimPublic:
    """Release the claim: the claimant releases their own, an admin anyone's."""
    with ctx.db.begin() as conn:
        row = load_study(conn, user, study_uid)
        review.release(conn, ctx.settings, user, row)
        audit.record(conn, username=user.username, action="release", client=client,
                     study_uid=study_uid, detail={"holder": row["claimed_by"]})
    return _claim_state(ctx, user, study_uid)


@router.post("/{study_uid}/findings", response_model=FindingPublic,
             status_code=status.HTTP_201_CREATED)
def add_finding(ctx: CtxDep, user: RadiologistUser, study_uid: StudyUID, body: FindingCreate,
                client: ClientIP) -> FindingPublic:
    """Add a finding the AI missed (source radiologist, verdict accepted)."""
    with ctx.db.begin() as conn:
        row = load_study(conn, user, study_uid)
        finding_id = review.add_finding(conn, ctx.settings, user, row, body)
        audit.record(conn, username=user.username, action="add_finding", client=client,
                     study_uid=study_uid, detail={"finding_id": finding_id, "kind": body.kind})
        return finding_public(review.get_finding(conn, finding_id))


@router.post("/{study_uid}/amend", response_model=ClaimPublic)
def amend_study(ctx: CtxDep, user: RadiologistUser, study_uid: StudyUID,
                client: ClientIP) -> ClaimPublic:
    """Reopen a signed study for review by the caller; signing again makes a new revision."""
    with ctx.db.begin() as conn:
        row = load_study(conn, user, study_uid)
        review.amend(conn, ctx.settings, user, row)
        audit.record(conn, username=user.username, action="amend", client=client,
                     study_uid=study_uid, detail={"from_revision": row["revision"]})
    return _claim_state(ctx, user, study_uid)
