"""The FastAPI app factory and ``countyread api``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from api.deps import CtxDep
from api.routes import (
    audit,
    auth,
    deliveries,
    events,
    findings,
    nodes,
    reports,
    studies,
    system,
    users,
    viewer,
    worklist,
)
from api.schemas import Health
from countyread import __version__
from countyread.context import AppContext
from countyread.errors import (
    AuthenticationError,
    CountyReadError,
    StorageError,
    TooManyRequestsError,
)

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


async def _countyread_error(_request: Request, exc: Exception) -> JSONResponse:
    """The one mapping from the error hierarchy to HTTP: status from the class, message."""
    assert isinstance(exc, CountyReadError)
    status = exc.http_status
    if status >= 500:
        logger.error("request failed", extra={"error": type(exc).__name__})
    headers: dict[str, str] | None = None
    if isinstance(exc, AuthenticationError):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, TooManyRequestsError):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def create_app(ctx: AppContext) -> FastAPI:
    """Build the API around an open :class:`AppContext` (the caller owns and closes it)."""
    app = FastAPI(
        title="CountyRead API",
        version=__version__,
        description="Worklist, review and sign-off of AI findings for county review "
        "centers. Log in at /api/auth/token (OAuth2 password form), then send "
        "`Authorization: Bearer <token>`.",
    )
    app.state.ctx = ctx
    app.add_exception_handler(CountyReadError, _countyread_error)
    for module in (auth, users, worklist, studies, findings, reports, deliveries, nodes,
                   audit, events, viewer, system):
        app.include_router(module.router)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz(ctx: CtxDep) -> Health:
        """Liveness and database reachability; no authentication, no patient data."""
        try:
            with ctx.db.begin() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise StorageError(f"database unreachable: {type(exc).__name__}") from None
        return Health(status="ok", database=ctx.db.engine.dialect.name)

    if (STATIC_DIR / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return app


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread api",
        description="Run the worklist API and the radiologist web page alone (uvicorn) on "
        "COUNTYREAD_API_HOST:COUNTYREAD_API_PORT (default 0.0.0.0:8000). Create the first "
        "user with `countyread users create NAME --role admin --password-stdin`. "
        "OpenAPI documentation is served at /docs.",
    )
    parser.add_argument("--host", default=None, help="bind address (default COUNTYREAD_API_HOST)")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default COUNTYREAD_API_PORT)")
    args = parser.parse_args(list(argv))
    import uvicorn

    from countyread.logs import configure_logging

    ctx = AppContext.create()
    settings = ctx.settings
    configure_logging(settings.log_level, settings.log_dir)
    try:
        uvicorn.run(create_app(ctx), host=args.host or settings.api_host,
                    port=args.port or settings.api_port, log_level=settings.log_level.lower())
    finally:
        ctx.close()
    return 0
