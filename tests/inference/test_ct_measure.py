"""CT nodule measurement stages on small synthetic volumes: lung mask on a clipped field of
view, solid part versus a vessel at the rim, lentiform (perifissural) shape, and the
refit of a detection's mask with the shipped network."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume
from inference.ct_nodule.detector import Detection
from inference.ct_nodule.lungs import segment_lungs
from inference.ct_nodule.measure import flatness, measure
from inference.ct_nodule.refine import refit
from inference.ct_nodule.rules import NoduleType
from models.registry import ModelRegistry
from training.ct_nodule.evaluate import onnx_runner

SPACING = (1.0, 1.0, 1.0)


def _ball(
    shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]
) -> npt.NDArray[np.bool_]:
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    q = sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii, strict=True))
    return np.asarray(q <= 1.0)


def _affine(spacing: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    a = np.eye(4)
    a[0, 0], a[1, 1], a[2, 2] = spacing[2], spacing[1], spacing[0]
    return a


def test_lung_clipped_by_a_narrow_field_of_view_is_still_found() -> None:
    """A patient wider than the field of view: body tissue reaches both column borders,
    room air only in front and behind, and the right lung runs out of the image."""
    shape = (40, 64, 64)
    hu = np.full(shape, 40, dtype=np.int16)
    hu[:, :6] = hu[:, -6:] = -1000  # room air in front of and behind the patient
    lung_r = _ball(shape, (20, 32, 13), (30, 18, 14))  # crosses column 0
    lung_l = _ball(shape, (20, 32, 46), (30, 18, 12))
    hu[lung_r | lung_l] = -850
    lung = segment_lungs(Volume(hu, _affine((2.5, 2.5, 2.5))))
    assert lung.volume_ml > 100.0
    covered = lung.contains(np.argwhere(lung_r)[::50].astype(np.float64))
    assert covered.mean() > 0.9


def _ggn(
    shape: tuple[int, int, int], radius: float
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.bool_]]:
    rng = np.random.default_rng(3)
    hu = (-850 + rng.normal(0, 15, shape)).astype(np.float32)
    c = tuple(n / 2 for n in shape)
    nodule = _ball(shape, c, (radius,) * 3)
    hu[nodule] = -550 + rng.normal(0, 15, int(nodule.sum()))
    return hu.astype(np.int16), nodule


def test_vessel_meeting_a_ground_glass_rim_is_not_a_solid_part() -> None:
    hu, nodule = _ggn((32, 32, 32), 7.0)
    # a 3 mm vessel that ends on the nodule's rim (the ground glass covers it inside)
    zz, yy, xx = np.indices(hu.shape)
    vessel = ((yy - 16) ** 2 + (zz - 16) ** 2 <= 2.25) & (xx >= 16 + 5) & ~nodule
    vessel |= ((yy - 16) ** 2 + (zz - 16) ** 2 <= 2.25) & (xx >= 16 + 5) & (xx <= 16 + 7)
    hu[vessel] = 40
    m = measure(nodule, hu, SPACING)
    assert m.type is NoduleType.GROUND_GLASS, m


def test_solid_core_makes_a_part_solid_nodule() -> None:
    hu, nodule = _ggn((32, 32, 32), 7.0)
    core = _ball(hu.shape, (16, 16, 17), (3.0, 3.0, 3.0))
    hu[core] = 30
    m = measure(nodule, hu, SPACING)
    assert m.type is NoduleType.PART_SOLID, m
    assert 4.0 <= m.solid_part_mm <= 8.0


def test_lentiform_nodule_is_flat_and_a_round_one_is_not() -> None:
    shape = (24, 32, 32)
    lens = _ball(shape, (12, 16, 16), (2.5, 7.0, 6.0))
    round_ = _ball(shape, (12, 16, 16), (5.0, 5.0, 4.6))
    assert flatness(lens, SPACING) < 0.6
    assert flatness(round_, SPACING) > 0.85


def test_refit_recentres_an_off_centre_mask_on_the_nodule() -> None:
    """A first mask cut off-centre (as a depth peak beside a vessel gives) is refit to
    the whole 10 mm solid nodule by the shipped network."""
    shape = (48, 48, 48)
    rng = np.random.default_rng(5)
    hu = (-850 + rng.normal(0, 20, shape)).astype(np.float32)
    nodule = _ball(shape, (24, 24, 24), (5.0, 5.0, 5.0))
    hu[nodule] = 35 + rng.normal(0, 10, int(nodule.sum()))
    volume = Volume(hu.astype(np.int16), _affine(SPACING))
    first = nodule & _ball(shape, (24, 24, 27), (3.0, 3.0, 3.0))
    box = (slice(18, 32), slice(18, 32), slice(18, 32))
    det = Detection(0.999, box, first[box], (24.0, 24.0, 26.5))
    artifact = ModelRegistry().load("ct_nodule")
    (out,) = refit(volume, [det], onnx_runner(artifact.directory, threads=1))
    full = np.zeros(shape, dtype=bool)
    full[out.box] = out.mask
    assert (full & nodule).sum() >= 0.8 * nodule.sum()
    assert (full & ~nodule).sum() <= 0.5 * nodule.sum()
    assert abs(out.center_kji[2] - 24.0) < 1.0
    m = measure(out.mask, volume.array[out.box], SPACING)
    assert abs(m.axes.mean_mm - 10.0) <= 1.5, m.axes


def _strands(
    hu: npt.NDArray[np.int16], radius: float, tilt_deg: float, value: int = -560
) -> npt.NDArray[np.int16]:
    """Six thin (0.8 mm) 7 mm strands leaving a ball at the grid's centre, each tilted
    ``tilt_deg`` from the radial direction (0: a spicule aimed at the centre)."""
    out = hu.copy()
    c = np.array([n / 2 for n in hu.shape])
    pts = np.indices(hu.shape).reshape(3, -1).T.astype(np.float64)
    dirs = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    sides = [(0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
    t = np.deg2rad(tilt_deg)
    for d, s in zip(dirs, sides, strict=True):
        dv, sv = np.asarray(d, float), np.asarray(s, float)
        start = c + radius * dv
        e = np.cos(t) * dv + np.sin(t) * sv
        rel = pts - start
        along = np.clip(rel @ e, 0.0, 7.0)
        near = np.linalg.norm(rel - along[:, None] * e, axis=1) <= 0.8
        out.reshape(-1)[near & (np.linalg.norm(pts - c, axis=1) > radius)] = value
    return out


def test_strands_that_miss_a_ground_glass_nodules_centre_are_not_spicules() -> None:
    """Issue 4: vessels grazing a large round ground-glass nodule, tilted 40 degrees off
    radial (inside the SPICULE_COS cone), made it spiculated and stretched its long axis
    to their ends; strands aimed at its centre still make it spiculated."""
    hu, nodule = _ggn((48, 48, 48), 9.0)
    grazing = measure(nodule, _strands(hu, 9.0, 40.0), SPACING)
    assert grazing.margin != "spiculated", grazing
    assert abs(grazing.axes.mean_mm - 19.0) <= 1.5, grazing
    aimed = measure(nodule, _strands(hu, 9.0, 0.0), SPACING)
    assert aimed.margin == "spiculated", aimed
