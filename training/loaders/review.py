"""Confirmed review findings from the service database as training labels.

A radiologist's verdict is the label: accepted, edited and radiologist-added nodule/mass
findings are positives, rejected AI findings are hard negatives (false positives the
current model made). Pending findings carry no verdict yet and are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import findings, instances
from countyread.errors import InvalidInputError, StorageError
from training.loaders.types import NoduleLabel

logger = logging.getLogger(__name__)

KINDS = ("lung_nodule", "lung_mass")
POSITIVE = ("accepted", "edited")


@dataclass(frozen=True, slots=True)
class ReviewCase:
    """Labels of one study, with the stored files of the series they lie in."""

    study_uid: str
    series_uids: tuple[str, ...]
    instance_paths: tuple[Path, ...]
    positives: tuple[NoduleLabel, ...]
    negatives: tuple[NoduleLabel, ...]


def _diameter(measurements: Any) -> float | None:
    for m in measurements or []:
        if isinstance(m, Mapping) and m.get("name") == "mean_diameter":
            try:
                return float(m["value"])
            except (TypeError, ValueError, KeyError):
                return None
    return None


def _label(row: Mapping[Any, Any]) -> NoduleLabel | None:
    xyz = (row["center_x"], row["center_y"], row["center_z"])
    if any(v is None for v in xyz):
        return None
    diameter = _diameter(row["measurements"])
    source = f"review:{row['source']}:{row['verdict']}"
    return NoduleLabel(
        (float(xyz[0]), float(xyz[1]), float(xyz[2])), diameter or 0.0, source
    )


def _is_positive(row: Mapping[Any, Any]) -> bool | None:
    if row["verdict"] in POSITIVE:
        return True
    if row["verdict"] == "rejected":
        return False
    return None  # pending: not yet a label


def load_review(ctx: AppContext) -> Iterator[ReviewCase]:
    """Yield one ReviewCase per study with at least one confirmed nodule/mass finding.

    A label without a centre cannot be placed in the volume and is skipped (logged); a
    positive without ``mean_diameter`` gets diameter 0.0 so a trainer can treat it as a
    point label. Instance paths are resolved under ``ctx.store.root``; a path escaping the
    store is an error.
    """
    with ctx.db.begin() as conn:
        rows = conn.execute(
            select(findings)
            .where(findings.c.kind.in_(KINDS), findings.c.verdict != "pending")
            .order_by(findings.c.study_uid, findings.c.id)
        ).mappings().all()
        by_study: dict[str, list[Mapping[Any, Any]]] = {}
        for r in rows:
            by_study.setdefault(r["study_uid"], []).append(r)
        for study_uid, frows in by_study.items():
            pos: list[NoduleLabel] = []
            neg: list[NoduleLabel] = []
            series_uids = sorted({r["series_uid"] for r in frows if r["series_uid"]})
            for fr in frows:
                kind = _is_positive(fr)
                lab = _label(fr)
                if kind is None:
                    continue
                if lab is None:
                    logger.warning("review finding without centre skipped",
                                   extra={"finding_id": fr["id"]})
                    continue
                (pos if kind else neg).append(lab)
            if not pos and not neg:
                continue
            q = select(instances.c.path).where(instances.c.study_uid == study_uid)
            if series_uids:
                q = q.where(instances.c.series_uid.in_(series_uids))
            rels = conn.execute(
                q.order_by(instances.c.series_uid, instances.c.instance_number,
                           instances.c.sop_instance_uid)
            ).scalars().all()
            try:
                paths = tuple(ctx.store.absolute(p) for p in rels)
            except StorageError as exc:
                raise InvalidInputError(f"bad stored instance path: {exc}") from exc
            yield ReviewCase(study_uid, tuple(series_uids), paths, tuple(pos), tuple(neg))
