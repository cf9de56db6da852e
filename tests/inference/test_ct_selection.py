"""Declarative series selection: the chosen series and the reason for every other."""

from __future__ import annotations

from pathlib import Path

import pytest

from countyread.errors import NotAnalyzableError
from inference.selection import SelectionRules, SeriesHeader, read_series_header, select_series
from tests.inference.ct_series import write_series

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
RULES = SelectionRules()


def _h(
    uid: str,
    *,
    thickness: float = 1.0,
    kernel: str = "B70f",
    n: int = 200,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    orientation: tuple[float, ...] = AXIAL,
    description: str = "Thorax",
    modality: str = "CT",
    contrast: str = "",
) -> SeriesHeader:
    return SeriesHeader(
        uid,
        (),
        modality,
        image_type,
        orientation,
        thickness,
        kernel,
        description,
        "CHEST",
        contrast,
        n,
    )


def test_thin_lung_kernel_wins_and_others_are_explained() -> None:
    choice = select_series(
        [
            _h("1", thickness=5.0, kernel="B31f"),
            _h("2", thickness=1.0, kernel="B31f"),
            _h("3", thickness=1.0, kernel="B70f"),
            _h("4", n=2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")),
            _h("5", image_type=("DERIVED", "SECONDARY", "AXIAL")),
            _h("6", orientation=CORONAL),
            _h("7", modality="PR"),
            _h("8", thickness=0.625, kernel="B31f", contrast="IOPAMIDOL"),
        ],
        RULES,
    )
    assert choice.chosen.series_uid == "3"
    why = dict(choice.rejected)
    assert why["1"] == "thicker than 2.5 mm"
    assert why["2"] == "not a lung kernel"
    assert why["4"] == "localiser or derived display series"
    assert why["5"] == "image type DERIVED (not ORIGINAL)"
    assert why["6"] == "not axial"
    assert why["7"] == "modality PR"
    assert why["8"] == "not a lung kernel"
    assert "analysed series 3" in choice.explanation()


def test_thick_series_are_allowed_up_to_the_limit_but_ranked_last() -> None:
    choice = select_series([_h("a", thickness=8.0), _h("b", thickness=12.0)], RULES)
    assert choice.chosen.series_uid == "a"
    assert dict(choice.rejected)["b"] == "slice thickness 12 mm > 10 mm"


def test_nothing_suitable_or_angiography_only() -> None:
    with pytest.raises(NotAnalyzableError, match="no suitable CT series: not axial"):
        select_series([_h("c", orientation=CORONAL)], RULES)
    with pytest.raises(NotAnalyzableError, match="contrast-only"):
        select_series([_h("d", description="Head-Neck CTA 0.625", contrast="Omnipaque")], RULES)


def test_header_read_from_a_real_file(tmp_path: Path) -> None:
    paths = write_series(tmp_path, [float(z) for z in range(12)])
    h = read_series_header("9.9", tuple(paths))
    assert (h.modality, h.slice_thickness, h.kernel, h.n_instances) == ("CT", 1.0, "B70f", 12)
    assert h.is_axial
