"""Candidate generation on hand-made 1 mm grids: blobs on vessels, vessels alone."""

from __future__ import annotations

import numpy as np

from inference.ct_nodule.candidates import MIN_PROMINENCE, WorkGrid, find_candidates

N = 64


def _grid(*, sphere: bool, vessel: bool) -> WorkGrid:
    zz, yy, xx = np.mgrid[:N, :N, :N].astype(np.float32)
    hu = np.full((N, N, N), -900.0, np.float32)
    if vessel:  # a 5 mm vessel along the first axis, through the sphere's centre
        hu[(yy - 32) ** 2 + (xx - 32) ** 2 <= 2.5**2] = 30.0
    if sphere:  # a 12 mm nodule hanging on it
        hu[(zz - 32) ** 2 + (yy - 32) ** 2 + (xx - 32) ** 2 <= 6.0**2] = 30.0
    return WorkGrid(hu, np.ones_like(hu, dtype=bool), (0, 0, 0), (1.0, 1.0, 1.0))


def test_nodule_on_a_vessel_is_a_prominent_candidate() -> None:
    cands = find_candidates(_grid(sphere=True, vessel=True))
    near = [c for c in cands if np.linalg.norm(np.subtract(c.center_kji, 32)) <= 3.0]
    assert near, [c.center_kji for c in cands[:5]]
    best = max(near, key=lambda c: c.radius_mm)
    assert best.radius_mm >= 4.0 and best.prominence >= MIN_PROMINENCE
    assert cands[0] is best or cands[0].prominence >= MIN_PROMINENCE


def test_vessel_ridge_is_not_prominent() -> None:
    cands = find_candidates(_grid(sphere=False, vessel=True))
    inner = [c for c in cands if 12 <= c.center_kji[0] <= N - 12]  # away from the ends
    assert inner and all(c.prominence < MIN_PROMINENCE for c in inner)
