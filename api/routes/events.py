"""Server-sent events: the worklist changed (new ready study, status change, claim)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import CtxDep, CurrentUser
from api.events import critical_waiting, worklist_signature
from countyread.context import AppContext

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["events"])

_POLL_S = 1.0


def _poll(ctx: AppContext) -> tuple[str, int]:
    with ctx.db.begin() as conn:
        sig = json.dumps(worklist_signature(conn), sort_keys=True, default=str)
        return sig, critical_waiting(conn)


async def _stream(request: Request, ctx: AppContext, max_s: float) -> AsyncIterator[str]:
    # "retry" tells EventSource to reconnect after 2 s when the stream ends (max_s).
    yield "retry: 2000\n\n"
    end = time.monotonic() + max_s
    last: str | None = None
    seq = 0
    while time.monotonic() < end:
        if await request.is_disconnected():
            return
        try:
            sig, critical = await run_in_threadpool(_poll, ctx)
        except Exception:  # a database hiccup must not kill the stream; try again later
            logger.exception("event poll failed")
            await asyncio.sleep(_POLL_S)
            continue
        if sig != last:
            seq += 1
            payload = json.dumps({"type": "worklist", "critical_waiting": critical,
                                  "first": last is None})
            yield f"id: {seq}\nevent: worklist\ndata: {payload}\n\n"
            last = sig
        else:
            yield ": keep-alive\n\n"
        await asyncio.sleep(_POLL_S)


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(
    request: Request, ctx: CtxDep, _user: CurrentUser,
    max_s: Annotated[float, Query(ge=1, le=3600, description="close after this many seconds "
                                  "(the browser reconnects)")] = 300,
) -> StreamingResponse:
    """Text/event-stream: an ``worklist`` event whenever the worklist changes (~1 s latency)."""
    return StreamingResponse(_stream(request, ctx, max_s), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
