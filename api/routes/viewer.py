"""The image viewer: geometry of a stored series and its slices as windowed PNGs."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.engine import Connection

from api import audit
from api.deps import ClientIP, CtxDep, CurrentUser, User
from api.queries import load_study
from api.schemas import SeriesGeometry, SlicePublic
from api.viewer import (
    PRESETS,
    LayoutKey,
    SeriesCache,
    SeriesLayout,
    plan_layout,
)
from countyread.context import AppContext
from countyread.db import instances, series
from countyread.errors import NotFoundError
from countyread.uids import validate_uid

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/series", tags=["viewer"])

SeriesUID = Annotated[str, Path(max_length=64, description="Series Instance UID")]
Window = Annotated[str, Query(pattern=r"^(auto|lung|mediastinum|bone|brain|vessel)$",
                              description="preset; wc/ww override it")]
Centre = Annotated[float | None, Query(ge=-100_000, le=100_000, allow_inf_nan=False)]
Width = Annotated[float | None, Query(ge=1, le=200_000, allow_inf_nan=False)]
_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "8-bit grayscale PNG"},
}


def get_cache(request: Request) -> SeriesCache:
    """One cache per app, made on first use (the app factory stays untouched)."""
    cache: SeriesCache | None = getattr(request.app.state, "viewer_cache", None)
    if cache is None:
        cache = SeriesCache()
        request.app.state.viewer_cache = cache
    return cache


CacheDep = Annotated[SeriesCache, Depends(get_cache)]


def _scoped_series(conn: Connection, user: User, series_uid: str) -> Mapping[Any, Any]:
    """The series row if the caller may see its study; else the same 404 as a missing one."""
    validate_uid(series_uid, "series UID")
    row = conn.execute(select(series).where(series.c.series_uid == series_uid)
                       ).mappings().first()
    if row is None:
        raise NotFoundError(f"series {series_uid} not found")
    try:
        load_study(conn, user, row["study_uid"])
    except NotFoundError:
        raise NotFoundError(f"series {series_uid} not found") from None
    return row


def _layout(ctx: AppContext, cache: SeriesCache, user: User,
            series_uid: str) -> tuple[Mapping[Any, Any], LayoutKey, SeriesLayout]:
    with ctx.db.begin() as conn:
        row = _scoped_series(conn, user, series_uid)
    key: LayoutKey = (series_uid, int(row["instance_count"]), str(row["last_received_at"]))

    def load() -> SeriesLayout:
        with ctx.db.begin() as conn:
            rels = conn.execute(select(instances.c.path).where(
                instances.c.series_uid == series_uid)).scalars().all()
        if not rels:
            raise NotFoundError(f"series {series_uid} has no stored images")
        return plan_layout([ctx.store.absolute(r) for r in rels], row["modality"])

    return row, key, cache.layout(key, load)


@router.get("/{series_uid}/geometry", response_model=SeriesGeometry)
def series_geometry(ctx: CtxDep, user: CurrentUser, cache: CacheDep, series_uid: SeriesUID,
                    client: ClientIP) -> SeriesGeometry:
    """Slice count, per-slice SOP Instance UID and position, orientation and affine."""
    row, _key, lay = _layout(ctx, cache, user, series_uid)
    with ctx.db.begin() as conn:
        audit.record(conn, username=user.username, action="view", client=client,
                     study_uid=row["study_uid"], detail={"series_uid": series_uid})
    affine = lay.affine
    modality = (row["modality"] or "").upper()
    return SeriesGeometry(
        series_uid=series_uid, study_uid=row["study_uid"], modality=row["modality"],
        kind=lay.kind, rows=lay.rows, columns=lay.columns, slice_count=len(lay.slices),
        pixel_spacing=list(lay.spacing) if lay.spacing else None,
        orientation=list(lay.orientation) if lay.orientation else None,
        affine=affine.tolist() if affine is not None else None,
        windows={k: list(v) for k, v in PRESETS.items()},
        default_window="lung" if modality == "CT" and lay.kind != "projection" else "auto",
        slices=[SlicePublic(index=i, sop_instance_uid=s.sop_instance_uid, frame=s.frame,
                            instance_number=s.instance_number,
                            position=list(s.position) if s.position else None)
                for i, s in enumerate(lay.slices)],
        notes=list(lay.notes),
    )


@router.get("/{series_uid}/slices/{index}.png", response_class=Response, responses=_PNG)
def series_slice(ctx: CtxDep, user: CurrentUser, cache: CacheDep, series_uid: SeriesUID,
                 index: Annotated[int, Path(ge=0, le=100_000)], client: ClientIP,
                 window: Window = "auto", wc: Centre = None, ww: Width = None) -> Response:
    """One slice (display order of the geometry endpoint), windowed to 8-bit grey."""
    t0 = time.perf_counter()
    row, key, lay = _layout(ctx, cache, user, series_uid)
    if index >= len(lay.slices):
        raise NotFoundError(f"slice {index} not in this series ({len(lay.slices)} slices)")
    png, (centre, width) = cache.png(key, index, lay.slices[index], window, wc, ww)
    with ctx.db.begin() as conn:
        audit.record(conn, username=user.username, action="view_image", client=client,
                     study_uid=row["study_uid"],
                     detail={"series_uid": series_uid, "index": index, "window": window})
    logger.debug("slice served", extra={"series_uid": series_uid, "index": index,
                                        "duration_ms": round(1000 * (time.perf_counter() - t0))})
    # no-store: review workstations are shared; the page keeps its own in-memory copy
    return Response(png, media_type="image/png", headers={
        "Cache-Control": "no-store",
        "X-Window": f"{centre:g},{width:g}"})
