"""Lung-RADS v2022 and Fleischner 2017: every row of DESIGN.md section 5."""

from __future__ import annotations

import pytest

from inference.ct_nodule.rules import (
    Change,
    NoduleFacts,
    NoduleType,
    fleischner,
    is_urgent,
    lung_rads,
    study_category,
)

S, PS, G, C = NoduleType.SOLID, NoduleType.PART_SOLID, NoduleType.GROUND_GLASS, NoduleType.CALCIFIED


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # solid, baseline
        (NoduleFacts(S, 5.94), "2"),  # rounds to 5.9
        (NoduleFacts(S, 5.96), "3"),  # rounds to 6.0
        (NoduleFacts(S, 7.9), "3"),
        (NoduleFacts(S, 8.0), "4A"),
        (NoduleFacts(S, 14.9), "4A"),
        (NoduleFacts(S, 15.0), "4B"),
        # solid, new
        (NoduleFacts(S, 3.9, change=Change.NEW), "2"),
        (NoduleFacts(S, 4.0, change=Change.NEW), "3"),
        (NoduleFacts(S, 6.0, change=Change.NEW), "4A"),
        (NoduleFacts(S, 8.0, change=Change.NEW), "4B"),
        # solid, growing
        (NoduleFacts(S, 7.9, change=Change.GROWING), "4A"),
        (NoduleFacts(S, 8.0, change=Change.GROWING), "4B"),
        # juxtapleural / perifissural, smooth, < 10 mm
        (NoduleFacts(S, 9.9, juxtapleural_or_perifissural=True), "2"),
        (NoduleFacts(S, 10.0, juxtapleural_or_perifissural=True), "4A"),
        (NoduleFacts(S, 9.0, juxtapleural_or_perifissural=True, smooth_margin=False), "4A"),
        # juxtapleural: at baseline or new only, not once it grows
        (NoduleFacts(S, 9.0, juxtapleural_or_perifissural=True, change=Change.NEW), "2"),
        (NoduleFacts(S, 7.0, juxtapleural_or_perifissural=True, change=Change.GROWING), "4A"),
        # part-solid
        (NoduleFacts(PS, 5.9, solid_part_mm=3.0), "2"),
        (NoduleFacts(PS, 6.0, solid_part_mm=5.9), "3"),
        (NoduleFacts(PS, 12.0, solid_part_mm=6.0), "4A"),
        (NoduleFacts(PS, 12.0, solid_part_mm=7.9), "4A"),
        (NoduleFacts(PS, 12.0, solid_part_mm=8.0), "4B"),
        # part-solid, new or growing (v2022: new < 6 mm total is 3; a new or growing
        # solid component < 4 mm is 4A, >= 4 mm 4B)
        (NoduleFacts(PS, 5.9, solid_part_mm=2.0, change=Change.NEW), "3"),
        (NoduleFacts(PS, 9.0, solid_part_mm=3.9, change=Change.NEW), "4A"),
        (NoduleFacts(PS, 9.0, solid_part_mm=4.0, change=Change.GROWING), "4B"),
        # ground glass
        (NoduleFacts(G, 29.9), "2"),
        (NoduleFacts(G, 30.0), "3"),
        (NoduleFacts(G, 30.0, change=Change.NEW), "3"),
        (NoduleFacts(G, 32.0, change=Change.STABLE), "2"),
        # benign calcification
        (NoduleFacts(C, 12.0), "1"),
        # 4X: 3/4 with spiculation; a category-2 nodule stays 2
        (NoduleFacts(S, 7.0, spiculated=True), "4X"),
        (NoduleFacts(S, 20.0, spiculated=True), "4X"),
        (NoduleFacts(S, 4.0, spiculated=True), "2"),
    ],
)
def test_lung_rads_rows(facts: NoduleFacts, expected: str) -> None:
    assert lung_rads(facts) == expected


def test_study_category_and_urgency() -> None:
    assert study_category([]) == "1"
    assert study_category(["2", "4A", "3"]) == "4A"
    assert study_category(["4B", "4X"]) == "4X"
    assert is_urgent("4B", 16.0)
    assert is_urgent("4X", 9.0)
    assert is_urgent("3", 31.0)  # a ground-glass mass >= 30 mm
    assert not is_urgent("4A", 12.0)


@pytest.mark.parametrize(
    ("facts", "needle"),
    [
        ([], "No pulmonary nodule"),
        ([NoduleFacts(C, 8.0)], "Calcified"),
        ([NoduleFacts(S, 5.0)], "< 6 mm: no routine follow-up"),
        ([NoduleFacts(S, 7.0)], "6-8 mm: CT at 6-12 months"),
        ([NoduleFacts(S, 8.0)], "6-8 mm: CT at 6-12 months"),
        ([NoduleFacts(S, 9.0)], "CT at 3 months, PET/CT, or tissue sampling"),
        ([NoduleFacts(S, 7.0), NoduleFacts(S, 4.0)], "Multiple solid nodules 6-8 mm: CT at 3-6"),
        ([NoduleFacts(G, 5.0)], "Ground-glass nodule < 6 mm: no routine"),
        ([NoduleFacts(G, 10.0)], "every 2 years until 5 years"),
        ([NoduleFacts(PS, 9.0, solid_part_mm=4.0)], "CT at 3-6 months to confirm persistence"),
        ([NoduleFacts(PS, 9.0, solid_part_mm=6.5)], "highly suspicious"),
        ([NoduleFacts(G, 5.0), NoduleFacts(PS, 4.0, 2.0)], "Multiple subsolid nodules < 6 mm"),
        ([NoduleFacts(S, 35.0)], "Lung mass"),
    ],
)
def test_fleischner(facts: list[NoduleFacts], needle: str) -> None:
    assert needle in fleischner(facts)


def test_a_mass_by_its_long_axis_gets_the_mass_text() -> None:
    assert "Lung mass" in fleischner([NoduleFacts(S, 28.0, mass=True)])
