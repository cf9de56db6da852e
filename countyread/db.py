"""Database schema (SQLAlchemy Core) and engine set-up for SQLite and PostgreSQL.

One schema serves every package. PHI columns (patient name, ID, birth date) live only in
``studies``; logs never print them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Connection

logger = logging.getLogger(__name__)

metadata = MetaData()


def utcnow() -> datetime:
    """Timezone-aware now; stored as UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware.

    SQLite has no timezone type and returns naive datetimes; normalising here means the
    rest of the code can compare timestamps from either database without surprises.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_TS = UTCDateTime()

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("ae_title", String(16), nullable=False, unique=True),
    Column("host", String(255)),
    Column("port", Integer),
    Column("kind", String(16), nullable=False, default="township"),
    Column("send", JSON, nullable=False, default=list),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", _TS, nullable=False, default=utcnow),
)

studies = Table(
    "studies",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("patient_name", String(256)),
    Column("patient_id", String(64)),
    Column("patient_birth_date", String(8)),
    Column("patient_sex", String(16)),
    Column("accession_number", String(64)),
    Column("study_date", String(8)),
    Column("study_time", String(16)),
    Column("study_description", String(256)),
    Column("modalities", String(64), nullable=False, default=""),
    Column("source_ae", String(16)),
    Column("source_node_id", Integer, ForeignKey("nodes.id")),
    Column("first_received_at", _TS, nullable=False, default=utcnow),
    Column("last_received_at", _TS, nullable=False, default=utcnow),
    Column("status", String(32), nullable=False, default="received"),
    Column("reason", Text),
    Column("urgency", String(16)),
    Column("deadline_at", _TS),
    Column("claimed_by", String(64)),
    Column("claim_expires_at", _TS),
    Column("revision", Integer, nullable=False, default=0),
    Index("ix_studies_status_urgency", "status", "urgency", "deadline_at"),
    Index("ix_studies_received", "first_received_at"),
    Index("ix_studies_node", "source_node_id"),
    # Worklist pages (api/worklist.py) read each (status, urgency) range in deadline order;
    # with study_uid in the index that read never touches the table, and the township
    # variant serves technologists and the township filter the same way.
    Index("ix_studies_worklist", "status", "urgency", "deadline_at", "study_uid"),
    Index("ix_studies_node_worklist", "source_node_id", "status", "urgency", "deadline_at"),
)

series = Table(
    "series",
    metadata,
    Column("series_uid", String(64), primary_key=True),
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), nullable=False),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("series_description", String(256)),
    Column("body_part", String(64)),
    Column("frame_of_reference_uid", String(64)),
    Column("instance_count", Integer, nullable=False, default=0),
    Column("expected_count", Integer),
    Column("first_received_at", _TS, nullable=False, default=utcnow),
    Column("last_received_at", _TS, nullable=False, default=utcnow),
    Column("state", String(16), nullable=False, default="receiving"),
    Column("stable_at", _TS),
    Column("generation", Integer, nullable=False, default=0),
    Index("ix_series_study", "study_uid"),
    Index("ix_series_state", "state", "last_received_at"),
)

