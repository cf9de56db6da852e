"""Service status for administrators (JSON) and for a Prometheus scraper (text)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from api import system
from api.deps import AdminUser, CtxDep

router = APIRouter(tags=["system"])


@router.get("/api/system")
def status(ctx: CtxDep, _admin: AdminUser) -> dict[str, Any]:
    """Queue, worklist, delivery and quarantine counts, models and execution providers."""
    return asdict(system.collect(ctx))


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(ctx: CtxDep) -> PlainTextResponse:
    """Prometheus metrics: counts and versions only, no patient data, no login needed
    (scrapers on the hospital LAN; put it behind the reverse proxy if that is too open)."""
    return PlainTextResponse(system.prometheus(system.collect(ctx)),
                             media_type="text/plain; version=0.0.4")
