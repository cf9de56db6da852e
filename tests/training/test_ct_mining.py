"""Hard-negative mining beyond the inference cap (``DataConfig.mine_ranks``): every negative
candidate ranked below it is stored once, scored by the reference model, and the loader
keeps the highest-scoring ones."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from inference.ct_nodule.candidates import find_candidates, make_work_grid
from inference.ct_nodule.lungs import segment_lungs
from tests.training.ct_small import small_chest_ct
from training.ct_nodule.config import DataConfig
from training.ct_nodule.dataset import CasePatches, case_patches, phantom_sites
from training.ct_nodule.train import _select
from training.phantoms import CTPhantom, NoduleSpec

SPECS = (NoduleSpec(12.0, "solid", "round", "lung"), NoduleSpec(8.0, "solid", "round", "lung"))


def _data(mine_ranks: int) -> DataConfig:
    return DataConfig(
        train_seeds=(1, 0),
        held_out_seeds=(9, 9),
        negatives_per_case=12,
        jitter_copies=1,
        mine_ranks=mine_ranks,
    )


def _score(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # a stand-in reference model: brighter patches are "harder"; never 0 (0 = unscored)
    return (2.0 + x.reshape(len(x), -1).mean(axis=1)).astype(np.float32)


@pytest.fixture(scope="module")
def phantom() -> CTPhantom:
    return small_chest_ct(SPECS)


@pytest.fixture(scope="module")
def far_negatives(phantom: CTPhantom) -> int:
    """Candidates the dataset may take as negatives: > radius + 3 mm from every nodule."""
    vol = phantom.volume
    cands = find_candidates(make_work_grid(vol, segment_lungs(vol)), max_candidates=100_000)
    sites = phantom_sites(phantom)
    t_idx = np.array([t.centre_kji for t in sites])
    t_rad = np.array([max(t.diameter_mm / 2.0, 2.0) for t in sites])
    dist = np.linalg.norm(
        (np.array([c.center_kji for c in cands])[:, None] - t_idx[None]) * np.asarray(vol.spacing),
        axis=2,
    )
    return int((dist > t_rad + 3.0).all(axis=1).sum())


@pytest.fixture(scope="module")
def mined(phantom: CTPhantom) -> CasePatches:
    return case_patches(phantom, _data(100_000), 3, _score)


def _negatives(case: CasePatches) -> npt.NDArray[np.float16]:
    return case.patches[case.labels == 0]


def test_mining_stores_every_ranked_negative_once(
    phantom: CTPhantom, mined: CasePatches, far_negatives: int
) -> None:
    base = case_patches(phantom, _data(0), 3, _score)
    assert far_negatives > 12  # more than head and tail take: mining has something to add
    assert len(_negatives(base)) == 12
    assert len(_negatives(mined)) == far_negatives
    flat = _negatives(mined).reshape(far_negatives, -1)
    assert len(np.unique(flat, axis=0)) == far_negatives  # head and tail not stored twice
    # positives are untouched by mining
    np.testing.assert_array_equal(base.patches[base.labels == 1], mined.patches[mined.labels == 1])


def test_mined_negatives_carry_scores_and_the_hardest_are_kept(mined: CasePatches) -> None:
    case = mined
    neg = np.flatnonzero(case.labels == 0)
    assert (case.scores[neg] > 0).all()
    assert (case.scores[case.labels == 1] == 0).all()
    data = _data(100_000).model_copy(
        update={"hard_negatives_per_case": 5, "max_negatives_per_case": 8}
    )
    keep = _select(case.labels, case.scores, data, seed=3)
    kept_neg = np.intersect1d(keep, neg)
    assert len(kept_neg) == 8
    top5 = neg[np.argsort(-case.scores[neg], kind="stable")][:5]
    assert set(top5) <= set(kept_neg)
