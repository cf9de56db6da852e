"""Patient Orientation on radiographs: the film is read in the standard display and every
position maps back to the stored matrix (PS3.3 C.7.6.1.1.1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydicom.dataset import Dataset

from inference.dr.image import PixelGeometry, Radiograph, square_pixels
from inference.dr.orientation import Reorientation, reorientation

TURNS = [Reorientation(t, fr, fc) for t, fr, fc in itertools.product([False, True], repeat=3)]


@pytest.mark.parametrize("turn", TURNS, ids=repr)
def test_points_follow_the_pixels(turn: Reorientation) -> None:
    source = np.arange(5 * 7).reshape(5, 7)
    standard = turn.apply(source)
    pts = np.array(
        [(r, c) for r in range(standard.shape[0]) for c in range(standard.shape[1])],
        dtype=np.float64,
    )
    back = turn.to_source(pts, standard.shape).astype(int)
    assert np.array_equal(standard.ravel(), source[back[:, 0], back[:, 1]])
    assert np.allclose(turn.to_standard(back.astype(np.float64), standard.shape), pts)


def _ds(*values: str) -> Dataset:
    ds = Dataset()
    if values:
        ds.PatientOrientation = list(values)
    return ds


@pytest.mark.parametrize(
    ("values", "want"),
    [
        (("L", "F"), Reorientation()),
        (("R", "F"), Reorientation(flip_cols=True)),
        (("R", "H"), Reorientation(flip_rows=True, flip_cols=True)),
        (("H", "L"), Reorientation(transpose=True, flip_rows=True)),
        (("F", "R"), Reorientation(transpose=True, flip_cols=True)),
        (("LF", "FR"), Reorientation()),  # oblique: the first letter governs
    ],
)
def test_orientation_values(values: tuple[str, str], want: Reorientation) -> None:
    turn, note = reorientation(_ds(*values))
    assert turn == want
    assert (note is None) == want.identity


def test_unknown_or_lateral_orientation_is_said() -> None:
    turn, note = reorientation(_ds())
    assert turn.identity and turn.side_known and "assumed standard display" in (note or "")
    turn, note = reorientation(_ds("A", "F"))
    assert turn.identity and not turn.side_known and "side not reported" in (note or "")


def test_rotated_film_maps_back_and_knows_the_side() -> None:
    """A film stored turned a quarter clockwise (``H\\L``), reduced by 2 and cropped."""
    turn = Reorientation(transpose=True, flip_rows=True)
    stored = (200, 100)  # rows x columns as stored; standard is 50 x 100 after / 2
    rad = Radiograph(
        np.zeros((46, 96), np.float32),
        2,
        (2, 3),
        stored,
        PixelGeometry(None, "none"),
        (),
        turn=turn,
        upright_shape=(50, 100),
    )
    for rc in [(0.5, 0.5), (10.0, 80.0), (199.5, 99.5)]:
        assert rad.to_stored(rad.to_working(rc))[0] == pytest.approx(rc)
    # stored top rows are the patient's right after the quarter turn back
    assert rad.side((10.0, 50.0)) == "right"
    assert rad.side((190.0, 50.0)) == "left"


def test_non_square_pixels_are_made_square_within_reason() -> None:
    values = np.zeros((100, 60), np.float32)
    out, stretch = square_pixels(values, PixelGeometry((0.2, 0.3), "PixelSpacing"))
    assert out.shape == (100, 90) and stretch == pytest.approx((1.0, 1.5))
    # 0.1 x 10 mm is a broken header: resampling it would make a 100-fold matrix
    out, stretch = square_pixels(values, PixelGeometry((0.1, 10.0), "PixelSpacing"))
    assert out.shape == values.shape and stretch == (1.0, 1.0)
    out, stretch = square_pixels(values, PixelGeometry(None, "none"))
    assert out is values


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_written_films_are_in_the_standard_display(view: str) -> None:
    """The DX writer stores the synthetic chest as drawn (heart on the image right), so PA
    and AP films alike say ``L\\F`` and are read as stored, patient's left on the right."""
    from training.dr.dicom import DXStyle, chest_dataset
    from training.dr.synth import SynthConfig, make_synth_chest

    ds = chest_dataset(make_synth_chest(3, SynthConfig(matrix=(200, 200))), 3, DXStyle(view=view))
    assert list(ds.PatientOrientation) == ["L", "F"]
    turn, note = reorientation(ds)
    assert turn.identity and turn.side_known and note is None
    rad = Radiograph(
        np.zeros(ds.pixel_array.shape, np.float32),
        1,
        (0, 0),
        ds.pixel_array.shape,
        PixelGeometry(None, "none"),
        (),
        turn=turn,
    )
    width = ds.pixel_array.shape[1]
    assert rad.side((50.0, width * 0.8)) == "left" and rad.side((50.0, width * 0.2)) == "right"
