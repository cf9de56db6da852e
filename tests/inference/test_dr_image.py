"""DR image preparation on real DICOM files in the styles township scanners send."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest

from countyread.errors import NotAnalyzableError
from inference.dr.image import (
    WORK_MAX,
    block_reduce,
    collimation_crop,
    display_values,
    load_radiograph,
    normalise,
    pixel_geometry,
)
from training.dr.dicom import DXStyle, chest_dataset
from training.dr.synth import SynthChest, SynthConfig, make_synth_chest


@pytest.fixture(scope="module")
def chest() -> SynthChest:
    # no collimation so the styles compare pixel for pixel
    return make_synth_chest(11, SynthConfig(p_collimation=0.0))


def roundtrip(chest: SynthChest, style: DXStyle) -> pydicom.Dataset:
    buf = BytesIO()
    ds = chest_dataset(chest, 11, style)
    # the writer says R\\F for a PA film, which PS3.3 C.7.6.1.1.1 reads as mirrored; these
    # tests are about pixel values, so the film is declared in the standard display
    ds.PatientOrientation = ["L", "F"]
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(buf.getvalue()))


def test_monochrome1_is_inverted_to_the_same_picture(chest: SynthChest) -> None:
    ref = load_radiograph(roundtrip(chest, DXStyle()))
    mono1 = load_radiograph(roundtrip(chest, DXStyle(photometric="MONOCHROME1")))
    assert "MONOCHROME1 inverted" in mono1.notes
    assert "MONOCHROME1 inverted" not in ref.notes
    assert mono1.pixels.shape == ref.pixels.shape
    assert np.abs(mono1.pixels - ref.pixels).max() < 0.01
    # dense (bone, mediastinum) stays bright: the spine column is brighter than the lungs
    mid = ref.pixels.shape[1] // 2
    row = ref.pixels.shape[0] // 2
    assert mono1.pixels[row, mid] > np.median(mono1.pixels[row])


def test_presentation_lut_shape(chest: SynthChest) -> None:
    ref = load_radiograph(roundtrip(chest, DXStyle()))
    # DX style: MONOCHROME1 with INVERSE is one inversion, not two
    dx = roundtrip(chest, DXStyle(photometric="MONOCHROME1"))
    dx.PresentationLUTShape = "INVERSE"
    assert np.abs(load_radiograph(dx).pixels - ref.pixels).max() < 0.01
    flipped = roundtrip(chest, DXStyle(photometric="MONOCHROME1"))
    flipped.PhotometricInterpretation = "MONOCHROME2"
    flipped.PresentationLUTShape = "INVERSE"
    got = load_radiograph(flipped)
    assert "Presentation LUT Shape INVERSE applied" in got.notes
    assert np.abs(got.pixels - ref.pixels).max() < 0.01


def test_voi_lut_only_file_is_mapped_through_its_lut(chest: SynthChest) -> None:
    ds = roundtrip(chest, DXStyle(voi="lut", spacing="none"))
    assert "WindowCenter" not in ds and "VOILUTSequence" in ds
    ref = load_radiograph(roundtrip(chest, DXStyle()))
    got = load_radiograph(ds)
    assert "VOI LUT applied" in got.notes
    # the LUT undoes the stored gamma: without it the picture would differ a lot
    assert np.abs(got.pixels - ref.pixels).mean() < 0.01
    ds_no_lut = roundtrip(chest, DXStyle(voi="lut"))
    del ds_no_lut.VOILUTSequence
    with_lut = normalise(display_values(ds)[0])
    without = normalise(display_values(ds_no_lut)[0])
    assert np.abs(with_lut - without).mean() > 0.05


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_bit_depths_give_the_same_picture(chest: SynthChest, bits: int) -> None:
    ref = load_radiograph(roundtrip(chest, DXStyle(voi="none")))
    got = load_radiograph(roundtrip(chest, DXStyle(voi="none", bits_stored=bits)))
    assert got.pixels.shape == ref.pixels.shape
    assert np.abs(got.pixels - ref.pixels).mean() < 0.02


def test_rescale_slope_and_window_are_applied(chest: SynthChest) -> None:
    ds = roundtrip(chest, DXStyle(voi="none"))
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.WindowCenter, ds.WindowWidth = 2 * 2048 - 100, 2 * 4096
    got = load_radiograph(ds)
    ref = load_radiograph(roundtrip(chest, DXStyle(voi="none")))
    assert "window applied" in got.notes
    assert np.abs(got.pixels - ref.pixels).mean() < 0.01


def test_spacing_precedence_and_pixels_when_absent(chest: SynthChest) -> None:
    sp = round(chest.spacing_mm, 6)
    pixel = pixel_geometry(roundtrip(chest, DXStyle(spacing="pixel")))
    assert pixel.source == "PixelSpacing" and pixel.spacing_mm == pytest.approx((sp, sp))
    imager = pixel_geometry(roundtrip(chest, DXStyle(spacing="imager")))
    assert imager.source == "ImagerPixelSpacing" and imager.unit == "mm"
    assert "detector plane" in (imager.note() or "")
    magnified = pixel_geometry(roundtrip(chest, DXStyle(spacing="imager", magnification=1.1)))
    assert magnified.spacing_mm == pytest.approx((sp / 1.1, sp / 1.1))
    both = roundtrip(chest, DXStyle(spacing="pixel"))
    both.ImagerPixelSpacing = [1.0, 1.0]
    assert pixel_geometry(both).source == "PixelSpacing"
    none = pixel_geometry(roundtrip(chest, DXStyle(spacing="none")))
    assert none.spacing_mm is None and none.unit == "px"
    assert "pixels (px)" in (none.note() or "")
    bad = roundtrip(chest, DXStyle(spacing="pixel"))
    bad.PixelSpacing = ["0", "0"]
    assert pixel_geometry(bad).unit == "px"


def test_burned_in_collimation_is_cropped_and_mapped_back(chest: SynthChest) -> None:
    ds = roundtrip(chest, DXStyle(voi="none"))
    arr = ds.pixel_array.copy()
    arr[:30] = 4095  # white shutter on top
    arr[:, -25:] = 0  # black shutter on the right
    ds.PixelData = arr.tobytes()
    got = load_radiograph(ds)
    assert "collimation border cropped" in got.notes
    assert got.crop[0] == 30
    assert got.pixels.shape[1] == arr.shape[1] - 25
    # working (0, 0) is stored (30, 0)
    assert got.to_stored((0, 0))[0] == pytest.approx((30, 0))


def test_collimation_crop_leaves_a_plain_image_alone() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((200, 180)).astype(np.float32)
    assert collimation_crop(img) == (0, 200, 0, 180)


def test_very_large_matrix_is_reduced_early(chest: SynthChest) -> None:
    big = np.kron(chest.image, np.ones((7, 7), dtype=np.uint16))  # ~3.5k x 3.4k, 16 bit
    ds = roundtrip(chest, DXStyle(voi="none"))
    ds.Rows, ds.Columns = big.shape
    ds.PixelData = big.tobytes()
    got = load_radiograph(ds)
    assert got.factor == int(np.ceil(max(big.shape) / WORK_MAX))
    assert max(got.pixels.shape) <= WORK_MAX
    # stored coordinates map back into the big matrix
    r, c = got.to_stored((got.pixels.shape[0] - 1, got.pixels.shape[1] - 1))[0]
    assert big.shape[0] - got.factor <= r < big.shape[0]
    assert big.shape[1] - got.factor <= c < big.shape[1]


def test_block_reduce_means_blocks() -> None:
    a = np.arange(36, dtype=np.uint16).reshape(6, 6)
    out = block_reduce(a, 3)
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(a[:3, :3].mean())


def test_unreadable_or_unsuitable_pixels_are_not_analyzable(
    chest: SynthChest, tmp_path: Path
) -> None:
    ds = roundtrip(chest, DXStyle())
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(NotAnalyzableError, match="not grayscale"):
        load_radiograph(ds)
    small = roundtrip(chest, DXStyle())
    small.Rows = 32
    with pytest.raises(NotAnalyzableError, match="too small"):
        load_radiograph(small)
    huge = roundtrip(chest, DXStyle())
    huge.Rows, huge.Columns = 20000, 20000
    with pytest.raises(NotAnalyzableError, match="exceeds"):
        load_radiograph(huge)
    truncated = roundtrip(chest, DXStyle())
    truncated.PixelData = truncated.PixelData[:100]
    with pytest.raises(NotAnalyzableError, match="cannot be decoded"):
        load_radiograph(truncated)


def test_soft_knee_keeps_the_densest_values_apart() -> None:
    rng = np.random.default_rng(5)
    values = rng.uniform(0.0, 1000.0, (64, 64)).astype(np.float32)
    values[:3, :3] = [[1100, 1200, 1300], [1400, 1600, 1800], [2000, 2500, 4095]]
    clipped = normalise(values)
    kneed = normalise(values, knee=0.85)
    assert np.unique(clipped[:3, :3]).size == 1  # the clip flattens the top 0.5 %
    top = np.sort(kneed[:3, :3].ravel())
    assert np.all(np.diff(top) > 0) and top[-1] < 1.0  # ordered, apart, below white
    below = clipped < 0.85
    assert np.array_equal(kneed[below], clipped[below])  # nothing changes under the knee
    order = np.argsort(values.ravel(), kind="stable")
    assert np.all(np.diff(kneed.ravel()[order]) >= 0)  # monotonic
    with pytest.raises(ValueError):
        normalise(values, knee=1.0)


def test_card_names_the_knee_its_film_preparation_uses() -> None:
    from inference.dr.image import KNEE_PHRASE, card_knee

    text = "percentile scaled to [0, 1] with a " + KNEE_PHRASE.format(knee=0.85) + " (values ..."
    assert card_knee(text) == 0.85
    assert card_knee("display values, 0.5-99.5 percentile scaled to [0, 1], long side") is None
