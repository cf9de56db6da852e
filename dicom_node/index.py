"""Study / series / instance index writes for ingest, on SQLite and PostgreSQL alike.

Upserts use ``INSERT ... ON CONFLICT DO NOTHING`` (both dialects) followed by updates in
the same transaction, so concurrent associations adding to one series never lose a
count. The first statement of each transaction is a write: on SQLite that takes the
write lock up front (busy_timeout waits for it) instead of failing on a read-to-write
upgrade; on PostgreSQL the series row is locked ``FOR UPDATE`` before it is judged.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from countyread.db import Database, instances, quarantine, series, studies
from countyread.domain import StudyStatus
from dicom_node import status as st
from dicom_node.header import InstanceHeader
from dicom_node.index_sqlite import Rows, SqliteRows

#: A late instance sends a study in these states back to "received" (issue 2);
#: a study a radiologist already holds (in_review, signed, delivered) keeps its status.
REOPENABLE = frozenset({
    StudyStatus.QUEUED.value, StudyStatus.ANALYZING.value, StudyStatus.READY.value,
    StudyStatus.NOT_ANALYZABLE.value, StudyStatus.FAILED.value,
})


@dataclass(frozen=True, slots=True)
class IndexResult:
    inserted: bool  # False: the SOP Instance UID was indexed already (a re-send)
    new_series: bool
    reopened: bool  # a stable series got a late instance


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An instance whose file is durable and which now needs its index rows."""

    header: InstanceHeader
    rel_path: str
    size: int
    source_ae: str | None
    node_id: int | None


@dataclass(frozen=True, slots=True)
class KnownInstance:
    path: str
    size_bytes: int


