"""LUNA16 FROC/CPM on hand-made cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.evaluation.froc import (
    MAX_MARKS,
    Detection,
    Truth,
    froc,
    markdown,
    read_annotations_csv,
    read_candidates_csv,
    write_annotations_csv,
    write_candidates_csv,
)


def test_perfect_detector() -> None:
    truths = {"a": [Truth((0, 0, 0), 10)], "b": [Truth((5, 5, 5), 6)]}
    dets = {"a": [Detection((1, 1, 1), 0.9)], "b": [Detection((5, 5, 7.9), 0.8)]}
    r = froc(truths, dets, bootstrap=50)
    assert r.sensitivities == (1.0,) * 7
    assert r.cpm == 1.0
    assert r.cpm_ci == (1.0, 1.0)


def test_hit_radius_is_half_the_diameter() -> None:
    truths = {"a": [Truth((0, 0, 0), 6)]}
    assert froc(truths, {"a": [Detection((3.0, 0, 0), 0.9)]}, bootstrap=0).cpm == 1.0
    r = froc(truths, {"a": [Detection((3.1, 0, 0), 0.9)]}, bootstrap=0)
    assert r.cpm == 0.0


def test_hand_computed_curve() -> None:
    # scan a: FP at 0.9, hit at 0.8; scan b: FP at 0.6, hit at 0.4.
    # curve (FP/scan, sens): (0.5, 0) -> (0.5, 0.5) -> (1, 0.5) -> (1, 1)
    truths = {"a": [Truth((0, 0, 0), 10)], "b": [Truth((0, 0, 0), 10)]}
    dets = {
        "a": [Detection((50, 0, 0), 0.9), Detection((0, 0, 1), 0.8)],
        "b": [Detection((50, 0, 0), 0.6), Detection((0, 1, 0), 0.4)],
    }
    r = froc(truths, dets, bootstrap=0)
    assert r.sensitivities == pytest.approx((0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0))
    assert r.cpm == pytest.approx(4.5 / 7)


def test_interpolation_between_operating_points() -> None:
    # 1 scan, 1 nodule; FP at 0.9 and 0.8, hit at 0.7: sens 0 up to 2 FPs, 1 from 2 FPs
    truths = {"a": [Truth((0, 0, 0), 10)]}
    dets = {
        "a": [Detection((50, 0, 0), 0.9), Detection((60, 0, 0), 0.8), Detection((0, 0, 0), 0.7)]
    }
    r = froc(truths, dets, bootstrap=0)
    assert r.sensitivities == pytest.approx((0, 0, 0, 0, 1, 1, 1))


def test_excluded_nodules_are_not_false_positives_and_marks_are_capped() -> None:
    truths = {"a": [Truth((0, 0, 0), 10)]}
    excluded = {"a": [Truth((40, 0, 0), 4)]}
    dets = {"a": [Detection((40, 0, 0), 0.99), Detection((0, 0, 0), 0.5)]}
    assert froc(truths, dets, excluded=excluded, bootstrap=0).cpm == 1.0
    # the hit ranks below 100 FPs: the mark cap drops it
    many = [Detection((100 + i, 0, 0), 0.9) for i in range(MAX_MARKS)]
    r = froc(truths, {"a": [*many, Detection((0, 0, 0), 0.1)]}, bootstrap=0)
    assert r.cpm == 0.0


def test_nodule_free_scans_count_for_fp_rate() -> None:
    truths = {"a": [Truth((0, 0, 0), 10)]}
    dets = {"a": [Detection((0, 0, 0), 0.5)], "b": [Detection((9, 9, 9), 0.9)]}
    r = froc(truths, dets, scans=["a", "b", "c", "d"], bootstrap=0)
    # one FP over 4 scans = 0.25 FP/scan reached before the hit
    assert r.sensitivities == pytest.approx((0, 1, 1, 1, 1, 1, 1))
    assert "CPM" in markdown(r)


def test_bootstrap_ci_brackets_the_estimate() -> None:
    truths = {f"s{i}": [Truth((0, 0, 0), 10)] for i in range(20)}
    dets = {f"s{i}": [Detection((0, 0, 0), 0.9)] for i in range(14)}
    r = froc(truths, dets, bootstrap=300, seed=1)
    assert r.cpm == pytest.approx(0.7)
    assert r.cpm_ci[0] < 0.7 < r.cpm_ci[1]


def test_luna16_csv_round_trip(tmp_path: Path) -> None:
    truths = {"1.2.3": [Truth((-100.5, 20.25, -300.0), 7.5)]}
    dets = {"1.2.3": [Detection((-100.0, 20.0, -300.0), 0.75)]}
    write_annotations_csv(tmp_path / "annotations.csv", truths)
    write_candidates_csv(tmp_path / "candidates.csv", dets)
    assert (tmp_path / "annotations.csv").read_text().splitlines()[0] == (
        "seriesuid,coordX,coordY,coordZ,diameter_mm"
    )
    assert read_annotations_csv(tmp_path / "annotations.csv") == truths
    assert read_candidates_csv(tmp_path / "candidates.csv") == dets
