"""Urgent alerts before sign-off: the one exception to "nothing leaves before sign-off".

DESIGN.md section 4 allows it per node: a node whose ``send`` families include
``ALERT`` receives, for a study the AI graded at least ``settings.alert_min_urgency``
(default critical: a CTA occlusion, a lung mass), the unreviewed key images and SR as
soon as the analysis is ready — so a township doctor can act on a suspected stroke while
the study waits in the county queue. The objects say on their face that no radiologist
verified them (see :func:`dicom_node.results.builder.build_alert`); the signed result
follows as usual and supersedes an alert still pending.

Alerts are deliveries of revision 0 (signed revisions start at 1) and go through the
same durable outbox, with its retries and per-object outcomes.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, exists, select
from sqlalchemy.exc import IntegrityError

from countyread.context import AppContext
from countyread.db import deliveries, studies, utcnow
from countyread.domain import NodeKind, StudyStatus, Urgency
from countyread.nodes import ALERT, Node, list_nodes
from dicom_node.results.builder import build_alert

logger = logging.getLogger(__name__)

#: The revision number an alert's deliveries carry.
ALERT_REVISION = 0
#: A study older than this gets no alert when a node opts in later: it is stale news.
ALERT_MAX_AGE = timedelta(hours=24)
#: Statuses in which a study still waits for a radiologist.
_WAITING = (StudyStatus.READY.value, StudyStatus.IN_REVIEW.value)


def _alert_urgencies(minimum: Urgency) -> list[str]:
    return [u.value for u in Urgency if u.rank <= minimum.rank]


def _receivers(ctx: AppContext) -> list[Node]:
    return [n for n in list_nodes(ctx.db) if ALERT in n.send and n.can_receive]


def due_alerts(ctx: AppContext) -> list[str]:
    """Studies that need an alert now and have none yet (oldest first)."""
    receivers = _receivers(ctx)
    if not receivers:
        return []
    to_all = any(n.kind == NodeKind.PACS for n in receivers)
    origins = [n.id for n in receivers if n.kind != NodeKind.PACS]
    cond = [
        studies.c.status.in_(_WAITING),
        studies.c.urgency.in_(_alert_urgencies(ctx.settings.alert_min_urgency)),
        studies.c.last_received_at >= utcnow() - ALERT_MAX_AGE,
        ~exists().where(
            and_(
                deliveries.c.study_uid == studies.c.study_uid,
                deliveries.c.revision == ALERT_REVISION,
            )
        ),
    ]
    if not to_all:
        cond.append(studies.c.source_node_id.in_(origins))
    with ctx.db.begin() as conn:
        return [
            str(uid)
            for uid in conn.execute(
                select(studies.c.study_uid).where(and_(*cond))
                .order_by(studies.c.first_received_at).limit(16)
            ).scalars()
        ]


def schedule_alert(ctx: AppContext, study_uid: str, source_node_id: int | None) -> int:
    """Build the alert and queue it to every opted-in destination; returns how many."""
    receivers = [
        n for n in _receivers(ctx) if n.kind == NodeKind.PACS or n.id == source_node_id
    ]
    result = build_alert(ctx, study_uid)
    queued = 0
    for node in receivers:
        # The node's own families among what an alert holds; a node that asked for
        # ALERT alone gets both.
        families = [f for f in node.send if f in ("SC", "SR")] or ["SC", "SR"]
        objects = result.of(*families)
        if not objects:
            continue
        try:
            with ctx.db.begin() as conn:
                conn.execute(deliveries.insert().values(
                    study_uid=study_uid, node_id=node.id, revision=ALERT_REVISION,
                    objects=[o.delivery_entry() for o in objects], state="pending",
                    attempts=0, next_attempt_at=utcnow(),
                ))
            queued += 1
        except IntegrityError:  # another outbox process queued it first
            continue
    logger.info("urgent alert scheduled before sign-off",
                extra={"study_uid": study_uid, "deliveries": queued})
    return queued


def schedule_due_alerts(ctx: AppContext) -> int:
    """Queue alerts for every study that needs one; returns how many were queued."""
    total = 0
    for study_uid in due_alerts(ctx):
        with ctx.db.begin() as conn:
            row = conn.execute(
                select(studies.c.source_node_id, studies.c.status)
                .where(studies.c.study_uid == study_uid)
            ).one()
        if row.status not in _WAITING:  # signed meanwhile: the signed result goes instead
            continue
        try:
            total += schedule_alert(ctx, study_uid, row.source_node_id)
        except Exception:  # one study's broken files must not stop other alerts
            logger.exception("urgent alert could not be built", extra={"study_uid": study_uid})
    return total
