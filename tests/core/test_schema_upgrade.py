"""An older database is brought up to the current schema at start-up, rows kept.

Each test builds yesterday's database by taking columns, an index or a VARCHAR length
away from today's schema with plain DDL, stores a row, then opens it the way every
CountyRead process does (``Database.create_all``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, inspect, select, text

from countyread.db import Database, findings, studies
from countyread.errors import ConfigurationError
from countyread.schema_upgrade import upgrade

CTA_CATEGORY = "no significant stenosis"  # 23 characters: did not fit the old VARCHAR(16)


def _seed(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(insert(studies).values(study_uid="1.2.3", patient_id="P"))
        conn.execute(
            insert(findings).values(study_uid="1.2.3", kind="lung_nodule", category="4A")
        )


def _age(db: Database) -> None:
    """Undo three later schema changes: a column, an index, and (PostgreSQL) a width."""
    with db.begin() as conn:
        conn.execute(text("DROP INDEX ix_findings_study"))
        conn.execute(text("ALTER TABLE findings DROP COLUMN reviewed_by"))
        conn.execute(text("ALTER TABLE findings DROP COLUMN revision"))
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE findings ALTER COLUMN category TYPE VARCHAR(16)"))


def _check_upgraded(db: Database) -> None:
    insp = inspect(db.engine)
    cols = {c["name"]: c for c in insp.get_columns("findings")}
    assert "reviewed_by" in cols and "revision" in cols
    assert "ix_findings_study" in {ix["name"] for ix in insp.get_indexes("findings")}
    with db.begin() as conn:
        row = conn.execute(select(findings)).one()
        # the old row survives; the NOT NULL column got its default filled in
        assert (row.study_uid, row.category, row.revision, row.reviewed_by) == (
            "1.2.3", "4A", 0, None)
        conn.execute(
            insert(findings).values(study_uid="1.2.3", kind="vessel_stenosis",
                                    category=CTA_CATEGORY)
        )
        cats = conn.execute(select(findings.c.category).order_by(findings.c.id)).scalars()
        assert list(cats) == ["4A", CTA_CATEGORY]


def test_sqlite_database_from_an_older_release_is_upgraded(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    db.create_all()
    _seed(db)
    _age(db)
    db.dispose()

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    db.create_all()
    _check_upgraded(db)
    with db.begin() as conn:  # a second start finds nothing left to do
        assert upgrade(conn) == []
    db.dispose()


@pytest.mark.integration
def test_postgres_database_from_an_older_release_is_upgraded(pg_url: str) -> None:
    db = Database(pg_url)
    db.create_all()
    _seed(db)
    _age(db)
    # the failure an upgrade without this module hit
    with db.begin() as conn, pytest.raises(Exception, match="too long"), conn.begin_nested():
        conn.execute(
            text("INSERT INTO findings (study_uid, kind, source, measurements, "
                 "attributes, category, verdict, created_at) VALUES ('1.2.3', 'x', "
                 "'ai', '[]', '{}', :c, 'pending', now())"),
            {"c": CTA_CATEGORY},
        )
    db.dispose()

    db = Database(pg_url)
    db.create_all()
    _check_upgraded(db)
    cols = {c["name"]: c for c in inspect(db.engine).get_columns("findings")}
    assert getattr(cols["category"]["type"], "length", None) == 64
    db.dispose()


def test_change_that_could_lose_data_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.create_all()
    newer = MetaData()
    Table("findings", newer, Column("id", Integer, primary_key=True),
          Column("must_have", String(8), nullable=False))
    with db.begin() as conn, pytest.raises(ConfigurationError, match=r"findings\.must_have"):
        upgrade(conn, newer)
    assert "must_have" not in {c["name"] for c in inspect(db.engine).get_columns("findings")}
    db.dispose()
