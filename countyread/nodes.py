"""Registry of known DICOM nodes (township scanners and PACS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from countyread.db import Database
from countyread.db import nodes as nodes_t
from countyread.domain import NodeKind
from countyread.errors import ConflictError, InvalidInputError, NotFoundError

#: Object families a node may receive (see DESIGN.md section 1, step 4). ``ALERT`` is
#: not an object family but the node's consent to unreviewed urgent alerts before
#: sign-off (DESIGN.md section 4; dicom_node/alerts.py).
ALERT = "ALERT"
OBJECT_FAMILIES = ("SR", "SEG", "SC", "KOS", "RENDER", ALERT)


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    name: str
    ae_title: str
    host: str | None
    port: int | None
    kind: NodeKind
    send: tuple[str, ...]
    active: bool

    @property
    def can_receive(self) -> bool:
        return bool(self.host) and bool(self.port) and self.active


def _row_to_node(row: Any) -> Node:
    return Node(
        id=row["id"],
        name=row["name"],
        ae_title=row["ae_title"],
        host=row["host"],
        port=row["port"],
        kind=NodeKind(row["kind"]),
        send=tuple(row["send"] or ()),
        active=bool(row["active"]),
    )


def add_node(
    db: Database,
    *,
    name: str,
    ae_title: str,
    host: str | None = None,
    port: int | None = None,
    kind: NodeKind = NodeKind.TOWNSHIP,
    send: tuple[str, ...] | None = None,
) -> Node:
    ae = ae_title.strip()
    if not ae or len(ae) > 16 or "\\" in ae:
        raise InvalidInputError("ae_title must be 1 to 16 characters without backslash")
    if (host is None) != (port is None):
        raise InvalidInputError("host and port go together (a node without both receives nothing)")
    if port is not None and not 0 < port < 65536:
        raise InvalidInputError("port must be 1..65535")
    if send is None:
        send = ("SR", "SEG") if kind == NodeKind.PACS else ("SC", "KOS")
    bad = [s for s in send if s not in OBJECT_FAMILIES]
    if bad:
        raise InvalidInputError(f"unknown object families {bad}; choose from {OBJECT_FAMILIES}")
    try:
        with db.begin() as conn:
            res = conn.execute(
                nodes_t.insert().values(
                    name=name,
                    ae_title=ae,
                    host=host,
                    port=port,
                    kind=kind.value,
                    send=list(send),
                    active=True,
                )
            )
            pk = res.inserted_primary_key
            assert pk is not None
            node_id = int(pk[0])
    except IntegrityError:
        raise ConflictError(f"a node with AE title {ae!r} exists") from None
    return get_node(db, node_id)


def get_node(db: Database, node_id: int) -> Node:
    with db.begin() as conn:
        row = conn.execute(select(nodes_t).where(nodes_t.c.id == node_id)).mappings().first()
    if row is None:
        raise NotFoundError(f"node {node_id} not found")
    return _row_to_node(row)


def find_by_ae(db: Database, ae_title: str) -> Node | None:
    with db.begin() as conn:
        row = (
            conn.execute(select(nodes_t).where(nodes_t.c.ae_title == ae_title.strip()))
            .mappings()
            .first()
        )
    return _row_to_node(row) if row else None


def list_nodes(db: Database, kind: NodeKind | None = None) -> list[Node]:
    q = select(nodes_t).order_by(nodes_t.c.id)
    if kind is not None:
        q = q.where(nodes_t.c.kind == kind.value)
    with db.begin() as conn:
        return [_row_to_node(r) for r in conn.execute(q).mappings()]


def set_active(db: Database, node_id: int, active: bool) -> None:
    with db.begin() as conn:
        res = conn.execute(update(nodes_t).where(nodes_t.c.id == node_id).values(active=active))
    if res.rowcount == 0:
        raise NotFoundError(f"node {node_id} not found")
