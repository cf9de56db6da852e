"""DICOM nodes (township scanners, PACS), managed by admins."""

from __future__ import annotations

from fastapi import APIRouter, status

from api import audit
from api.deps import AdminUser, ClientIP, CtxDep
from api.schemas import NodeCreate, NodePublic
from countyread import nodes as registry
from countyread.domain import NodeKind

router = APIRouter(prefix="/api/nodes", tags=["nodes"])


def _public(n: registry.Node) -> NodePublic:
    return NodePublic(id=n.id, name=n.name, ae_title=n.ae_title, host=n.host, port=n.port,
                      kind=n.kind, send=list(n.send), active=n.active,
                      can_receive=n.can_receive)


@router.get("", response_model=list[NodePublic])
def list_nodes(ctx: CtxDep, _admin: AdminUser, kind: NodeKind | None = None) -> list[NodePublic]:
    return [_public(n) for n in registry.list_nodes(ctx.db, kind)]


@router.post("", response_model=NodePublic, status_code=status.HTTP_201_CREATED)
def add_node(ctx: CtxDep, admin: AdminUser, body: NodeCreate, client: ClientIP) -> NodePublic:
    """Register a node; one without host and port is never sent anything."""
    node = registry.add_node(ctx.db, name=body.name, ae_title=body.ae_title, host=body.host,
                             port=body.port, kind=body.kind,
                             send=tuple(body.send) if body.send is not None else None)
    with ctx.db.begin() as conn:
        audit.record(conn, username=admin.username, action="node_add", client=client,
                     detail={"node_id": node.id, "ae_title": node.ae_title})
    return _public(node)
