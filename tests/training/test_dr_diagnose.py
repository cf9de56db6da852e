"""The DR miss breakdown on hand-made heatmaps (no model, no phantom)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.dr.detect import INPUT_SIZE, STRIDE
from training.dr.data import Sample
from training.dr.diagnose import (
    NoduleOutcome,
    background_level,
    bands,
    by_label,
    nodule_free_flagged,
    outcomes,
)
from training.dr.heldout import evaluate

G = INPUT_SIZE // STRIDE


def peak_runner(peaks: dict[int, list[tuple[int, int, float]]]):  # type: ignore[no-untyped-def]
    """A 'network' whose heatmap for image k (its pixel [0, 0] holds k) has the given
    (row cell, col cell, score) peaks and diameter 12 input pixels everywhere."""

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heat = np.zeros((1, 1, G, G), np.float32)
        for r, c, s in peaks[round(float(x[0, 0, 0, 0]))]:
            heat[0, 0, r, c] = s
        return heat, np.full((1, 1, G, G), 12.0, np.float32)

    return run


def sample(k: int, nodules: tuple[tuple[float, float, float, float], ...]) -> Sample:
    image = np.full((INPUT_SIZE, INPUT_SIZE), 0.3, np.float32)
    image[0, 0] = k
    return Sample(image, nodules)


def cell_centre(cell: int) -> float:
    return cell * STRIDE + (STRIDE - 1) / 2


def test_background_level_reads_the_ring_not_the_centre() -> None:
    image = np.full((64, 64), 0.2, np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    image[np.hypot(yy - 32, xx - 32) <= 5] = 0.9  # the nodule itself
    assert background_level(image, 32, 32, 10) == pytest.approx(0.2)
    image[:, 40:] = 0.8  # a dense structure covering part of the ring
    assert 0.2 < background_level(image, 32, 32, 10) <= 0.8


def test_outcomes_take_the_best_overlapping_candidate_and_size_filter() -> None:
    on = (cell_centre(20), cell_centre(20), 12.0, 14.0)
    missed = (cell_centre(40), cell_centre(40), 12.0, 22.0)
    small = (cell_centre(50), cell_centre(10), 12.0, 6.0)
    run = peak_runner({0: [(20, 20, 0.6), (30, 50, 0.9)]})
    got = outcomes(run, [sample(0, (on, missed, small))], behind=[["rib", "heart", "none"]])
    assert [(o.diameter_mm, o.score, o.behind) for o in got] == [
        (14.0, pytest.approx(0.6), "rib"),
        (22.0, 0.0, "heart"),  # no candidate on it: score 0
    ]  # the 6 mm nodule is below min_mm


def test_bands_and_labels() -> None:
    items = [
        NoduleOutcome(11.0, 0.3, 0.5, "none"),
        NoduleOutcome(12.0, 0.7, 0.1, "heart"),
        NoduleOutcome(18.0, 0.7, 0.0, "heart"),
        NoduleOutcome(25.0, 0.4, 0.9, "none"),
    ]
    size = bands(items, 0.3, lambda o: o.diameter_mm, (10.0, 15.0, 31.0))
    assert [(b.label, b.n, b.hit, b.no_candidate) for b in size] == [
        ("10-15", 2, 0.5, 0.0),
        ("15-31", 2, 0.5, 0.5),
    ]
    ground = bands(items, 0.3, lambda o: o.background, (0.0, 0.5, 1.01))
    assert [(b.n, b.hit) for b in ground] == [(2, 1.0), (2, 0.0)]
    labels = by_label(items, 0.3)
    assert [(b.label, b.n, b.hit) for b in labels] == [("heart", 2, 0.0), ("none", 2, 1.0)]
    empty = bands(items, 0.3, lambda o: o.diameter_mm, (40.0, 50.0))
    assert empty[0].n == 0 and np.isnan(empty[0].hit)


def test_nodule_free_films_flagged_at_a_threshold() -> None:
    nodule = (cell_centre(20), cell_centre(20), 12.0, 14.0)
    run = peak_runner({0: [(20, 20, 0.8)], 1: [(10, 10, 0.45)], 2: [(10, 10, 0.2)], 3: []})
    samples = [sample(0, (nodule,)), sample(1, ()), sample(2, ()), sample(3, ())]
    report = evaluate(run, samples)
    assert nodule_free_flagged(report, 0.4) == (1, 3)  # film 0 has a nodule: not counted
    assert nodule_free_flagged(report, 0.1) == (2, 3)
    assert nodule_free_flagged(report, 0.9) == (0, 3)
