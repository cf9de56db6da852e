"""Lumen calibre against bone (issue 5): the carotid canal, a lumen along a bone face.

Bone barely brighter than calcium HU (650-750 HU, the synthetic fixed set's skull base
and transverse processes) against a 400 HU lumen: the blur rim between them read as
lumen, and the segmentation's mask (which spans a stenosis' waist) as full lumen, so
the internal carotid in its canal read 1.45x wide and its 77 % and 90 % stenoses 43 %
and 32 %. These phantoms are noise-free tubes; the figures in the asserts are measured.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

import inference.cta.profile as profile
from countyread.domain import Volume
from inference.cta.profile import Intensities, measure
from inference.cta.stenosis import assess

RADIUS_MM = 2.4
LUMEN_HU, TISSUE_HU, BONE_HU = 400.0, 40.0, 750.0


def _tube_in_bone(stenosis: float, face_x: float | None, spacing: float = 0.5) -> Volume:
    """A vertical lumen (x = y = 0) through a bone block between z 20 and 40 mm, with a
    6 mm long stenosis at z 30; ``face_x`` None: the block encloses the lumen (a canal),
    else the block fills x > face_x (a lumen along a bone face). Blurred 0.45 mm."""
    n, m = int(60 / spacing), int(24 / spacing)
    z = (np.arange(n) * spacing)[:, None, None]
    y = ((np.arange(m) - (m - 1) / 2) * spacing)[None, :, None]
    x = ((np.arange(m) - (m - 1) / 2) * spacing)[None, None, :]
    bump = np.clip(1 - np.abs(z - 30.0) / 3.0, 0, 1)
    r = RADIUS_MM * (1 - stenosis * (0.5 - 0.5 * np.cos(np.pi * bump)))
    lumen = np.clip((r - np.hypot(x, y)) / spacing + 0.5, 0, 1)
    across = (np.abs(x) < 9) if face_x is None else (x > face_x)
    block = (z >= 20) & (z < 40) & (np.abs(y) < 9) & across
    hu = np.where(block, BONE_HU, TISSUE_HU) * (1 - lumen) + LUMEN_HU * lumen
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-(m - 1) / 2 * spacing, -(m - 1) / 2 * spacing, 0.0]
    return Volume(np.round(ndimage.gaussian_filter(hu, 0.45 / spacing)).astype(np.int16), affine)


def _mask(pts: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """A segmentation that spans the waist and the blur rim, as the network's does."""
    return np.asarray(np.hypot(pts[..., 0], pts[..., 1]) < RADIUS_MM + 0.5)


def _measure(stenosis: float, face_x: float | None) -> tuple[float, float | None]:
    """(median calibre in the bone away from the lesion, graded % or None)."""
    vol = _tube_in_bone(stenosis, face_x)
    path = np.c_[np.zeros(120), np.zeros(120), np.linspace(2, 58, 120)]
    prof = measure(vol, path, RADIUS_MM, Intensities(LUMEN_HU, TISSUE_HU), lumen=_mask)
    z = prof.points[:, 2]
    in_bone = (np.abs(z - 30.0) > 4.0) & (z > 21.0) & (z < 39.0)
    call = assess("CCA_L", prof, free_end=False)
    return float(np.median(prof.diameter_mm[in_bone])), None if call is None else call.percent


def test_lumen_in_a_canal_reads_its_own_calibre() -> None:
    """Before: 6.0 mm for 4.8 mm (the blur rim and the mask counted as lumen)."""
    calibre, call = _measure(0.0, None)
    assert calibre == pytest.approx(2 * RADIUS_MM, abs=0.3)
    assert call is None


@pytest.mark.parametrize("stenosis", [0.875, 0.6])
def test_stenosis_in_a_canal_is_graded_within_10_points(stenosis: float) -> None:
    """Measured 80.9 % and 57.6 %; before, neither was graded at all (the waist read as
    wide as the canal's wide reference)."""
    _, call = _measure(stenosis, None)
    assert call is not None
    assert call == pytest.approx(100 * stenosis, abs=10.0)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="a lumen along a bone face reads 5.7 mm for 4.8 mm (6.2 before): the area "
    "cannot tell lumen from the bone edge's blur ramp into soft tissue, which passes "
    "through lumen HU; the rays' half-maximum edges read it right here but 0.3-0.4 mm "
    "narrow and noisy on the project phantoms (taking the narrower of the two made "
    "false 50-99 % calls on 12 of seeds 601-613)",
)
def test_lumen_along_a_bone_face_reads_its_own_calibre() -> None:
    calibre, _ = _measure(0.0, 0.0)
    assert calibre == pytest.approx(2 * RADIUS_MM, abs=0.3)


def test_bone_blur_rim_is_mixed_lumen_not_full_lumen() -> None:
    """A sample between lumen and bone HU inside a hole in bone is a lumen-bone mix; one
    darker than lumen keeps the tissue-to-lumen scale (a soft-tissue gap is no lumen)."""
    vals = np.full((1, 41, 41), BONE_HU)
    vals[0, 18:23, 18:23] = [LUMEN_HU, 575.0, 300.0, LUMEN_HU, 740.0]
    frac = np.clip((vals - TISSUE_HU) / (LUMEN_HU - TISSUE_HU), -0.5, 1.2)
    profile.bone_mixed_fraction(frac, vals, LUMEN_HU, 600.0)
    row = frac[0, 18, 18:23]
    assert row == pytest.approx([1.0, 0.5, 260 / 360, 1.0, 10 / 350], abs=1e-6)
    assert frac[0, 0, 0] == 0.0  # bone
