"""Canonical orientation: every axis-aligned layout maps to one array, positions kept."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from countyread.domain import Volume
from inference.ct_nodule.pipeline import SourceGrid
from inference.orient import plan, to_canonical

SPACING = (2.5, 0.8, 0.7)  # slice, row, column (mm): distinct, so a wrong axis shows
SHAPE = (5, 6, 7)


def _reference() -> Volume:
    """The canonical layout itself: slices +z, rows +y, columns +x (LPS)."""
    rng = np.random.default_rng(11)
    array = rng.integers(-1000, 1000, SHAPE).astype(np.int16)
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    affine[:3, 3] = (-30.0, -20.0, -100.0)
    uids = tuple(f"1.2.3.{k}" for k in range(SHAPE[0]))
    return Volume(array, affine, "1.2", "1.2.9", uids)


def _relaid(ref: Volume, perm: tuple[int, ...], flips: tuple[bool, ...]) -> Volume:
    """The same voxels stored in another order: source axis b = reference axis perm[b]."""
    array = np.flip(ref.array, axis=tuple(a for a in range(3) if flips[a]))
    array = np.ascontiguousarray(np.transpose(array, perm))
    affine = np.eye(4)
    origin = ref.origin.copy()
    for b in range(3):
        step = ref.affine[:3, 2 - perm[b]].copy()
        if flips[perm[b]]:
            origin += step * (ref.shape[perm[b]] - 1)
            step = -step
        affine[:3, 2 - b] = step
    affine[:3, 3] = origin
    uids = ref.sop_instance_uids
    uids = (uids[::-1] if flips[0] else uids) if perm[0] == 0 else ()
    return Volume(array, affine, "1.2", "1.2.9", uids)


LAYOUTS = [
    (p, f)
    for p in itertools.permutations(range(3))
    for f in itertools.product((False, True), repeat=3)
]


@pytest.mark.parametrize(("perm", "flips"), LAYOUTS, ids=lambda v: str(v))
def test_every_layout_becomes_the_reference(perm: tuple[int, ...], flips: tuple[bool, ...]) -> None:
    ref = _reference()
    src = _relaid(ref, perm, flips)
    # the test's own relayout keeps positions: same voxel, same LPS
    k = (1, 2, 3)
    src_idx = [0, 0, 0]
    for b in range(3):
        a = perm[b]
        src_idx[b] = ref.shape[a] - 1 - k[a] if flips[a] else k[a]
    assert src.array[tuple(src_idx)] == ref.array[k]
    np.testing.assert_allclose(src.index_to_lps(src_idx), ref.index_to_lps(k))

    canon, turn = to_canonical(src)
    np.testing.assert_array_equal(canon.array, ref.array)
    np.testing.assert_allclose(canon.affine, ref.affine, atol=1e-9)
    assert turn.is_identity == (perm == (0, 1, 2) and not any(flips))
    if perm[0] == 0:
        assert canon.sop_instance_uids == ref.sop_instance_uids
    # back to the source grid: points and cropped masks
    pts = np.array([[0.0, 0.0, 0.0], [4.0, 5.0, 6.0], [1.5, 2.25, 3.0]])
    back = turn.to_source(pts)
    np.testing.assert_allclose(src.index_to_lps(back), canon.index_to_lps(pts), atol=1e-9)
    box = (slice(1, 3), slice(2, 5), slice(0, 4))
    mask = np.zeros((2, 3, 4), dtype=bool)
    mask[0, 1, 2] = mask[1, 2, 3] = mask[1, 0, 0] = True
    sbox, smask = turn.crop_to_source(box, mask)
    full = np.zeros(src.shape, dtype=bool)
    full[sbox] = smask
    want = canon.index_to_lps(np.argwhere(mask) + [b.start for b in box])
    got = src.index_to_lps(np.argwhere(full))
    assert sorted(map(tuple, np.round(got, 6))) == sorted(map(tuple, np.round(want, 6)))


def test_reversal_is_a_view_and_permutation_one_copy() -> None:
    ref = _reference()
    flipped = _relaid(ref, (0, 1, 2), (True, False, True))
    canon, _ = to_canonical(flipped)
    assert np.shares_memory(canon.array, flipped.array)  # no copy at all
    swapped = _relaid(ref, (0, 2, 1), (False, True, False))
    canon, _ = to_canonical(swapped)
    assert not np.shares_memory(canon.array, swapped.array)
    assert canon.array.flags.c_contiguous
    same, turn = to_canonical(ref)
    assert same is ref and turn.is_identity and turn.describe() == ""


def test_oblique_stack_goes_to_the_nearest_layout() -> None:
    """Feet-first with a 12 deg gantry tilt: rows -x, columns tilted in y-z."""
    t = np.radians(12.0)
    row, col = np.array([-1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), np.sin(t)])
    normal = np.cross(row, col)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * 0.7, col * 0.7, normal * 2.5
    turn = plan(affine, SHAPE)
    assert turn.perm == (0, 1, 2)
    assert turn.flip == (True, False, True)  # normal points to -z; columns run right
    assert turn.describe() == "slices reversed, columns reversed"


def test_key_slice_label_names_the_original_image() -> None:
    turn = plan(np.diag([0.7, 0.7, -2.5, 1.0]), (4, 8, 8))  # slices reversed
    uids = ("1.1", "1.2", "1.2", "1.3")  # a gap filled from instance 1.2
    grid = SourceGrid(np.eye(4), uids, (7, 8, 8, 9), turn)
    assert [grid.image_label(k) for k in range(4)] == ["image 7", "image 8", "image 8", "image 9"]
    # Instance Number missing (0) or repeated: the instance's place in the series instead
    unnumbered = SourceGrid(np.eye(4), uids, (0, 0, 0, 0), turn)
    assert unnumbered.image_label(3) == "slice 3/3"
    repeated = SourceGrid(np.eye(4), uids, (1, 1, 1, 1), turn)
    assert repeated.image_label(1) == "slice 2/3"
