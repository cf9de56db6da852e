"""Report draft wording: where a nodule is, and how it changed since the prior CT."""

from __future__ import annotations

from api.reporting import _location, generate


def test_report_draft_states_the_change_in_both_languages() -> None:
    def row(change: str, extra: list[dict[str, object]]) -> dict[str, object]:
        return {"kind": "lung_nodule", "verdict": "accepted", "category": "4B",
                "attributes": {"type": "solid", "side": "right", "change": change,
                               "prior_date": "2026-05-20"},
                "measurements": [{"name": "mean_diameter", "value": 8.0, "unit": "mm"},
                                 *extra]}

    draft = generate({"modalities": "CT"}, [
        row("growing", [{"name": "diameter_change", "value": 2.0, "unit": "mm"},
                        {"name": "volume_doubling_time", "value": 148, "unit": "d"}]),
        row("new", []),
    ])
    assert "较 2026-05-20 前片平均径增大 2.0 mm，体积倍增时间约 148 天" in draft.findings_zh
    assert "grown 2.0 mm in mean diameter since 2026-05-20, volume doubling time about " \
           "148 days" in draft.findings_en
    assert "较 2026-05-20 前片为新发" in draft.findings_zh
    assert "new since the prior CT of 2026-05-20" in draft.findings_en


def test_report_names_the_side_of_an_ai_ct_finding() -> None:
    assert _location({"side": "left", "location": "lung"}) == ("左肺", "left lung")
    assert _location({"side": "right", "location": "juxtapleural"}) == (
        "右肺胸膜下", "right lung, juxtapleural")
    assert _location({"side": "right", "lobe": "right_middle", "location": "juxtapleural"}) == (
        "右肺中叶胸膜下", "right middle lobe, juxtapleural")
    assert _location({"side": "left", "lobe": "left_lower", "location": "lung"}) == (
        "左肺下叶", "left lower lobe")
    assert _location({"lobe": "RUL", "side": "right"}) == ("右肺上叶", "right upper lobe")
    assert _location({"location": "lung"}) == ("肺内", "the lung")
