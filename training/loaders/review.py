"""Confirmed review findings from the service database as training labels.

A radiologist's verdict is the label: accepted, edited and radiologist-added nodule/mass
findings are positives, rejected AI findings are hard negatives (false positives the
current model made). A verdict counts only once the report is signed, and then as signed:

- a signed study gives its findings as they are (nothing changes while it is signed);
- a study reopened for amendment and not yet signed again gives its findings as they were
  at the last signature, rebuilt from ``finding_revisions`` up to the last sign/amend
  audit entry (edits in progress are not labels yet);
- a study never signed gives nothing, unless ``include_unsigned`` (research use), which
  takes every current verdict; pending findings never carry a label.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from countyread.context import AppContext
from countyread.db import audit, finding_revisions, findings, instances, reports, studies
from countyread.errors import InvalidInputError, StorageError
from training.loaders.types import NoduleLabel

logger = logging.getLogger(__name__)

#: The CT nodule kinds the review page uses (api.reporting.NODULE_KINDS).
KINDS = ("lung_nodule", "lung_mass", "nodule")
POSITIVE = ("accepted", "edited")


@dataclass(frozen=True, slots=True)
class ReviewCase:
    """Labels of one study, with the stored files of the series they lie in.

    ``revision`` is the signed study revision the labels come from; None for labels taken
    from an unsigned review (``include_unsigned``).
    """

    study_uid: str
    series_uids: tuple[str, ...]
    instance_paths: tuple[Path, ...]
    positives: tuple[NoduleLabel, ...]
    negatives: tuple[NoduleLabel, ...]
    revision: int | None = None


def _measure(measurements: Any, name: str) -> float | None:
    for m in measurements or []:
        if isinstance(m, Mapping) and m.get("name") == name:
            try:
                return float(m["value"])
            except (TypeError, ValueError, KeyError):
                return None
    return None


def _diameter(measurements: Any) -> float | None:
    """Mean diameter, else (long + short axis) / 2 as Lung-RADS defines it (an edit may
    give only the axes), else the long axis alone."""
    mean = _measure(measurements, "mean_diameter")
    if mean is not None:
        return mean
    long_axis = _measure(measurements, "long_axis")
    short_axis = _measure(measurements, "short_axis")
    if long_axis is not None and short_axis is not None:
        return round((long_axis + short_axis) / 2.0, 1)
    return long_axis if long_axis is not None else _measure(measurements, "diameter")


def _label(row: Mapping[str, Any]) -> NoduleLabel | None:
    xyz = (row["center_x"], row["center_y"], row["center_z"])
    if any(v is None for v in xyz):
        return None
    source = f"review:{row['source']}:{row['verdict']}"
    return NoduleLabel(
        (float(xyz[0]), float(xyz[1]), float(xyz[2])), _diameter(row["measurements"]) or 0.0,
        source,
    )


def _from_snapshot(row: Mapping[Any, Any], snap: Mapping[str, Any]) -> dict[str, Any]:
    """A finding row as a ``finding_revisions`` snapshot recorded it (api.review.snapshot)."""
    center = snap.get("center_lps") or [None, None, None]
    return {
        "id": row["id"], "kind": snap.get("kind"), "source": snap.get("source"),
        "verdict": snap.get("verdict"), "series_uid": snap.get("series_uid"),
        "center_x": center[0], "center_y": center[1], "center_z": center[2],
        "measurements": snap.get("measurements"),
    }


def _as_signed(conn: Connection, study_uid: str, cutoff: datetime) -> list[dict[str, Any]]:
    """The study's findings as they stood at ``cutoff`` (the last signature)."""
    rows = conn.execute(
        select(findings).where(findings.c.study_uid == study_uid).order_by(findings.c.id)
    ).mappings().all()
    revs: dict[int, list[Mapping[Any, Any]]] = {}
    for r in conn.execute(
        select(finding_revisions)
        .where(finding_revisions.c.finding_id.in_([f["id"] for f in rows]))
        .order_by(finding_revisions.c.finding_id, finding_revisions.c.revision)
    ).mappings():
        revs.setdefault(r["finding_id"], []).append(r)
    out = []
    for f in rows:
        history = revs.get(f["id"], [])
        before = [r for r in history if r["changed_at"] <= cutoff]
        if before:
            out.append(_from_snapshot(f, before[-1]["snapshot"]))
        elif not history and f["created_at"] <= cutoff:
            out.append(dict(f))  # untouched since it was signed
        else:
            # Added during the amendment, or first recorded then: not part of what was signed.
            logger.debug("finding not in the signed revision", extra={"finding_id": f["id"]})
    return out


