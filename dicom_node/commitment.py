"""Storage Commitment Push Model SCP (PS3.4 Annex J).

Many township scanners delete their local copy only after the archive has *committed*
to keep the images: they send an N-ACTION (Request Storage Commitment) listing the SOP
instances, and wait for an N-EVENT-REPORT saying which ones are safe. Our C-STORE
Success already means "on disk and indexed" (DESIGN.md section 4), so the answer is a
look-up: an instance is committed when its index row exists, its SOP class matches and
its file is in the store.

The request is written to the ``commitments`` table before the N-ACTION is answered,
so a restart never loses one. The report goes out from :class:`CommitmentReporter`, on
a new association to the requesting node (PS3.4 J.3.3: the SCP may report on a
different association; most scanners release the first one right after the N-ACTION),
with SCP/SCU role selection because here the archive is the association requestor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError

from countyread.context import AppContext
from countyread.db import commitments, instances, utcnow
from countyread.nodes import Node, find_by_ae
from countyread.uids import is_valid_uid
from dicom_node import status as st

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
#: The well-known SOP instance of the Push Model (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_ACTION_TYPE = 1
#: N-EVENT-REPORT Event Type IDs (PS3.4 J.3.3): all committed / some failed.
EVENT_ALL_SUCCESS = 1
EVENT_SOME_FAILED = 2
#: Failure Reason values (PS3.4 J.3.3.1.1).
FAILURE_NO_SUCH_OBJECT = 0x0112
FAILURE_CLASS_INSTANCE_CONFLICT = 0x0119
FAILURE_PROCESSING = 0x0110
#: One request may name a whole study; more than this is refused as unreasonable.
MAX_REFERENCES = 20000
MAX_ATTEMPTS = 20
RETRY_BASE_S = 5.0
RETRY_MAX_S = 600.0

#: Sends one report: (node, event type, data set) -> the peer's status, raises on failure.
ReportSender = Callable[[Node, int, Dataset, str], int]


@dataclass(frozen=True, slots=True)
class Verdict:
    committed: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str, int], ...]


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def parse_request(ds: Dataset) -> tuple[str, list[tuple[str, str]]]:
    """(Transaction UID, [(SOP class, SOP instance)]); ValueError with the reason."""
    transaction = str(ds.get("TransactionUID", "") or "").strip()
    if not is_valid_uid(transaction):
        raise ValueError("Transaction UID missing or invalid")
    refs = []
    for item in ds.get("ReferencedSOPSequence") or []:
        cls = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        inst = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        refs.append((cls, inst))
    if not refs:
        raise ValueError("Referenced SOP Sequence is empty")
    if len(refs) > MAX_REFERENCES:
        raise ValueError(f"more than {MAX_REFERENCES} references in one request")
    return transaction, refs


class CommitmentScp:
    """Answers N-ACTION requests; the same decisions serve both protocol engines."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def on_action(self, calling_ae: str, node_id: int | None, action_type: int | None,
                  info: Dataset | None) -> tuple[int | Dataset, Dataset | None]:
        """Status (and no reply data set) for one N-ACTION; never raises."""
        try:
            if action_type != REQUEST_ACTION_TYPE:
                return _status(st.NO_SUCH_ACTION_TYPE, "action type must be 1"), None
            transaction, refs = parse_request(info if info is not None else Dataset())
        except ValueError as exc:
            return _status(st.INVALID_ARGUMENT_VALUE, str(exc)), None
        except Exception:
            logger.exception("storage commitment request unreadable")
            return _status(st.PROCESSING_FAILURE, "request unreadable"), None
        try:
            with self.ctx.db.begin() as conn:
                conn.execute(commitments.insert().values(
                    transaction_uid=transaction, calling_ae=calling_ae[:16], node_id=node_id,
                    refs=[list(r) for r in refs], state="pending", attempts=0,
                    next_attempt_at=utcnow(), created_at=utcnow()))
        except IntegrityError:
            # The scanner asked again (e.g. it never got our report): report again.
            with self.ctx.db.begin() as conn:
                conn.execute(update(commitments).where(and_(
                    commitments.c.transaction_uid == transaction,
                    commitments.c.calling_ae == calling_ae[:16],
                )).values(refs=[list(r) for r in refs], state="pending", attempts=0,
                          next_attempt_at=utcnow(), last_error=None))
        except Exception:
            logger.exception("storage commitment request not recorded")
            return _status(st.PROCESSING_FAILURE, "request could not be recorded"), None
        logger.info("storage commitment requested", extra={
            "transaction_uid": transaction, "calling_ae": calling_ae[:16],
            "references": len(refs)})
        wake.set()
        return st.SUCCESS, None


