"""Output UIDs are derived: a rebuild repeats them, a new signed revision replaces them."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from countyread.context import AppContext
from countyread.errors import ConflictError
from dicom_node.results import build_results
from dicom_node.results.builder import revision_dir
from tests.results.seed import SeededStudy, sign


def _uids(result: object) -> dict[str, tuple[str, str]]:
    return {o.path.split("/", 1)[1]: (o.sop_instance_uid, o.series_uid) for o in result.objects}  # type: ignore[attr-defined]


def test_rebuild_of_the_same_revision_repeats_every_uid(
    ctx: AppContext, seeded: SeededStudy
) -> None:
    first = build_results(ctx, seeded.study_uid)
    again = build_results(ctx, seeded.study_uid)  # manifest present: nothing rebuilt
    assert again == first
    # Wipe the written objects: a full rebuild derives the very same UIDs and series numbers.
    rev_dir = revision_dir(ctx.settings.results_dir, seeded.study_uid, first.revision)
    numbers = {
        o.sop_instance_uid: pydicom.dcmread(ctx.settings.results_dir / o.path).SeriesNumber
        for o in first.objects
    }
    shutil.rmtree(rev_dir)
    rebuilt = build_results(ctx, seeded.study_uid)
    assert _uids(rebuilt) == _uids(first)
    assert {
        o.sop_instance_uid: pydicom.dcmread(ctx.settings.results_dir / o.path).SeriesNumber
        for o in rebuilt.objects
    } == numbers


def test_new_revision_gets_new_uids_and_supersedes_the_old_sr(
    ctx: AppContext, seeded: SeededStudy
) -> None:
    first = build_results(ctx, seeded.study_uid)
    sign(ctx, seeded.study_uid)  # an amendment signed again: revision 2
    second = build_results(ctx, seeded.study_uid)
    assert second.revision == first.revision + 1
    old = {o.sop_instance_uid for o in first.objects} | {o.series_uid for o in first.objects}
    new = {o.sop_instance_uid for o in second.objects} | {o.series_uid for o in second.objects}
    assert not old & new
    sr = pydicom.dcmread(ctx.settings.results_dir / second.of("SR")[0].path)
    predecessors = {
        i.ReferencedSOPInstanceUID
        for study in sr.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert predecessors == {first.of("SR")[0].sop_instance_uid}
    # The tracking UID of a finding survives the amendment (same nodule, new report).
    old_seg = pydicom.dcmread(ctx.settings.results_dir / first.of("SEG")[0].path)
    new_seg = pydicom.dcmread(ctx.settings.results_dir / second.of("SEG")[0].path)
    assert [s.TrackingUID for s in old_seg.SegmentSequence] == [
        s.TrackingUID for s in new_seg.SegmentSequence
    ]


def test_unsigned_study_builds_nothing(ctx: AppContext, seeded: SeededStudy) -> None:
    from sqlalchemy import update

    from countyread.db import reports

    with ctx.db.begin() as conn:  # what an amendment does: the signature is withdrawn
        conn.execute(update(reports).values(signed_by=None, signed_at=None))
    with pytest.raises(ConflictError):
        build_results(ctx, seeded.study_uid)
