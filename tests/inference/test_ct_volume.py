"""Volume assembly: each broken-geometry case gives the documented result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from countyread.errors import NotAnalyzableError
from inference.volume import load_volume
from tests.inference.ct_series import SPACING, write_multiframe, write_series

Z = [float(z) for z in range(12)]


def _slice_hu(volume_array: np.ndarray) -> np.ndarray:
    return volume_array[:, 8, 8].astype(float)


def test_shuffled_files_are_sorted_along_the_normal(tmp_path: Path) -> None:
    order = [5, 2, 11, 0, 7, 1, 9, 3, 10, 4, 8, 6]
    paths = write_series(tmp_path, Z, order=order)
    loaded = load_volume(paths)
    vol = loaded.volume
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(_slice_hu(vol.array), 100 * np.arange(12))
    assert vol.spacing == pytest.approx((1.0, SPACING, SPACING))
    np.testing.assert_allclose(vol.index_to_lps([11, 0, 0]), [-6.0, -6.0, 11.0])
    assert loaded.notes == ()
    assert len(set(vol.sop_instance_uids)) == 12
    assert loaded.interpolated == ()
    assert loaded.instance_numbers == tuple(range(1, 13))


def test_reversed_z_order_still_ascends(tmp_path: Path) -> None:
    paths = write_series(tmp_path, Z[::-1])
    vol = load_volume(paths).volume
    # slice 0 is the most inferior; its value came from file index 11
    np.testing.assert_array_equal(_slice_hu(vol.array), 100 * np.arange(12)[::-1])
    assert vol.affine[2, 2] == pytest.approx(1.0)


def test_missing_slice_is_interpolated_and_noted(tmp_path: Path) -> None:
    z = [v for v in Z if v != 6.0]
    paths = write_series(tmp_path, z)
    loaded = load_volume(paths)
    assert loaded.volume.shape[0] == 12
    assert any("1 missing slice" in n for n in loaded.notes)
    hu = _slice_hu(loaded.volume.array)
    assert hu[6] == pytest.approx((hu[5] + hu[7]) / 2, abs=1)
    # the made-up slice is listed, and named after its nearest acquired neighbour
    assert loaded.interpolated == (6,)
    uids = loaded.volume.sop_instance_uids
    assert uids[6] in (uids[5], uids[7]) and len(set(uids)) == 11
    assert loaded.instance_numbers[5:8] in ((6, 6, 7), (6, 7, 7))  # files keep k + 1


def test_two_slice_gap_lists_both_made_up_slices(tmp_path: Path) -> None:
    z = [v for v in Z if v not in (4.0, 5.0)]
    loaded = load_volume(write_series(tmp_path, z))
    assert loaded.interpolated == (4, 5)
    assert any("2 missing slice" in n for n in loaded.notes)


def test_large_gap_is_refused(tmp_path: Path) -> None:
    z = Z[:5] + [v + 20 for v in Z[5:]]
    with pytest.raises(NotAnalyzableError, match="missing slices"):
        load_volume(write_series(tmp_path, z))


def test_uneven_spacing_is_resampled(tmp_path: Path) -> None:
    z = [0, 1, 2, 3, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5]
    loaded = load_volume(write_series(tmp_path, z))
    assert any("resampled to an even 1.00 mm" in n for n in loaded.notes)
    assert loaded.volume.spacing[0] == pytest.approx(1.0)
    # half a step off the grid everywhere, but no gap: no slice counts as made up
    assert loaded.interpolated == ()


def test_gantry_tilt_is_corrected(tmp_path: Path) -> None:
    # each slice is displaced 0.8 mm (one pixel) posteriorly per mm of z: tilt ~38 deg
    with pytest.raises(NotAnalyzableError, match="gantry tilt"):
        load_volume(write_series(tmp_path / "steep", Z, tilt_y_per_mm=0.8))
    # 0.2 mm per mm (~11 deg) is corrected by shifting slices onto an orthogonal grid
    loaded = load_volume(write_series(tmp_path / "mild", Z, tilt_y_per_mm=0.2))
    assert any("gantry tilt 11.3 deg" in n for n in loaded.notes)
    vol = loaded.volume
    # the orthogonal grid keeps slice 0's origin for every slice
    np.testing.assert_allclose(vol.index_to_lps([11, 0, 0]), [-6.0, -6.0, 11.0])
    # slice 11 was acquired 2.2 mm posterior: its first ~3 rows are now outside the field
    assert vol.array[11, 0, 8] == -1024
    assert vol.array[11, 8, 8] == 1100


def test_a_few_other_orientations_are_dropped(tmp_path: Path) -> None:
    oris = [[1, 0, 0, 0, 1, 0]] * 12
    oris[3] = [1, 0, 0, 0, 0, -1]  # a coronal localiser inside the series
    loaded = load_volume(write_series(tmp_path, Z, orientations=oris))
    assert any("1 instance(s) of another orientation" in n for n in loaded.notes)
    # the dropped position leaves a one-slice hole, filled like a missing slice
    assert any("1 missing slice" in n for n in loaded.notes)
    assert loaded.volume.shape[0] == 12


def test_mixed_orientations_are_refused(tmp_path: Path) -> None:
    oris = [[1, 0, 0, 0, 1, 0]] * 6 + [[1, 0, 0, 0, 0, -1]] * 6
    with pytest.raises(NotAnalyzableError, match="mixed orientations"):
        load_volume(write_series(tmp_path, Z, orientations=oris))


def test_too_few_slices(tmp_path: Path) -> None:
    with pytest.raises(NotAnalyzableError, match="only 3 slices"):
        load_volume(write_series(tmp_path, Z[:3]))


def test_enhanced_multiframe(tmp_path: Path) -> None:
    path = write_multiframe(tmp_path, Z)
    vol = load_volume([path]).volume
    np.testing.assert_array_equal(_slice_hu(vol.array), 100 * np.arange(12))
    assert vol.spacing[0] == pytest.approx(1.0)
