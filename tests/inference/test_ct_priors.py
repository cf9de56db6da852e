"""Follow-up chest CT against the prior: matching across repositioning, change, VDT,
change-aware Lung-RADS, and the worker's look-up of the prior in the database."""

from __future__ import annotations

import io
import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from countyread.context import AppContext
from countyread.db import analyses, findings, studies
from countyread.domain import AnalysisResult, Finding, Measurement, Urgency
from countyread.settings import load_settings
from countyread.store import write_durable
from inference.ct_nodule.priors import (
    PriorNodule,
    PriorStudy,
    apply,
    compare,
    match,
    vdt_days,
)
from inference.ct_nodule.rules import Change
from inference.pipeline import PipelineOutput
from inference.prior_lookup import find_prior
from inference.worker import AnalysisWorker

SHIFT = np.array([6.0, -9.0, 42.0])  # the patient lay differently on the second visit
TODAY = date(2026, 11, 23)


def _sphere_volume(d: float) -> float:
    return math.pi / 6.0 * d**3


def _finding(center: tuple[float, float, float], d: float, side: str = "right",
             type_: str = "solid") -> Finding:
    return Finding(
        kind="lung_nodule", probability=0.9, center_lps=center, series_uid="1.2.9",
        sop_instance_uid=None,
        measurements=(Measurement("long_axis", round(d * 1.1, 1), "mm"),
                      Measurement("short_axis", round(d * 0.9, 1), "mm"),
                      Measurement("mean_diameter", d, "mm"),
                      Measurement("volume", round(_sphere_volume(d), 1), "mm3")),
        category="3", attributes=(("type", type_), ("side", side), ("location", "lung"),
                                  ("margin", "smooth")),
    )


def _prior_nodule(center: tuple[float, float, float], d: float,
                  side: str = "right") -> PriorNodule:
    return PriorNodule(center, d, _sphere_volume(d), "solid", side)


def _at(prior_center: tuple[float, float, float]) -> tuple[float, float, float]:
    c = np.asarray(prior_center) + SHIFT
    return (float(c[0]), float(c[1]), float(c[2]))


PRIOR_CENTRES = [(-80.0, -20.0, -150.0), (-60.0, 30.0, -90.0), (70.0, 0.0, -120.0)]


def _prior(nodules: tuple[PriorNodule, ...], days: int = 180) -> PriorStudy:
    return PriorStudy("1.2.8", TODAY - timedelta(days=days), nodules, (-250.0, -20.0), True)


def test_three_nodules_are_matched_across_repositioning_and_a_new_one_is_new() -> None:
    prior = _prior((_prior_nodule(PRIOR_CENTRES[0], 6.0),
                    _prior_nodule(PRIOR_CENTRES[1], 5.0),
                    _prior_nodule(PRIOR_CENTRES[2], 7.0, side="left")))
    current = [_finding(_at(PRIOR_CENTRES[2]), 7.1, side="left"),
               _finding(_at(PRIOR_CENTRES[0]), 8.0),
               _finding((-40.0, 10.0, -160.0 + SHIFT[2]), 6.5),  # nothing there before
               _finding(_at(PRIOR_CENTRES[1]), 5.2)]
    mapping, shift = match(current, prior.nodules)
    assert mapping == {0: 2, 1: 0, 3: 1}
    assert np.allclose(shift, SHIFT, atol=0.5)
    changes, _ = compare(current, prior, TODAY)
    assert [c.change for c in changes] == [Change.STABLE, Change.GROWING, Change.NEW,
                                           Change.STABLE]
    assert changes[1].growth_mm == 2.0
    expected_vdt = 180 * math.log(2) / math.log(_sphere_volume(8.0) / _sphere_volume(6.0))
    assert changes[1].vdt_days == pytest.approx(expected_vdt, rel=0.01)


def test_change_aware_lung_rads_and_urgency() -> None:
    prior = _prior((_prior_nodule(PRIOR_CENTRES[0], 6.0),))
    grown = _finding(_at(PRIOR_CENTRES[0]), 8.0)  # baseline 8 mm would be 4A
    new = _finding((-40.0, 10.0, -160.0 + SHIFT[2]), 6.5)  # baseline 3, new 6-8 mm: 4A
    result = AnalysisResult("ct_nodule", "1.2.9", "1.2.10", (grown, new), Urgency.ROUTINE,
                            category="4A", recommendation="x")
    out = apply(result, prior, TODAY, (-260.0 + SHIFT[2], -10.0 + SHIFT[2]))
    by_change = {f.attribute("change"): f for f in out.findings}
    assert by_change["growing"].category == "4B"
    assert by_change["growing"].measurement("diameter_change") == 2.0
    assert by_change["growing"].measurement("volume_doubling_time") is not None
    assert by_change["new"].category == "4A"
    assert out.category == "4B" and out.urgency is Urgency.URGENT
    assert "1 new, 1 growing, 0 stable, 0 prior nodule(s) not seen now" in out.notes[-1]
    assert all(f.attribute("prior_study_uid") == "1.2.8" for f in out.findings)