instances = Table(
    "instances",
    metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("series_uid", String(64), ForeignKey("series.series_uid"), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("path", String(512), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("source_ae", String(16)),
    Column("received_at", _TS, nullable=False, default=utcnow),
    Index("ix_instances_series", "series_uid"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(512)),
    Column("reason", Text, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("source_ae", String(16)),
    Column("sop_instance_uid", String(64)),
    Column("received_at", _TS, nullable=False, default=utcnow),
)

mpps = Table(
    "mpps",
    metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("study_uid", String(64)),
    Column("status", String(32), nullable=False),
    Column("series", JSON, nullable=False, default=dict),
    Column("updated_at", _TS, nullable=False, default=utcnow),
)

#: Storage Commitment requests (dicom_node/commitment.py), kept until reported.
commitments = Table(
    "commitments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transaction_uid", String(64), nullable=False),
    Column("calling_ae", String(16), nullable=False),
    Column("node_id", Integer, ForeignKey("nodes.id")),
    Column("refs", JSON, nullable=False, default=list),
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("next_attempt_at", _TS, nullable=False, default=utcnow),
    Column("created_at", _TS, nullable=False, default=utcnow),
    UniqueConstraint("transaction_uid", "calling_ae"),
    Index("ix_commitments_due", "state", "next_attempt_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("dedupe_key", String(256), nullable=False, unique=True),
    Column("study_uid", String(64)),
    Column("series_uid", String(64)),
    Column("pipeline", String(32)),
    Column("payload", JSON, nullable=False, default=dict),
    Column("state", String(16), nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("message", Text),
    Column("worker", String(64)),
    Column("lease_until", _TS),
    Column("run_after", _TS, nullable=False, default=utcnow),
    Column("created_at", _TS, nullable=False, default=utcnow),
    Column("started_at", _TS),
    Column("finished_at", _TS),
    Index("ix_jobs_claim", "state", "run_after"),
    Index("ix_jobs_series", "series_uid"),
)

analyses = Table(
    "analyses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("pipeline", String(32), nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id")),
    Column("status", String(32), nullable=False),
    Column("reason", Text),
    Column("urgency", String(16)),
    Column("category", String(64)),  # e.g. "no significant stenosis" (CTA)
    Column("recommendation", Text),
    Column("models", JSON, nullable=False, default=list),
    Column("notes", JSON, nullable=False, default=list),
    Column("timings_ms", JSON, nullable=False, default=dict),
    Column("artifacts_dir", String(512)),
    Column("created_at", _TS, nullable=False, default=utcnow),
    Index("ix_analyses_study", "study_uid"),
)

findings = Table(
    "findings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), nullable=False),
    Column("analysis_id", Integer, ForeignKey("analyses.id")),
    Column("series_uid", String(64)),
    Column("sop_instance_uid", String(64)),
    Column("kind", String(32), nullable=False),
    Column("source", String(16), nullable=False, default="ai"),
    Column("probability", Float),
    Column("center_x", Float),
    Column("center_y", Float),
    Column("center_z", Float),
    Column("measurements", JSON, nullable=False, default=list),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("category", String(64)),  # e.g. "no significant stenosis" (CTA)
    Column("model", JSON),
    Column("key_image", String(512)),
    Column("verdict", String(16), nullable=False, default="pending"),
    Column("revision", Integer, nullable=False, default=0),
    Column("reviewed_by", String(64)),
    Column("reviewed_at", _TS),
    Column("comment", Text),
    Column("created_at", _TS, nullable=False, default=utcnow),
    Index("ix_findings_study", "study_uid"),
)

finding_revisions = Table(
    "finding_revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("finding_id", Integer, ForeignKey("findings.id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("snapshot", JSON, nullable=False),
    Column("comment", Text),
    Column("changed_by", String(64), nullable=False),
    Column("changed_at", _TS, nullable=False, default=utcnow),
    UniqueConstraint("finding_id", "revision"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(128)),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("node_id", Integer, ForeignKey("nodes.id")),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", _TS, nullable=False, default=utcnow),
)

reports = Table(
    "reports",
    metadata,
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), primary_key=True),
    Column("language", String(8), nullable=False, default="zh"),
    Column("findings_text", Text),
    Column("impression_text", Text),
    Column("findings_text_en", Text),
    Column("impression_text_en", Text),
    Column("revision", Integer, nullable=False, default=0),
    Column("signed_by", String(64)),
    Column("signed_at", _TS),
    Column("updated_by", String(64)),
    Column("updated_at", _TS, nullable=False, default=utcnow),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), nullable=False),
    Column("node_id", Integer, ForeignKey("nodes.id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("objects", JSON, nullable=False, default=list),
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("next_attempt_at", _TS, nullable=False, default=utcnow),
    Column("created_at", _TS, nullable=False, default=utcnow),
    Column("sent_at", _TS),
    UniqueConstraint("study_uid", "node_id", "revision"),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", _TS, nullable=False, default=utcnow),
    Column("username", String(64)),
    Column("action", String(32), nullable=False),
    Column("study_uid", String(64)),
    Column("detail", JSON, nullable=False, default=dict),
    Column("client", String(64)),
    Index("ix_audit_at", "at"),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while the SCP writes; synchronous=FULL makes a committed
    # index row survive power loss, which the C-STORE Success promise relies on.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets durability pragmas and a long busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    return engine


class Database:
    """Owns the engine; ``begin()`` yields a connection in one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def create_all(self) -> None:
        """Create missing tables and apply additive upgrades to existing ones."""
        from countyread.schema_upgrade import ensure_schema  # imports metadata from here

        ensure_schema(self.engine)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