def evaluate(ctx: AppContext, refs: list[tuple[str, str]]) -> Verdict:
    """Which referenced instances we hold (indexed, right class, file present)."""
    valid = [inst for _, inst in refs if is_valid_uid(inst)]
    held: dict[str, tuple[str, str]] = {}
    with ctx.db.begin() as conn:
        for start in range(0, len(valid), 500):
            chunk = valid[start:start + 500]
            for sop, cls, path in conn.execute(
                select(instances.c.sop_instance_uid, instances.c.sop_class_uid,
                       instances.c.path).where(instances.c.sop_instance_uid.in_(chunk))):
                held[str(sop)] = (str(cls), str(path))
    committed, failed = [], []
    for cls, inst in refs:
        row = held.get(inst)
        if row is None or not ctx.store.absolute(row[1]).is_file():
            failed.append((cls, inst, FAILURE_NO_SUCH_OBJECT))
        elif row[0] != cls:
            failed.append((cls, inst, FAILURE_CLASS_INSTANCE_CONFLICT))
        else:
            committed.append((cls, inst))
    return Verdict(tuple(committed), tuple(failed))


def report_dataset(transaction_uid: str, verdict: Verdict) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of the N-EVENT-REPORT (PS3.4 J.3.3)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if verdict.committed:
        items = []
        for cls, inst in verdict.committed:
            item = Dataset()
            item.ReferencedSOPClassUID = cls
            item.ReferencedSOPInstanceUID = inst
            items.append(item)
        ds.ReferencedSOPSequence = items
    if verdict.failed:
        items = []
        for cls, inst, reason in verdict.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = cls
            item.ReferencedSOPInstanceUID = inst
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    return (EVENT_SOME_FAILED if verdict.failed else EVENT_ALL_SUCCESS), ds


def scu_report_sender(node: Node, event_type: int, ds: Dataset, calling_ae: str) -> int:
    """Send the report on a new association, offering to act as the SCP (role selection)."""
    from pynetdicom import AE, build_role

    assert node.host is not None and node.port is not None
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(STORAGE_COMMITMENT_SOP_CLASS)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    role = build_role(STORAGE_COMMITMENT_SOP_CLASS, scp_role=True)
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=[role])
    if not assoc.is_established:
        raise ConnectionError("association to the requesting node failed")
    try:
        rsp, _ = assoc.send_n_event_report(ds, event_type, STORAGE_COMMITMENT_SOP_CLASS,
                                           STORAGE_COMMITMENT_INSTANCE)
        if "Status" not in rsp:
            raise ConnectionError("no N-EVENT-REPORT response")
        return int(rsp.Status)
    finally:
        assoc.release()


#: Set when a request arrives so a running reporter sends at once.
wake = threading.Event()


class CommitmentReporter:
    """Sends due reports; ``tick`` once (tests) or ``start`` a background thread."""

    def __init__(self, ctx: AppContext, sender: ReportSender | None = None,
                 poll_s: float = 1.0) -> None:
        self.ctx = ctx
        self.sender = sender or scu_report_sender
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="commitment", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            wake.clear()
            try:
                while self.tick():
                    pass
            except Exception:  # the loop outlives a database hiccup
                logger.exception("commitment reporter tick failed")
            wake.wait(self.poll_s)

    def tick(self) -> int:
        """Send every report that is due; returns how many were attempted."""
        now = utcnow()
        with self.ctx.db.begin() as conn:
            due = list(conn.execute(
                select(commitments).where(and_(commitments.c.state == "pending",
                                               commitments.c.next_attempt_at <= now))
                .order_by(commitments.c.next_attempt_at).limit(8)).mappings())
        for row in due:
            self._attempt(row)
        return len(due)

    def _attempt(self, row: Any) -> None:
        attempts = int(row["attempts"]) + 1
        error: str | None = None
        state = "pending"
        try:
            node = find_by_ae(self.ctx.db, row["calling_ae"])
            if node is None or not node.can_receive:
                error, state = "requesting node unknown or has no host/port", "failed"
            else:
                verdict = evaluate(self.ctx, [(str(c), str(i)) for c, i in row["refs"]])
                event_type, ds = report_dataset(row["transaction_uid"], verdict)
                status = self.sender(node, event_type, ds, self.ctx.settings.ae_title)
                if status == st.SUCCESS:
                    state = "sent"
                    logger.info("storage commitment reported", extra={
                        "transaction_uid": row["transaction_uid"],
                        "committed": len(verdict.committed), "failed": len(verdict.failed)})
                else:
                    error = f"peer answered 0x{status:04X}"
        except Exception as exc:  # peer down, association refused: retry later
            error = f"{type(exc).__name__}: {exc}"[:500]
        if state == "pending" and attempts >= MAX_ATTEMPTS:
            state = "failed"
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempts - 1))
        with self.ctx.db.begin() as conn:
            conn.execute(update(commitments).where(commitments.c.id == row["id"]).values(
                state=state, attempts=attempts, last_error=error,
                next_attempt_at=utcnow() + timedelta(seconds=delay)))
        if error:
            logger.warning("storage commitment report not delivered", extra={
                "transaction_uid": row["transaction_uid"], "error": error, "state": state})