def test_what_must_not_match() -> None:
    prior = _prior((_prior_nodule(PRIOR_CENTRES[0], 6.0, side="right"),))
    # Same place after the shift but the other lung: not the same nodule.
    other_side = _finding(_at(PRIOR_CENTRES[0]), 6.0, side="left")
    assert match([other_side], prior.nodules)[0] == {}
    # A plausible size but a repositioning no patient undergoes (20 cm along z).
    far = _finding((PRIOR_CENTRES[0][0], PRIOR_CENTRES[0][1], PRIOR_CENTRES[0][2] + 200.0), 6.0)
    assert match([far], prior.nodules)[0] == {}
    # Four times the size is a different lesion.
    huge = _finding(_at(PRIOR_CENTRES[0]), 25.0)
    assert match([huge], prior.nodules)[0] == {}


def test_growth_outside_twelve_months_and_outside_coverage() -> None:
    prior = _prior((_prior_nodule(PRIOR_CENTRES[0], 6.0),), days=500)
    grown = _finding(_at(PRIOR_CENTRES[0]), 8.0)
    (c,), _ = compare([grown], prior, TODAY)
    assert c.change is Change.BASELINE and c.growth_mm == 2.0 and c.vdt_days is not None
    # Where the prior scan did not reach, an unmatched nodule cannot be called new.
    (c,), _ = compare([_finding((0.0, 0.0, 400.0), 6.0)], _prior(()), TODAY)
    assert c.change is Change.BASELINE
    assert vdt_days(100.0, 90.0, 100) is None


# -- the worker's side: finding the prior in the database ------------------------------

@pytest.fixture()
def ctx(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = AppContext.create(load_settings(data_dir=tmp_path / "var"))
    yield c
    c.close()


def _study(ctx: AppContext, uid: str, day: str, status: str, name: str = "王^芳",
           birth: str = "19580302", pid: str = "TS0042") -> None:
    with ctx.db.begin() as conn:
        conn.execute(studies.insert().values(
            study_uid=uid, patient_id=pid, patient_name=name, patient_birth_date=birth,
            study_date=day, modalities="CT", status=status))


def _analysis(ctx: AppContext, uid: str, tmp_path: Path) -> int:
    art = tmp_path / f"art-{uid}"
    affine = np.eye(4)
    affine[2, 3] = -260.0  # slices from z = -260 upwards, 1 mm apart
    buf = io.BytesIO()
    np.savez(buf, geometry=affine, slice_sop_uids=np.array([f"1.{k}" for k in range(240)]))
    write_durable(art / "arrays.npz", buf.getvalue())
    with ctx.db.begin() as conn:
        pk = conn.execute(analyses.insert().values(
            study_uid=uid, series_uid=f"{uid}.1", pipeline="ct_nodule", status="ready",
            artifacts_dir=str(art))).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def _prior_finding(ctx: AppContext, uid: str, analysis_id: int, verdict: str,
                   source: str = "ai", d: float = 6.0) -> None:
    c = PRIOR_CENTRES[0]
    with ctx.db.begin() as conn:
        conn.execute(findings.insert().values(
            study_uid=uid, analysis_id=analysis_id, series_uid=f"{uid}.1", kind="lung_nodule",
            source=source, probability=0.9, center_x=c[0], center_y=c[1], center_z=c[2],
            measurements=[{"name": "mean_diameter", "value": d, "unit": "mm"},
                          {"name": "volume", "value": _sphere_volume(d), "unit": "mm3"}],
            attributes={"type": "solid", "side": "right"}, verdict=verdict))


def test_worker_compares_with_the_signed_prior_of_the_same_patient(
    ctx: AppContext, tmp_path: Path
) -> None:
    _study(ctx, "1.2.8", "20260520", "signed")
    aid = _analysis(ctx, "1.2.8", tmp_path)
    _prior_finding(ctx, "1.2.8", aid, "accepted")
    _prior_finding(ctx, "1.2.8", aid, "rejected", d=4.0)  # the radiologist said no
    # Another patient with the same township ID (a different hospital): never a prior.
    _study(ctx, "1.2.7", "20260601", "signed", name="李^强", birth="19700101")
    _prior_finding(ctx, "1.2.7", _analysis(ctx, "1.2.7", tmp_path), "accepted", d=3.0)
    _study(ctx, "1.2.10", "20261123", "analyzing")

    found = find_prior(ctx, "1.2.10")
    assert found is not None
    prior, day = found
    assert prior.study_uid == "1.2.8" and prior.reviewed and day == TODAY
    assert [n.mean_diameter_mm for n in prior.nodules] == [6.0]
    assert prior.z_range == (-260.0, -21.0)

    result = AnalysisResult("ct_nodule", "1.2.10.1", "1.2.10",
                            (_finding(_at(PRIOR_CENTRES[0]), 8.0),), Urgency.ROUTINE,
                            category="4A", recommendation="x")
    out = AnalysisWorker(ctx)._compare_with_prior("1.2.10", PipelineOutput(result))
    (f,) = out.result.findings
    assert f.attribute("change") == "growing" and f.category == "4B"
    assert out.result.urgency is Urgency.URGENT
    assert "compared with prior CT of 2026-05-20 (187 days earlier)" in out.result.notes[-1]


def test_no_prior_leaves_the_result_untouched(ctx: AppContext) -> None:
    _study(ctx, "1.2.10", "20261123", "analyzing")
    result = AnalysisResult("ct_nodule", "1.2.10.1", "1.2.10",
                            (_finding((0.0, 0.0, 0.0), 8.0),), Urgency.ROUTINE, category="4A")
    out = AnalysisWorker(ctx)._compare_with_prior("1.2.10", PipelineOutput(result))
    assert out.result == result

