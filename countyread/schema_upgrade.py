"""Bring an existing database up to the current schema, with additive changes only.

``metadata.create_all`` makes missing tables but never touches a table that exists, so a
hospital that upgrades CountyRead keeps yesterday's columns: a PostgreSQL database made
before ``findings.category`` was widened still holds VARCHAR(16) there and rejects a CTA
category such as "no significant stenosis" on insert. At start-up this module compares
the live tables with :data:`countyread.db.metadata` and applies the changes that cannot
lose data:

- a missing column is added (nullable, or NOT NULL with its scalar default filled in);
- a VARCHAR shorter than the schema's is widened (PostgreSQL; SQLite ignores lengths);
- a missing index is created.

Anything else (a column that became NOT NULL without a default, a type that changed
kind) is refused with :class:`~countyread.errors.ConfigurationError` naming the column,
because guessing there could corrupt a hospital's records. On PostgreSQL the whole check
runs in one transaction under an advisory lock, so the API, the DICOM node and workers
starting together do not race each other's ALTERs (PostgreSQL DDL is transactional).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, Engine, Index, MetaData, String, inspect, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.schema import CreateIndex

from countyread.db import metadata
from countyread.errors import ConfigurationError

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every CountyRead process.
_PG_LOCK_KEY = 0x436F_5265_6164  # "CoRead"


@dataclass(frozen=True, slots=True)
class SchemaChange:
    table: str
    column: str
    action: str  # "add column" | "widen" | "add index"
    detail: str

    def describe(self) -> str:
        return f"{self.table}.{self.column}: {self.action} ({self.detail})"


def ensure_schema(engine: Engine) -> list[SchemaChange]:
    """Create missing tables, then apply the additive upgrades; returns what changed."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        metadata.create_all(conn)
        changes = upgrade(conn)
    for change in changes:
        logger.info("schema upgraded", extra={"change": change.describe()})
    return changes


def upgrade(conn: Connection, meta: MetaData = metadata) -> list[SchemaChange]:
    """Apply the additive changes on ``conn`` (inside the caller's transaction)."""
    dialect = conn.dialect
    insp = inspect(conn)
    existing_tables = set(insp.get_table_names())
    changes: list[SchemaChange] = []
    for table in meta.sorted_tables:
        if table.name not in existing_tables:
            continue
        live = {c["name"]: c for c in insp.get_columns(table.name)}
        for column in table.columns:
            have = live.get(column.name)
            if have is None:
                changes.append(_add_column(conn, dialect, table.name, column))
            else:
                change = _widen(conn, dialect, table.name, column, have)
                if change is not None:
                    changes.append(change)
        live_indexes = {ix["name"] for ix in insp.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            if index.name not in live_indexes:
                changes.append(_add_index(conn, table.name, index))
    return changes


def _add_column(
    conn: Connection, dialect: Dialect, table: str, column: Column[Any]
) -> SchemaChange:
    ddl_type = column.type.compile(dialect=dialect)
    quote = dialect.identifier_preparer.quote
    default = _scalar_default(column)
    if not column.nullable and default is None:
        raise ConfigurationError(
            f"database schema is older than this CountyRead: {table}.{column.name} is "
            "missing and has no default to fill existing rows; upgrade it by hand "
            "(see README, 'Upgrading')"
        )
    clause = f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column.name)} {ddl_type}"
    if default is not None:
        # A literal in DDL (bind parameters are not allowed there): JSON defaults as their
        # text, other scalars through the dialect's own literal processor.
        if isinstance(column.type, JSON):
            rendered = "'" + str(default) + "'"
        else:
            literal = column.type.literal_processor(dialect)
            rendered = literal(default) if literal is not None else repr(default)
        clause += f" DEFAULT {rendered}"
        if not column.nullable:
            clause += " NOT NULL"
    conn.execute(text(clause))
    return SchemaChange(table, column.name, "add column", ddl_type)


def _widen(
    conn: Connection, dialect: Dialect, table: str, column: Column[Any], have: Any
) -> SchemaChange | None:
    want = column.type
    live = have["type"]
    if not isinstance(want, String) or want.length is None:
        return None
    live_len = getattr(live, "length", None)
    if not isinstance(live, String):
        raise ConfigurationError(
            f"database schema mismatch: {table}.{column.name} is {live}, this CountyRead "
            f"expects {want.compile(dialect=dialect)}; upgrade it by hand"
        )
    if live_len is None or live_len >= want.length or dialect.name == "sqlite":
        # SQLite stores any length in a VARCHAR; nothing to do there.
        return None
    quote = dialect.identifier_preparer.quote
    ddl_type = want.compile(dialect=dialect)
    conn.execute(
        text(f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column.name)} TYPE {ddl_type}")
    )
    return SchemaChange(table, column.name, "widen", f"{live_len} -> {want.length}")


def _add_index(conn: Connection, table: str, index: Index) -> SchemaChange:
    conn.execute(CreateIndex(index))
    cols = ", ".join(c.name for c in index.columns)
    return SchemaChange(table, cols, "add index", str(index.name))


def _scalar_default(column: Column[Any]) -> bool | int | float | str | None:
    default = column.default
    if default is None:
        return None
    value = getattr(default, "arg", None)
    if isinstance(column.type, JSON):
        # The schema's JSON defaults are the empty-container factories ``list`` / ``dict``
        # (SQLAlchemy wraps a callable default, so compare what the wrapper calls).
        made = _call_default(value)
        return {"[]": "[]", "{}": "{}"}.get(repr(made) if made is not None else "")
    if not getattr(default, "is_scalar", False):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return None


def _call_default(value: Any) -> Any:
    if not callable(value):
        return value
    try:
        return value(None)  # SQLAlchemy's wrapper takes the execution context
    except TypeError:
        return value()
