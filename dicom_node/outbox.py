"""Durable outbox: signed results go back by C-STORE, per destination, with retries.

One ``deliveries`` row per (study, node, revision), created at sign-off only (DESIGN.md
section 4: nothing leaves before sign-off; the per-node urgent-alert exception lives in
:mod:`dicom_node.alerts` and rides on these rows as revision 0). Its ``objects`` list
records each object's own outcome, so a retry sends only what the peer has not yet
accepted, and the peer de-duplicates by SOP Instance UID anyway.

States: ``pending`` (due at ``next_attempt_at``; ``last_error`` tells why an earlier
attempt failed), ``sent`` (every object accepted), ``failed`` (given up: every remaining
object refused for good, the node cannot receive, or too many attempts; ``resend``
re-queues it). When every delivery of a signed revision is sent the study becomes
``delivered``. Destinations due together are sent in parallel, each over its own
association, so a slow township link never delays PACS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError

from countyread.context import AppContext
from countyread.db import deliveries, studies, utcnow
from countyread.domain import NodeKind, StudyStatus
from countyread.errors import NotFoundError
from countyread.nodes import Node, get_node, list_nodes
from dicom_node.alerts import schedule_due_alerts
from dicom_node.results.builder import build_results, warm_up
from dicom_node.scu import send_paths

logger = logging.getLogger(__name__)

#: After this many failed attempts (about four hours with the default 5 s .. 600 s
#: backoff) a delivery is ``failed`` until someone resends it.
MAX_ATTEMPTS = 30
#: A claimed delivery is invisible to other outbox workers for this long.
CLAIM_LEASE_S = 300.0
_BATCH = 16

# Storage statuses worth retrying: out of resources (PS3.4 B.2.3 0xA7xx) and the
# general "processing failure" (PS3.7 C.4.1). Every other failure is the peer's final word.
_TRANSIENT = {0x0110}

# Set by schedule_delivery / resend so a running outbox thread wakes at once.
_wakeup = threading.Event()


@dataclass(frozen=True, slots=True)
class ObjectOutcome:
    """What the peer said about one object; ``status`` None: never got an answer."""

    status: int | None
    error: str | None = None

    @property
    def sent(self) -> bool:
        # Success, or a warning (0x0001, 0xB0xx: stored with coercion, PS3.4 B.2.3).
        return self.status is not None and (
            self.status == 0 or self.status == 0x0001 or (self.status & 0xF000) == 0xB000
        )

    @property
    def retryable(self) -> bool:
        return (
            self.status is None or (self.status & 0xFF00) == 0xA700 or (self.status in _TRANSIENT)
        )


#: Sends ``paths`` to ``node``; one outcome per path, in order.
Sender = Callable[[Node, Sequence[Path], str], list[ObjectOutcome]]


def scu_sender(node: Node, paths: Sequence[Path], calling_ae: str) -> list[ObjectOutcome]:
    """C-STORE through :func:`dicom_node.scu.send_paths` (one association per call)."""
    assert node.host is not None and node.port is not None
    results = send_paths(node.host, node.port, node.ae_title, list(paths), calling_ae=calling_ae)
    return [ObjectOutcome(r.status, r.error_comment) for r in results]


def _destinations(ctx: AppContext, source_node_id: int | None) -> list[Node]:
    """The originating township node when it can receive, plus every active PACS."""
    chosen: dict[int, Node] = {}
    if source_node_id is not None:
        try:
            origin = get_node(ctx.db, source_node_id)
        except NotFoundError:
            origin = None
        if origin is not None and origin.can_receive:
            chosen[origin.id] = origin
    for node in list_nodes(ctx.db, NodeKind.PACS):
        if node.can_receive:
            chosen[node.id] = node
    return list(chosen.values())


def schedule_delivery(ctx: AppContext, study_uid: str) -> list[int]:
    """Build the signed revision's objects and queue one delivery per destination.

    Idempotent: calling it again for the same revision returns the same delivery ids.
    Raises ConflictError when the study is not signed.
    """
    result = build_results(ctx, study_uid)
    with ctx.db.begin() as conn:
        source_node_id = conn.execute(
            select(studies.c.source_node_id).where(studies.c.study_uid == study_uid)
        ).scalar_one()
    with ctx.db.begin() as conn:
        # An amendment supersedes: older revisions not yet delivered are not sent after it.
        conn.execute(
            update(deliveries)
            .where(
                and_(
                    deliveries.c.study_uid == study_uid,
                    deliveries.c.revision < result.revision,
                    deliveries.c.state == "pending",
                )
            )
            .values(state="failed", last_error=f"superseded by revision {result.revision}")
        )
    ids: list[int] = []
    for node in _destinations(ctx, source_node_id):
        objects = result.of(*node.send)
        if not objects:
            logger.info(
                "node wants none of the built families",
                extra={"study_uid": study_uid, "node_id": node.id, "send": ",".join(node.send)},
            )
            continue
        try:
            with ctx.db.begin() as conn:
                res = conn.execute(
                    deliveries.insert().values(
                        study_uid=study_uid,
                        node_id=node.id,
                        revision=result.revision,
                        objects=[o.delivery_entry() for o in objects],
                        state="pending",
                        attempts=0,
                        next_attempt_at=utcnow(),
                    )
                )
                pk = res.inserted_primary_key
                assert pk is not None
                ids.append(int(pk[0]))
        except IntegrityError:
            with ctx.db.begin() as conn:
                ids.append(
                    int(
                        conn.execute(
                            select(deliveries.c.id).where(
                                and_(
                                    deliveries.c.study_uid == study_uid,
                                    deliveries.c.node_id == node.id,
                                    deliveries.c.revision == result.revision,
                                )
                            )
                        ).scalar_one()
                    )
                )
    logger.info(
        "deliveries scheduled",
        extra={"study_uid": study_uid, "revision": result.revision, "deliveries": len(ids)},
    )
    _wakeup.set()
    return ids


def resend(ctx: AppContext, delivery_id: int) -> None:
    """Queue every object of a delivery again, now (the peer de-duplicates by UID)."""
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(deliveries.c.objects).where(deliveries.c.id == delivery_id)
        ).first()
        if row is None:
            raise NotFoundError(f"delivery {delivery_id} not found")
        objects = [{**o, "status": "pending", "dimse_status": None, "error": None} for o in row[0]]
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(
                state="pending", attempts=0, objects=objects, next_attempt_at=utcnow(), sent_at=None
            )
        )
    logger.info("delivery re-queued", extra={"delivery_id": delivery_id})
    _wakeup.set()


def backoff_s(base_s: float, max_s: float, attempts: int) -> float:
    """Exponential backoff: base, 2*base, 4*base ... capped at max."""
    return float(min(max_s, base_s * (2 ** max(0, attempts - 1))))


class Outbox:
    """Sends due deliveries; ``tick`` once (tests) or ``start`` a background thread."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        sender: Sender | None = None,
        poll_s: float = 1.0,
        parallel: int = 4,
    ) -> None:
        self.ctx = ctx
        self.sender = sender or scu_sender
        self.poll_s = poll_s
        self.parallel = parallel
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set once the background thread has warmed up the builders and runs.
        self.ready = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        _wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            warm_up()
        except Exception:  # a cold first build is slower, not broken
            logger.exception("builder warm-up failed")
        self.ready.set()
        while not self._stop.is_set():
            # Cleared before the tick, so a schedule arriving during it is not lost.
            _wakeup.clear()
            try:
                while self.tick():
                    pass
            except Exception:  # the loop must outlive a bad row or a database hiccup
                logger.exception("outbox tick failed")
            _wakeup.wait(self.poll_s)

    def tick(self) -> int:
        """Queue due alerts, attempt every delivery due now; return how many attempted."""
        schedule_due_alerts(self.ctx)
        now = utcnow()
        with self.ctx.db.begin() as conn:
            due = list(
                conn.execute(
                    select(deliveries.c.id, deliveries.c.next_attempt_at)
                    .where(
                        and_(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= now)
                    )
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(_BATCH)
                )
            )
        claimed = [d for d, due_at in due if self._claim(d, due_at)]
        if len(claimed) > 1 and self.parallel > 1:
            # Destinations are independent: a slow township link must not hold up PACS.
            with ThreadPoolExecutor(min(len(claimed), self.parallel), "outbox-send") as pool:
                list(pool.map(self._attempt, claimed))
        else:
            for delivery_id in claimed:
                self._attempt(delivery_id)
        return len(claimed)

    def _attempt(self, delivery_id: int) -> None:
        try:
            self._deliver(delivery_id)
        except Exception as exc:  # one broken row must not stall the others
            logger.exception("delivery attempt crashed", extra={"delivery_id": delivery_id})
            self._postpone(delivery_id, f"{type(exc).__name__}: {exc}"[:500])

    def _postpone(self, delivery_id: int, error: str) -> None:
        settings = self.ctx.settings
        with self.ctx.db.begin() as conn:
            attempts = (
                int(
                    conn.execute(
                        select(deliveries.c.attempts).where(deliveries.c.id == delivery_id)
                    ).scalar_one()
                )
                + 1
            )
            delay = backoff_s(settings.export_retry_base_s, settings.export_retry_max_s, attempts)
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(
                    attempts=attempts,
                    last_error=error,
                    state="pending" if attempts < MAX_ATTEMPTS else "failed",
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                )
            )

    def _claim(self, delivery_id: int, due_at: Any) -> bool:
        # Moving next_attempt_at forward is the claim: of two outboxes racing for the
        # row only one update matches the old value.
        with self.ctx.db.begin() as conn:
            res = conn.execute(
                update(deliveries)
                .where(
                    and_(
                        deliveries.c.id == delivery_id,
                        deliveries.c.state == "pending",
                        deliveries.c.next_attempt_at == due_at,
                    )
                )
                .values(next_attempt_at=utcnow() + timedelta(seconds=CLAIM_LEASE_S))
            )
        return bool(res.rowcount == 1)

    def _deliver(self, delivery_id: int) -> None:
        settings = self.ctx.settings
        with self.ctx.db.begin() as conn:
            row = (
                conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))
                .mappings()
                .one()
            )
        objects = [dict(o) for o in row["objects"]]
        node = get_node(self.ctx.db, row["node_id"])
        todo = [o for o in objects if o["status"] != "sent"]
        started = time.perf_counter()
        if not node.can_receive:
            for o in todo:
                o.update(status="refused", error="node cannot receive (no host/port, or inactive)")
        else:
            for o in todo:
                if not (settings.results_dir / o["path"]).is_file():
                    o.update(
                        status="refused",
                        dimse_status=None,
                        error="result file missing; sign again to rebuild",
                    )
            todo = [o for o in todo if o["status"] != "refused"]
        if node.can_receive and todo:
            paths = [settings.results_dir / o["path"] for o in todo]
            try:
                outcomes = self.sender(node, paths, settings.ae_title)
            except Exception as exc:  # a peer that is down or breaks the association
                outcomes = [ObjectOutcome(None, f"{type(exc).__name__}: {exc}")] * len(todo)
            if len(outcomes) != len(todo):
                outcomes = [*outcomes, *[ObjectOutcome(None, "no answer")] * len(todo)]
            for o, out in zip(todo, outcomes, strict=False):
                o["dimse_status"] = out.status
                o["error"] = out.error
                o["status"] = "sent" if out.sent else "pending" if out.retryable else "refused"
        problems = [
            o["error"]
            or (
                f"status 0x{o['dimse_status']:04X}" if o["dimse_status"] is not None else "not sent"
            )
            for o in objects
            if o["status"] != "sent"
        ]
        error = (
            f"{len(problems)} of {len(objects)} not stored: {problems[0]}"[:1000]
            if problems
            else None
        )
        attempts = int(row["attempts"]) + 1
        if all(o["status"] == "sent" for o in objects):
            state = "sent"
        elif any(o["status"] == "pending" for o in objects) and attempts < MAX_ATTEMPTS:
            state = "pending"
        else:
            state = "failed"
        now = utcnow()
        delay = backoff_s(settings.export_retry_base_s, settings.export_retry_max_s, attempts)
        with self.ctx.db.begin() as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(
                    objects=objects,
                    state=state,
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=now + timedelta(seconds=delay) if state == "pending" else now,
                    sent_at=now if state == "sent" else None,
                )
            )
            if state == "sent":
                self._maybe_delivered(conn, row["study_uid"], int(row["revision"]))
        logger.info(
            "delivery attempted",
            extra={
                "delivery_id": delivery_id,
                "study_uid": row["study_uid"],
                "node": node.ae_title,
                "state": state,
                "attempt": attempts,
                "objects": len(todo),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

    @staticmethod
    def _maybe_delivered(conn: Any, study_uid: str, revision: int) -> None:
        # Lock the study row first: two destinations finishing at once (parallel sends)
        # then see each other's committed state, so one of them marks it delivered.
        conn.execute(
            select(studies.c.status).where(studies.c.study_uid == study_uid).with_for_update()
        )
        states = {
            r[0]
            for r in conn.execute(
                select(deliveries.c.state).where(
                    and_(deliveries.c.study_uid == study_uid, deliveries.c.revision == revision)
                )
            )
        }
        if states == {"sent"}:
            # Only a study still signed at this revision becomes delivered; one reopened
            # for amendment keeps its review status.
            conn.execute(
                update(studies)
                .where(
                    and_(
                        studies.c.study_uid == study_uid,
                        studies.c.revision == revision,
                        studies.c.status == StudyStatus.SIGNED.value,
                    )
                )
                .values(status=StudyStatus.DELIVERED.value)
            )
