"""``countyread db``: create the schema and print row counts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sqlalchemy import func, select

from countyread.context import AppContext
from countyread.db import metadata


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread db",
        description="Create the database schema (idempotent) and "
        "print the number of rows per table.",
    )
    parser.add_argument(
        "action",
        choices=["init", "stats"],
        help="init: create tables; stats: also print row counts",
    )
    args = parser.parse_args(list(argv))
    ctx = AppContext.create()
    print(f"database ready: {ctx.db.engine.url.render_as_string(hide_password=True)}")
    if args.action == "stats":
        with ctx.db.begin() as conn:
            for name, table in metadata.tables.items():
                n = conn.execute(select(func.count()).select_from(table)).scalar_one()
                print(f"  {name:20s} {n}")
    ctx.close()
    return 0
