"""Per-destination delivery status of a signed study, and manual resend."""

from __future__ import annotations

import importlib
from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import select

from api import audit
from api.deps import ClientIP, CtxDep, CurrentUser, StaffUser
from api.queries import load_study
from api.routes.studies import StudyUID
from api.schemas import DeliveryPublic
from countyread.db import deliveries, nodes
from countyread.errors import NotFoundError, StorageError

router = APIRouter(prefix="/api/studies", tags=["deliveries"])


def _list(conn: object, study_uid: str) -> list[DeliveryPublic]:
    q = (select(deliveries, nodes.c.name.label("node_name"), nodes.c.ae_title)
         .join(nodes, nodes.c.id == deliveries.c.node_id, isouter=True)
         .where(deliveries.c.study_uid == study_uid)
         .order_by(deliveries.c.revision.desc(), deliveries.c.id))
    rows = conn.execute(q).mappings().all()  # type: ignore[attr-defined]
    return [DeliveryPublic.model_validate(
        {**dict(r), "objects": list(r["objects"] or [])}) for r in rows]


@router.get("/{study_uid}/deliveries", response_model=list[DeliveryPublic])
def list_deliveries(ctx: CtxDep, user: CurrentUser, study_uid: StudyUID,
                    client: ClientIP) -> list[DeliveryPublic]:
    """One row per destination and revision: pending / sent / failed, attempts, last error."""
    with ctx.db.begin() as conn:
        load_study(conn, user, study_uid)
        out = _list(conn, study_uid)
        audit.record(conn, username=user.username, action="deliveries_view", client=client,
                     study_uid=study_uid)
    return out


@router.post("/{study_uid}/deliveries/{delivery_id}/resend", response_model=DeliveryPublic)
def resend(ctx: CtxDep, user: StaffUser, study_uid: StudyUID,
           delivery_id: Annotated[int, Path(ge=1, le=2**62)], client: ClientIP) -> DeliveryPublic:
    """Queue a delivery again now (after a destination was repaired)."""
    with ctx.db.begin() as conn:
        load_study(conn, user, study_uid)
        owner = conn.execute(select(deliveries.c.study_uid).where(
            deliveries.c.id == delivery_id)).scalar()
    if owner != study_uid:
        raise NotFoundError(f"delivery {delivery_id} of study {study_uid} not found")
    try:
        outbox = importlib.import_module("dicom_node.outbox")
    except ModuleNotFoundError:
        raise StorageError("results outbox not installed; cannot resend") from None
    outbox.resend(ctx, delivery_id)
    with ctx.db.begin() as conn:
        audit.record(conn, username=user.username, action="resend", client=client,
                     study_uid=study_uid, detail={"delivery_id": delivery_id})
        return next(d for d in _list(conn, study_uid) if d.id == delivery_id)
