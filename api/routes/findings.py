"""Findings: review verdicts, revision history, key images; analysis images."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse
from sqlalchemy import select

from api import audit, review
from api.deps import ClientIP, CtxDep, CurrentUser, RadiologistUser
from api.images import resolve_image
from api.queries import finding_public, load_study
from api.schemas import FindingPublic, FindingReview, FindingRevisionPublic
from countyread.db import analyses, finding_revisions
from countyread.errors import NotFoundError

router = APIRouter(prefix="/api", tags=["findings"])

FindingId = Annotated[int, Path(ge=1, le=2**62)]
_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "PNG image"},
}


@router.patch("/findings/{finding_id}", response_model=FindingPublic,
              responses={409: {"description": "not claimed by you, or the study is signed"}})
def review_finding(ctx: CtxDep, user: RadiologistUser, finding_id: FindingId,
                   body: FindingReview, client: ClientIP) -> FindingPublic:
    """Accept, reject or edit one finding; each change is a new revision (who, when, what)."""
    with ctx.db.begin() as conn:
        f = review.get_finding(conn, finding_id)
        study = load_study(conn, user, f["study_uid"])
        review.review_finding(conn, ctx.settings, user, f, study, body)
        audit.record(conn, username=user.username, action="review", client=client,
                     study_uid=f["study_uid"],
                     detail={"finding_id": finding_id, "verdict": body.verdict,
                             "fields": sorted(body.model_dump(exclude_none=True))})
        return finding_public(review.get_finding(conn, finding_id))


@router.get("/findings/{finding_id}/revisions", response_model=list[FindingRevisionPublic])
def finding_history(ctx: CtxDep, user: CurrentUser,
                    finding_id: FindingId) -> list[FindingRevisionPublic]:
    """Every revision of a finding, revision 0 being what the AI reported."""
    with ctx.db.begin() as conn:
        f = review.get_finding(conn, finding_id)
        load_study(conn, user, f["study_uid"])
        rows = conn.execute(select(finding_revisions).where(
            finding_revisions.c.finding_id == finding_id).order_by(finding_revisions.c.revision)
        ).mappings().all()
    return [FindingRevisionPublic.model_validate(dict(r)) for r in rows]


@router.get("/findings/{finding_id}/image", response_class=FileResponse, responses=_PNG)
def finding_image(ctx: CtxDep, user: CurrentUser, finding_id: FindingId,
                  client: ClientIP) -> FileResponse:
    """The key image (PNG) the analysis rendered for this finding."""
    with ctx.db.begin() as conn:
        f = review.get_finding(conn, finding_id)
        load_study(conn, user, f["study_uid"])
        art = None
        if f["analysis_id"] is not None:
            art = conn.execute(select(analyses.c.artifacts_dir).where(
                analyses.c.id == f["analysis_id"])).scalar()
        if not f["key_image"]:
            raise NotFoundError("this finding has no key image")
        path = resolve_image(art, f["key_image"])
        audit.record(conn, username=user.username, action="view_image", client=client,
                     study_uid=f["study_uid"], detail={"finding_id": finding_id})
    return FileResponse(path, media_type="image/png")


@router.get("/analyses/{analysis_id}/images/{name}", response_class=FileResponse,
            responses=_PNG)
def analysis_image(ctx: CtxDep, user: CurrentUser, analysis_id: FindingId,
                   name: Annotated[str, Path(max_length=132)], client: ClientIP) -> FileResponse:
    """An image of an analysis (key slice, MIP, VR, CPR) by name."""
    with ctx.db.begin() as conn:
        a = conn.execute(select(analyses.c.study_uid, analyses.c.artifacts_dir).where(
            analyses.c.id == analysis_id)).first()
        if a is None:
            raise NotFoundError(f"analysis {analysis_id} not found")
        load_study(conn, user, a[0])
        path = resolve_image(a[1], name)
        audit.record(conn, username=user.username, action="view_image", client=client,
                     study_uid=a[0], detail={"analysis_id": analysis_id, "image": path.stem})
    return FileResponse(path, media_type="image/png")
