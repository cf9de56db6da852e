"""Chest CT phantom: determinism, ground-truth consistency, HU realism, nodule insertion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from countyread.domain import Volume
from training.phantoms import ChestCTConfig, CTPhantom, NoduleSpec, insert_nodules, make_chest_ct

REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
LUNG_LABELS = (1, 2, 3, 8)


@pytest.fixture(scope="module")
def mixed() -> CTPhantom:
    return make_chest_ct(11, ChestCTConfig.small(n_nodules=6, coverage_mm=200.0))


@pytest.fixture(scope="module")
def kinds() -> CTPhantom:
    specs = (
        NoduleSpec(12.0, "solid", "round", "lung"),
        NoduleSpec(14.0, "ground_glass", "round", "lung"),
        NoduleSpec(12.0, "calcified", "round", "lung"),
        NoduleSpec(18.0, "part_solid", "round", "lung", solid_part_mm=8.0),
        NoduleSpec(6.0, "solid", "round", "lung"),
        NoduleSpec(9.0, "solid", "lobulated", "juxtapleural"),
    )
    return make_chest_ct(
        5,
        ChestCTConfig.small(
            slice_thickness_mm=1.25,
            coverage_mm=150.0,
            kernel="standard",
            mas=150.0,
            nodule_specs=specs,
        ),
    )


def test_same_seed_gives_identical_case(mixed: CTPhantom) -> None:
    again = make_chest_ct(11, ChestCTConfig.small(n_nodules=6, coverage_mm=200.0))
    assert np.array_equal(again.volume.array, mixed.volume.array)
    assert np.array_equal(again.labels, mixed.labels)
    assert np.array_equal(again.instance_mask, mixed.instance_mask)
    assert again.nodules == mixed.nodules
    assert np.array_equal(again.volume.affine, mixed.volume.affine)
    assert again.volume.sop_instance_uids == mixed.volume.sop_instance_uids


def test_other_seed_gives_other_case(mixed: CTPhantom) -> None:
    other = make_chest_ct(12, ChestCTConfig.small(n_nodules=6, coverage_mm=200.0))
    assert other.volume.series_uid != mixed.volume.series_uid
    n = min(other.volume.shape[0], mixed.volume.shape[0])
    assert not np.array_equal(other.volume.array[:n], mixed.volume.array[:n])


def test_geometry_is_dicom_axial_lps(mixed: CTPhantom) -> None:
    vol = mixed.volume
    assert vol.array.dtype == np.int16
    assert np.allclose(vol.direction, np.eye(3))  # columns +x (left), rows +y (post), slices +z
    ps = mixed.acquisition.pixel_spacing_mm
    assert vol.spacing == pytest.approx((mixed.acquisition.slice_thickness_mm, ps, ps))
    # The heart lies anterior and to the patient's left of the spine.
    heart = np.argwhere(mixed.labels == 6).mean(axis=0)
    bone_rows = np.argwhere(mixed.labels == 5)
    spine = bone_rows[np.abs(bone_rows[:, 2] - vol.shape[2] / 2) < 10].mean(axis=0)
    h, s = vol.index_to_lps(heart), vol.index_to_lps(spine)
    assert h[1] < s[1] - 30  # anterior has smaller y
    assert h[0] > s[0]  # patient left has larger x


def test_truth_centre_is_mask_centroid(mixed: CTPhantom) -> None:
    assert len(mixed.nodules) == 6
    spacing = np.array(mixed.volume.spacing)[::-1]  # x, y, z
    for n in mixed.nodules:
        mask = mixed.instance_mask == n.index + 1
        assert mask.any()
        centroid = mixed.volume.index_to_lps(np.argwhere(mask).mean(axis=0))
        # Within a voxel as specified; in practice within 0.3 of one, so 0.4 catches
        # a half-slice shift between the drawn and the reported geometry.
        assert np.all(np.abs(centroid - np.array(n.center_lps)) <= 0.4 * spacing), n


def test_round_nodule_size_matches_spec_and_mask(kinds: CTPhantom) -> None:
    vox = float(np.prod(kinds.volume.spacing))
    for n in kinds.nodules:
        if n.shape != "round" or n.kind == "part_solid":
            continue
        sphere_d = (6.0 * float((kinds.instance_mask == n.index + 1).sum()) * vox / np.pi) ** (
            1 / 3
        )
        assert abs(n.mean_diameter_mm - sphere_d) <= 1.5, n
    sizes = sorted(
        n.mean_diameter_mm for n in kinds.nodules if n.kind == "solid" and n.shape == "round"
    )
    assert sizes[0] == pytest.approx(6.0, abs=1.0)
    assert sizes[1] == pytest.approx(12.0, abs=1.0)


def test_nodule_hu_follows_kind(kinds: CTPhantom) -> None:
    img = kinds.volume.array
    by_kind = {}
    for n in kinds.nodules:
        core = ndimage.binary_erosion(kinds.instance_mask == n.index + 1, iterations=1)
        by_kind.setdefault(n.kind, []).append(float(np.median(img[core])))
    assert all(-60 <= v <= 100 for v in by_kind["solid"]), by_kind
    assert all(-700 <= v <= -350 for v in by_kind["ground_glass"]), by_kind
    assert all(v > 200 for v in by_kind["calcified"]), by_kind
    ps = next(n for n in kinds.nodules if n.kind == "part_solid")
    assert ps.solid_part_mm is not None and 5.0 <= ps.solid_part_mm <= 10.0
    vals = img[kinds.instance_mask == ps.index + 1]
    assert np.percentile(vals, 95) > -150 and np.median(vals) < -200


def test_lungs_vessels_and_fissures_have_realistic_hu(kinds: CTPhantom) -> None:
    img, lab = kinds.volume.array, kinds.labels
    for side in (1, 2):
        assert -900 <= np.median(img[lab == side]) <= -780
    lung = np.isin(lab, LUNG_LABELS)
    vessels = (lab == 3) & ndimage.binary_erosion(lung, iterations=2)
    frac = vessels.sum() / lung.sum()
    assert 0.02 <= frac <= 0.25, frac
    assert np.median(img[vessels]) > -250
    # Connected trees: one 26-connected system (through the hila) holds nearly all vessel
    # voxels, although each slice cuts it into many pieces.
    comp, _ = ndimage.label(lab == 3, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(comp.ravel())[1:]
    assert sizes.max() > 0.9 * sizes.sum()
    assert np.mean([ndimage.label(s)[1] for s in (lab == 3)]) > 20


def test_juxtapleural_nodule_touches_the_chest_wall(kinds: CTPhantom) -> None:
    jp = [n for n in kinds.nodules if n.location == "juxtapleural"]
    assert jp
    for n in jp:
        ring = ndimage.binary_dilation(kinds.instance_mask == n.index + 1, iterations=2)
        assert (~np.isin(kinds.labels[ring], LUNG_LABELS)).any()


def test_every_kind_shape_and_location_can_be_made() -> None:
    specs = (
        NoduleSpec(8.0, "solid", "spiculated", "lung"),
        NoduleSpec(7.0, "solid", "round", "perifissural"),
        NoduleSpec(40.0, "solid", "lobulated", "lung"),
    )
    ph = make_chest_ct(21, ChestCTConfig.small(coverage_mm=240.0, nodule_specs=specs))
    got = {(n.shape, n.location) for n in ph.nodules}
    assert ("spiculated", "lung") in got and ("round", "perifissural") in got
    assert any(n.is_mass for n in ph.nodules)


def test_nodule_free_case() -> None:
    ph = make_chest_ct(3, ChestCTConfig.small(n_nodules=0, coverage_mm=100.0))
    assert ph.nodules == ()
    assert not ph.instance_mask.any()
    assert not (ph.labels == 8).any()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="nodule_size_mm"):
        ChestCTConfig(nodule_size_mm=(10.0, 5.0))
    with pytest.raises(ValueError, match="diameter_mm"):
        NoduleSpec(0.5)


def _crude_lung_mask(hu: np.ndarray) -> np.ndarray:
    air = hu < -400
    labels, _ = ndimage.label(air)
    border = np.unique(
        np.r_[
            labels[:, 0].ravel(),
            labels[:, -1].ravel(),
            labels[:, :, 0].ravel(),
            labels[:, :, -1].ravel(),
        ]
    )
    return air & ~np.isin(labels, border) & (hu > -980)


def test_insert_nodules_into_a_phantom_without_nodules() -> None:
    base = make_chest_ct(
        4, ChestCTConfig.small(n_nodules=0, coverage_mm=120.0, slice_thickness_mm=1.25)
    )
    lungs = np.isin(base.labels, (1, 2))
    specs = (NoduleSpec(10.0, "solid"), NoduleSpec(12.0, "ground_glass"))
    vol, inst, truths = insert_nodules(base.volume, lungs, specs, seed=9)
    assert len(truths) == 2 and inst.max() == 2
    changed = vol.array != base.volume.array
    assert changed.any() and not changed[~ndimage.binary_dilation(inst > 0, iterations=3)].any()
    again = insert_nodules(base.volume, lungs, specs, seed=9)
    assert np.array_equal(again[0].array, vol.array) and again[2] == truths


def test_insert_nodules_into_real_ct() -> None:
    series = REALDATA / "lung-ct-A0002" / "series-B40f"
    if not series.is_dir():
        pytest.skip(f"real CT not present at {series}")
    dss = sorted(
        (pydicom.dcmread(p) for p in series.glob("*.dcm")),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    hu = np.stack(
        [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss]
    ).astype(np.int16)
    ps = [float(v) for v in dss[0].PixelSpacing]
    dz = float(dss[1].ImagePositionPatient[2]) - float(dss[0].ImagePositionPatient[2])
    aff = np.eye(4)
    aff[0, 0], aff[1, 1], aff[2, 2] = ps[1], ps[0], dz
    aff[:3, 3] = [float(v) for v in dss[0].ImagePositionPatient]
    vol = Volume(hu, aff)
    lungs = _crude_lung_mask(hu)
    assert lungs.sum() > 10_000
    out, inst, truths = insert_nodules(
        vol, lungs, (NoduleSpec(14.0, "solid"), NoduleSpec(16.0, "ground_glass")), seed=2
    )
    assert len(truths) == 2
    for t in truths:
        k = np.round(out.lps_to_index(t.center_lps)).astype(int)
        assert inst[tuple(k)] == t.index + 1
        assert lungs[inst == t.index + 1].mean() > 0.9
    solid = next(t for t in truths if t.kind == "solid")
    assert -150 < solid.mean_hu < 120