class InstanceIndex:
    """Reads and writes the rows one received instance touches.

    Statements are built once: constructing SQLAlchemy statements per instance cost more
    CPU than executing them (profiled: about half of the handler's CPU time).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        # SQLite has one writer anyway; queueing our threads on a lock is cheaper than
        # having them spin in busy_timeout.
        self._write_lock = threading.Lock() if db.is_sqlite else None
        # On a SQLite file the hot path talks to sqlite3 directly (index_sqlite.py): the
        # same rows, a fraction of the CPU per instance.
        self._sqlite = SqliteRows.for_engine(db.engine)
        dialect: Any = postgresql if db.engine.dialect.name == "postgresql" else sqlite

        def insert_ignore(table: Table) -> Any:
            # RETURNING tells "added" from "existed" on both dialects (rowcount after
            # ON CONFLICT DO NOTHING is not reliable through every driver).
            pk = next(iter(table.primary_key.columns))
            return dialect.insert(table).on_conflict_do_nothing().returning(pk)

        self._ins_study = insert_ignore(studies)
        self._ins_series = insert_ignore(series)
        self._ins_instance = insert_ignore(instances)
        self._sel_series = (
            select(series.c.study_uid, series.c.state)
            .where(series.c.series_uid == bindparam("b_uid")).with_for_update()
        )
        self._upd_series = update(series).where(
            series.c.series_uid == bindparam("b_uid")
        ).values(
            instance_count=series.c.instance_count + 1,
            last_received_at=bindparam("b_now"),
            # PS3.4 has no notion of "series complete"; a late instance simply starts a
            # new generation whose analysis supersedes the last one.
            generation=series.c.generation + case((series.c.state == "stable", 1), else_=0),
            state="receiving",
            stable_at=None,
        )
        self._sel_study = select(
            studies.c.modalities, studies.c.status, studies.c.reason
        ).where(studies.c.study_uid == bindparam("b_uid"))
        self._upd_study = update(studies).where(
            studies.c.study_uid == bindparam("b_uid")
        ).values(last_received_at=bindparam("b_now"), modalities=bindparam("b_mods"),
                 status=bindparam("b_status"), reason=bindparam("b_reason"))
        self._touch_study = update(studies).where(
            studies.c.study_uid == bindparam("b_uid")
        ).values(last_received_at=bindparam("b_now"))
        self._del_study = studies.delete().where(studies.c.study_uid == bindparam("b_uid"))
        self._sel_instance = select(instances.c.path, instances.c.size_bytes).where(
            instances.c.sop_instance_uid == bindparam("b_uid"))
        self._sel_owner = select(series.c.study_uid).where(
            series.c.series_uid == bindparam("b_uid"))

    def find_instance(self, sop_uid: str) -> KnownInstance | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(self._sel_instance, {"b_uid": sop_uid}).first()
        return KnownInstance(row[0], int(row[1])) if row else None

    def precheck(self, header: InstanceHeader) -> KnownInstance | None:
        """Before writing: the stored copy of a re-sent instance, or None for a new one.

        Raises DimseFailure when the series is indexed under another study (a Series
        Instance UID belongs to one study, PS3.3 C.7.3.1). One connection, two reads.
        """
        if self._sqlite is not None:
            known, owner = self._sqlite.precheck(header.sop_instance_uid, header.series_uid)
            if known is not None:
                return KnownInstance(*known)
        else:
            with self.db.engine.connect() as conn:
                row = conn.execute(self._sel_instance,
                                   {"b_uid": header.sop_instance_uid}).first()
                if row is not None:
                    return KnownInstance(row[0], int(row[1]))
                owner = conn.execute(self._sel_owner, {"b_uid": header.series_uid}).scalar()
        if owner is not None and owner != header.study_uid:
            raise st.DimseFailure(st.INCONSISTENT_STUDY, "series is indexed under another study")
        return None

    def add(
        self, header: InstanceHeader, rel_path: str, size: int, *, source_ae: str | None,
        node_id: int | None, now: datetime,
    ) -> IndexResult:
        """Index one instance in its own transaction (raises DimseFailure on conflict)."""
        (result,) = self.add_many([PendingRow(header, rel_path, size, source_ae, node_id)], now)
        if isinstance(result, st.DimseFailure):
            raise result
        return result

    def add_many(
        self, rows: list[PendingRow], now: datetime
    ) -> list[IndexResult | st.DimseFailure]:
        """Index several instances in one transaction (one commit, one log flush).

        A row that conflicts gets its DimseFailure in the result list and leaves no trace;
        the others still commit. A database error raises for the whole batch.
        """
        if self._write_lock is None:
            return self._add_many(rows, now)
        with self._write_lock:
            return self._add_many(rows, now)

    def _add_many(
        self, rows: list[PendingRow], now: datetime
    ) -> list[IndexResult | st.DimseFailure]:
        if self._sqlite is not None:
            return self._sqlite.transaction(lambda ops, at: [_add_one(ops, r, at) for r in rows],
                                            now)
        with self.db.begin() as conn:
            ops = _AlchemyRows(self, conn)
            return [_add_one(ops, r, now) for r in rows]

    def remove_instances(self, sop_uids: list[str]) -> int:
        """Take back rows of instances that were never acknowledged (their file did not
        become durable); the series counts follow. Returns the number of rows removed."""
        if not sop_uids:
            return 0
        removed = 0
        with self._writing(), self.db.begin() as conn:
            for uid in sop_uids:
                series_uid = conn.execute(
                    instances.delete().where(instances.c.sop_instance_uid == uid)
                    .returning(instances.c.series_uid)).scalar()
                if series_uid is None:
                    continue
                removed += 1
                conn.execute(update(series).where(series.c.series_uid == series_uid)
                             .values(instance_count=series.c.instance_count - 1))
        return removed

    def replace_path(self, sop_uid: str, rel_path: str, size: int) -> None:
        """Point an indexed instance at a newly stored copy (its old file was missing)."""
        with self._writing(), self.db.begin() as conn:
            conn.execute(update(instances).where(instances.c.sop_instance_uid == sop_uid)
                         .values(path=rel_path, size_bytes=size))

    def _writing(self) -> contextlib.AbstractContextManager[object]:
        return self._write_lock if self._write_lock is not None else contextlib.nullcontext()

    def add_quarantine(
        self, *, rel_path: str | None, reason: str, status_code: int, source_ae: str | None,
        sop_instance_uid: str | None, now: datetime,
    ) -> None:
        sop = sop_instance_uid if sop_instance_uid and len(sop_instance_uid) <= 64 else None
        with self.db.begin() as conn:
            conn.execute(quarantine.insert().values(
                path=rel_path, reason=reason, status_code=status_code,
                source_ae=(source_ae or "")[:16] or None, sop_instance_uid=sop, received_at=now,
            ))



class _AlchemyRows:
    """:class:`index_sqlite.Rows` on a SQLAlchemy connection (PostgreSQL, SQLite in memory)."""

    def __init__(self, index: InstanceIndex, conn: Connection) -> None:
        self.ix = index
        self.conn = conn

    def insert_study(self, values: dict[str, Any]) -> bool:
        return self.conn.execute(self.ix._ins_study, values).first() is not None

    def insert_series(self, values: dict[str, Any]) -> bool:
        return self.conn.execute(self.ix._ins_series, values).first() is not None

    def insert_instance(self, values: dict[str, Any]) -> bool:
        return self.conn.execute(self.ix._ins_instance, values).first() is not None

    def series_owner(self, series_uid: str) -> tuple[str, str]:
        row = self.conn.execute(self.ix._sel_series, {"b_uid": series_uid}).one()
        return str(row.study_uid), str(row.state)

    def delete_study(self, study_uid: str) -> None:
        self.conn.execute(self.ix._del_study, {"b_uid": study_uid})

    def bump_series(self, series_uid: str, now: Any) -> None:
        self.conn.execute(self.ix._upd_series, {"b_uid": series_uid, "b_now": now})

    def touch_study(self, study_uid: str, now: Any) -> None:
        self.conn.execute(self.ix._touch_study, {"b_uid": study_uid, "b_now": now})

    def study_state(self, study_uid: str) -> tuple[str | None, str, str | None]:
        row = self.conn.execute(self.ix._sel_study, {"b_uid": study_uid}).one()
        return row.modalities, row.status, row.reason

    def update_study(self, study_uid: str, now: Any, mods: str, status: str,
                     reason: str | None) -> None:
        self.conn.execute(self.ix._upd_study, {"b_uid": study_uid, "b_now": now,
                                               "b_mods": mods, "b_status": status,
                                               "b_reason": reason})


def _add_one(ops: Rows, row: PendingRow, now: Any) -> IndexResult | st.DimseFailure:
    """One instance's rows in the open transaction; ``now`` as the backend binds it."""
    h, s = row.header, row.header.study
    new_study = ops.insert_study({
        "study_uid": h.study_uid, "patient_name": s.patient_name,
        "patient_id": s.patient_id, "patient_birth_date": s.patient_birth_date,
        "patient_sex": s.patient_sex, "accession_number": s.accession_number,
        "study_date": s.study_date, "study_time": s.study_time,
        "study_description": s.study_description, "modalities": h.modality or "",
        "source_ae": row.source_ae, "source_node_id": row.node_id,
        "first_received_at": now, "last_received_at": now,
        "status": StudyStatus.RECEIVED.value, "revision": 0,
    })
    new_series = ops.insert_series({
        "series_uid": h.series_uid, "study_uid": h.study_uid, "modality": h.modality,
        "series_number": h.series_number, "series_description": h.series_description,
        "body_part": h.body_part, "frame_of_reference_uid": h.frame_of_reference_uid,
        "instance_count": 0, "first_received_at": now, "last_received_at": now,
        "state": "receiving", "generation": 0,
    })
    owner, state = ops.series_owner(h.series_uid)
    if owner != h.study_uid:
        if new_study:  # undo only what this row added; the batch goes on
            ops.delete_study(h.study_uid)
        return st.DimseFailure(st.INCONSISTENT_STUDY, "series is indexed under another study")
    inserted = ops.insert_instance({
        "sop_instance_uid": h.sop_instance_uid, "series_uid": h.series_uid,
        "study_uid": h.study_uid, "sop_class_uid": h.sop_class_uid,
        "transfer_syntax_uid": h.transfer_syntax_uid,
        "instance_number": h.instance_number, "path": row.rel_path,
        "size_bytes": row.size, "source_ae": row.source_ae, "received_at": now,
    })
    if not inserted:
        return IndexResult(inserted=False, new_series=False, reopened=False)
    reopened = state == "stable"
    ops.bump_series(h.series_uid, now)
    if not (new_series or reopened):
        # The common case, a further slice of a known series: only the time moves.
        ops.touch_study(h.study_uid, now)
        return IndexResult(inserted=True, new_series=False, reopened=False)
    modalities, status, reason = ops.study_state(h.study_uid)
    mods = [m for m in (modalities or "").split("\\") if m]
    if h.modality and h.modality not in mods:
        mods.append(h.modality)
    if status in REOPENABLE:
        status, reason = StudyStatus.RECEIVED.value, None
    ops.update_study(h.study_uid, now, "\\".join(mods), status, reason)
    return IndexResult(inserted=True, new_series=new_series, reopened=reopened)