def _current(conn: Connection, study_uid: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        select(findings).where(findings.c.study_uid == study_uid).order_by(findings.c.id)
    ).mappings()]


def _signed_rows(
    conn: Connection, include_unsigned: bool
) -> Iterator[tuple[str, int | None, list[dict[str, Any]]]]:
    """(study, signed revision, finding rows as signed) for every study with a label."""
    with_findings = select(findings.c.study_uid).where(findings.c.verdict != "pending")
    q = (
        select(studies.c.study_uid, studies.c.revision, reports.c.signed_by,
               reports.c.revision.label("report_revision"))
        .select_from(studies.outerjoin(reports, reports.c.study_uid == studies.c.study_uid))
        .where(studies.c.study_uid.in_(with_findings))
        .order_by(studies.c.study_uid)
    )
    for s in conn.execute(q).mappings().all():
        uid = s["study_uid"]
        if s["signed_by"]:
            yield uid, int(s["report_revision"]), _current(conn, uid)
        elif s["revision"] and not include_unsigned:
            cutoff = conn.execute(
                select(func.max(audit.c.at)).where(
                    audit.c.study_uid == uid, audit.c.action.in_(("sign", "amend")))
            ).scalar_one_or_none()
            if cutoff is None:
                logger.warning("amended study without a sign/amend audit entry skipped",
                               extra={"study_uid": uid})
                continue
            yield uid, int(s["revision"]), _as_signed(conn, uid, cutoff)
        elif include_unsigned:
            yield uid, None, _current(conn, uid)


def _paths(ctx: AppContext, conn: Connection, study_uid: str,
           series_uids: list[str]) -> tuple[Path, ...]:
    q = select(instances.c.path).where(instances.c.study_uid == study_uid)
    if series_uids:
        q = q.where(instances.c.series_uid.in_(series_uids))
    rels = conn.execute(
        q.order_by(instances.c.series_uid, instances.c.instance_number,
                   instances.c.sop_instance_uid)
    ).scalars().all()
    try:
        return tuple(ctx.store.absolute(p) for p in rels)
    except StorageError as exc:
        raise InvalidInputError(f"bad stored instance path: {exc}") from exc


def _cases(ctx: AppContext, conn: Connection, include_unsigned: bool) -> Iterator[ReviewCase]:
    for study_uid, revision, rows in _signed_rows(conn, include_unsigned):
        pos: list[NoduleLabel] = []
        neg: list[NoduleLabel] = []
        used = [r for r in rows if r["kind"] in KINDS
                and (r["verdict"] in POSITIVE or r["verdict"] == "rejected")]
        for r in used:
            lab = _label(r)
            if lab is None:
                logger.warning("review finding without centre skipped",
                               extra={"finding_id": r["id"]})
                continue
            (pos if r["verdict"] in POSITIVE else neg).append(lab)
        if not pos and not neg:
            continue
        series_uids = sorted({r["series_uid"] for r in used if r["series_uid"]})
        yield ReviewCase(study_uid, tuple(series_uids),
                         _paths(ctx, conn, study_uid, series_uids), tuple(pos), tuple(neg),
                         revision)


def load_review(ctx: AppContext, *, include_unsigned: bool = False) -> Iterator[ReviewCase]:
    """Yield one ReviewCase per study with at least one confirmed nodule/mass finding.

    A label without a centre cannot be placed in the volume and is skipped (logged); a
    positive without a diameter gets 0.0 so a trainer can treat it as a point label.
    Instance paths are resolved under ``ctx.store.root``; a path escaping the store is an
    error. All labels are read in one transaction, so they come from one consistent state
    and no transaction stays open while a trainer loads volumes.
    """
    with ctx.db.begin() as conn:
        cases = list(_cases(ctx, conn, include_unsigned))
    yield from cases
