"""Lobes from the fissures: right where the fissures are seen, unknown where they are not."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

import training.phantoms.chest_anatomy as chest_anatomy
from inference.ct_nodule.lobes import LobeModel, _eigvals_sym3, fit_lobes
from inference.ct_nodule.lungs import segment_lungs
from training.phantoms.chest_anatomy import lobe_at
from training.phantoms.ct import ChestCTConfig, CTPhantom, make_chest_ct


def _lung_points(phantom: CTPhantom, every: int = 5) -> npt.NDArray[np.float64]:
    lung = segment_lungs(phantom.volume)
    idx = np.argwhere(lung.mask)[::every] * np.asarray(lung.stride)
    return np.asarray(phantom.volume.index_to_lps(idx.astype(np.float64)))


def _agreement(phantom: CTPhantom, model: LobeModel) -> float:
    assert phantom.anatomy is not None
    pts = _lung_points(phantom)
    truth = lobe_at(*phantom.anatomy, pts)
    return float(np.mean([model.lobe_at(p) == t for p, t in zip(pts, truth, strict=True)]))


@pytest.mark.parametrize(("seed", "thickness"), [(12, 1.25), (13, 3.0)])
def test_lobes_match_the_phantom_fissures(seed: int, thickness: float) -> None:
    phantom = make_chest_ct(
        seed, ChestCTConfig.small(slice_thickness_mm=thickness, n_nodules=4, kernel="lung")
    )
    model = fit_lobes(phantom.volume, segment_lungs(phantom.volume))
    assert model.reason is None
    assert {f.name for f in model.fissures} == {
        "right_oblique",
        "right_horizontal",
        "left_oblique",
    }
    # Measured: 0.993-0.998 of lung voxels on seeds 11-13, 21, 22, 4242 (1.25-3 mm) and
    # 0.996-0.998 on held-out seeds 9000-9005, 9011; the misses lie next to a fissure.
    assert _agreement(phantom, model) >= 0.98
    for t in phantom.nodules:
        assert t.lobe is not None
        assert model.lobe_at(t.center_lps) == t.lobe, (t.center_lps, t.location)


def test_no_fissures_no_lobe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lungs with vessels and noise but no fissure: nothing is fitted, no lobe is named."""
    drawn = chest_anatomy._fissures

    def without(*args: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], np.ndarray]:
        weight, plane = drawn(*args)  # type: ignore[arg-type]
        return np.zeros_like(weight), plane

    monkeypatch.setattr(chest_anatomy, "_fissures", without)
    phantom = make_chest_ct(
        14, ChestCTConfig.small(slice_thickness_mm=1.25, n_nodules=2, kernel="sharp")
    )
    model = fit_lobes(phantom.volume, segment_lungs(phantom.volume))
    assert model.fissures == ()
    assert model.reason == "not found: right_oblique, left_oblique"
    assert all(model.lobe_at(t.center_lps) is None for t in phantom.nodules)


def test_thick_slices_give_no_lobes() -> None:
    phantom = make_chest_ct(21, ChestCTConfig.small(slice_thickness_mm=5.0, n_nodules=1))
    model = fit_lobes(phantom.volume, segment_lungs(phantom.volume))
    assert model.fissures == () and model.reason and "not resolved" in model.reason
    assert model.lobe_at(phantom.nodules[0].center_lps) is None


def test_closed_form_eigenvalues_match_lapack() -> None:
    rng = np.random.default_rng(3)
    m = rng.normal(size=(500, 3, 3))
    m = m + m.transpose(0, 2, 1)
    m[:5] = np.diag([2.0, 2.0, 2.0])  # repeated eigenvalues: the degenerate branch
    got = np.stack(_eigvals_sym3(m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], m[:, 0, 1], m[:, 0, 2],
                                 m[:, 1, 2]), axis=1)
    np.testing.assert_allclose(got, np.linalg.eigvalsh(m), atol=1e-9)
