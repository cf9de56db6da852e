"""NODE21-style DR metrics on hand-checked cases."""

from __future__ import annotations

import math

import pytest

from training.dr.evaluate import (
    Box,
    Detection,
    Truth,
    false_positives_per_image,
    froc,
    image_auc,
    label_detections,
)


def test_iou() -> None:
    a = Box(0, 0, 10, 10)
    assert a.iou(a) == 1.0
    assert a.iou(Box(0, 5, 10, 15)) == pytest.approx(50 / 150)
    assert a.iou(Box(20, 20, 30, 30)) == 0.0
    assert Box.around(5, 5, 10) == a


def test_hit_needs_iou_above_0_2() -> None:
    truth = [Truth(0, Box(0, 0, 10, 10), 12.0)]
    # IoU exactly 0.2 is not a hit; NODE21 needs more than 0.2
    just_below = Detection(0, Box(0, 0, 10, 2), 0.9)  # IoU = 20 / 100 = 0.2
    assert just_below.box.iou(truth[0].box) == pytest.approx(0.2)
    assert label_detections([just_below], truth) == [(0.9, "fp")]
    above = Detection(0, Box(0, 0, 10, 3), 0.9)
    assert label_detections([above], truth) == [(0.9, "tp")]


def test_duplicates_are_false_positives_and_small_truths_are_ignored() -> None:
    truths = [Truth(0, Box(0, 0, 10, 10), 12.0), Truth(1, Box(0, 0, 4, 4), 5.0)]
    dets = [
        Detection(0, Box(0, 0, 10, 10), 0.9),
        Detection(0, Box(1, 1, 10, 10), 0.8),  # second mark on the same nodule
        Detection(1, Box(0, 0, 4, 4), 0.7),  # hits a 5 mm nodule
    ]
    assert label_detections(dets, truths) == [(0.9, "tp"), (0.8, "fp"), (0.7, "tp")]
    assert label_detections(dets, truths, min_diameter_mm=10) == [
        (0.9, "tp"),
        (0.8, "fp"),
        (0.7, "ignored"),
    ]


def test_froc_by_hand() -> None:
    # 4 images, 4 nodules; detections by score: tp .95, fp .9, tp .8, fp .7, fp .6, tp .5
    truths = [Truth(i, Box(0, 0, 10, 10), 15.0) for i in range(4)]
    hit = Box(0, 0, 10, 10)
    miss = Box(50, 50, 60, 60)
    dets = [
        Detection(0, hit, 0.95),
        Detection(1, miss, 0.9),
        Detection(1, hit, 0.8),
        Detection(2, miss, 0.7),
        Detection(3, miss, 0.6),
        Detection(2, hit, 0.5),
    ]
    res = froc(dets, truths, n_images=4)
    # FP/image after each: .95 -> 0, .9 -> .25, .8 -> .25, .7 -> .5, .6 -> .75, .5 -> .75
    assert res.sensitivity[0.125] == 0.25  # only the first mark fits under 0.125
    assert res.threshold[0.125] == 0.95
    assert res.sensitivity[0.25] == 0.5
    assert res.threshold[0.25] == 0.8
    assert res.sensitivity[0.5] == 0.5
    assert res.sensitivity[1.0] == 0.75
    assert res.threshold[1.0] == 0.5
    assert res.as_metrics("x_")["x_mean_sens"] == pytest.approx((0.25 + 0.5 + 0.5 + 0.75) / 4)
    assert false_positives_per_image(dets, truths, 4, 0.75) == 0.25


def test_froc_counts_ties_together() -> None:
    truths = [Truth(0, Box(0, 0, 10, 10), 15.0)]
    dets = [Detection(0, Box(0, 0, 10, 10), 0.5), Detection(0, Box(50, 50, 60, 60), 0.5)]
    res = froc(dets, truths, n_images=8, fp_rates=(0.1, 0.125))
    assert res.sensitivity[0.1] == 0.0  # the tie brings 1/8 FP per image with it
    assert res.sensitivity[0.125] == 1.0


def test_froc_rejects_no_images() -> None:
    with pytest.raises(ValueError):
        froc([], [], 0)


def test_image_auc() -> None:
    assert image_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert image_auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert image_auc([0.5, 0.5], [True, False]) == 0.5  # ties count one half
    # 3 positives, 2 negatives, by hand: pairs won 5 of 6 ... (0.9>0.3,0.9>0.6,0.7>0.3,
    # 0.7>0.6, 0.4>0.3, 0.4<0.6) -> 5 / 6
    assert image_auc([0.9, 0.7, 0.4, 0.3, 0.6], [True, True, True, False, False]) == pytest.approx(
        5 / 6
    )
    assert math.isnan(image_auc([0.1, 0.2], [True, True]))


def test_nodules_not_shown_are_neither_counted_nor_false_alarms() -> None:
    truths = [Truth(0, Box(0, 0, 10, 10), 12.0), Truth(0, Box(50, 50, 70, 70), 20.0, shown=False)]
    dets = [Detection(0, Box(50, 50, 70, 70), 0.9), Detection(0, Box(30, 30, 40, 40), 0.8)]
    assert label_detections(dets, truths) == [(0.9, "ignored"), (0.8, "fp")]
    res = froc(dets, truths, n_images=1, fp_rates=(1.0,))
    assert res.n_truths == 1 and res.sensitivity[1.0] == 0.0


def test_held_out_auc_leaves_out_films_whose_nodules_are_all_hidden() -> None:
    import numpy as np

    from training.dr.data import Sample
    from training.dr.heldout import evaluate

    blank = np.zeros((256, 256), np.float32)
    samples = [
        Sample(blank, ((100.0, 100.0, 12.0, 15.0),)),  # positive, scored high
        Sample(blank, ()),  # negative, scored low
        Sample(blank + 1, (), ((50.0, 50.0, 12.0, 15.0),)),  # hidden only, scored highest
    ]

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heat = np.zeros((1, 1, 64, 64), np.float32)
        if x.max() > 0.5:
            heat[0, 0, 12, 12] = 0.95  # on the hidden nodule at (50, 50)
        elif x.sum() == 0 and not run.calls:  # type: ignore[attr-defined]
            heat[0, 0, 24, 24] = 0.8  # on the shown nodule at (100, 100)
        run.calls += 1  # type: ignore[attr-defined]
        return heat, np.full((1, 1, 64, 64), 12.0, np.float32)

    run.calls = 0  # type: ignore[attr-defined]
    report = evaluate(run, samples)
    assert report.auc == 1.0  # the hidden-only film would otherwise outrank the positive
    assert report.all_sizes.n_truths == 1 and report.all_sizes.sensitivity[0.125] == 1.0
    assert report.n_nodule_free == 1
