"""Which radiograph the DR pipeline reads, and the reasons for the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from countyread.errors import NotAnalyzableError
from inference.dr.selection import select_radiograph
from inference.pipeline import SeriesInput, StudyInput
from training.dr.dicom import CR_IMAGE, SECONDARY_CAPTURE, DXStyle, uid, write_chest
from training.dr.synth import SynthConfig, make_synth_chest

SMALL = SynthConfig(matrix=(128, 128), p_collimation=0.0)


def series(tmp: Path, n: int, style: DXStyle, *, instances: int = 1) -> SeriesInput:
    chest = make_synth_chest(n, SMALL)
    paths = tuple(
        write_chest(tmp / f"s{n}" / f"{i}.dcm", chest, 5, style, series=n, instance=i + 1)
        for i in range(instances)
    )
    return SeriesInput(uid(5, 1, n), style.modality, style.description, style.body_part, paths)


def study(*s: SeriesInput, trigger: int = 0) -> StudyInput:
    return StudyInput(uid(5, 1), s[trigger].series_uid, tuple(s))


def test_pa_preferred_and_lateral_skipped_with_reason(tmp_path: Path) -> None:
    lat = series(tmp_path, 1, DXStyle(view="LL", description="Chest LAT"))
    ap = series(tmp_path, 2, DXStyle(view="AP", description="Chest AP bedside"))
    pa = series(tmp_path, 3, DXStyle(view="PA"))
    choice = select_radiograph(study(lat, ap, pa))
    assert choice.chosen.series_uid == pa.series_uid and choice.view.view == "PA"
    reasons = dict(choice.rejected)
    assert reasons[uid(5, 1, 1, 1)] == "LL view (not frontal)"
    assert "preferred" in reasons[uid(5, 1, 2, 1)]
    assert "LL view" in choice.explanation()


def test_only_laterals_is_not_analyzable(tmp_path: Path) -> None:
    lat = series(tmp_path, 1, DXStyle(view="RL"))
    with pytest.raises(NotAnalyzableError, match="RL view"):
        select_radiograph(study(lat))


def test_view_inferred_from_description_or_assumed(tmp_path: Path) -> None:
    by_text = series(tmp_path, 1, DXStyle(view=None, description="胸部正位 后前位"))
    choice = select_radiograph(study(by_text))
    assert choice.view.view == "PA" and choice.view.source == "description"
    assert any("inferred" in n for n in choice.notes)
    lateral_text = series(tmp_path, 2, DXStyle(view=None, description="Chest lateral"))
    with pytest.raises(NotAnalyzableError, match="lateral"):
        select_radiograph(study(lateral_text))
    unknown = series(tmp_path, 3, DXStyle(view=None, description="Thorax", body_part=None))
    choice = select_radiograph(study(unknown))
    assert choice.view.source == "assumed"
    assert "view position not recorded: assumed frontal (PA)" in choice.notes
    assert "body part not recorded: assumed chest" in choice.notes


def test_view_code_sequence(tmp_path: Path) -> None:
    s = series(tmp_path, 1, DXStyle(view=None, description="X"))
    import pydicom
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(s.paths[0])
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "399162004", "SCT"
    code.CodeMeaning = "left lateral"
    ds.ViewCodeSequence = [code]
    ds.save_as(s.paths[0])
    with pytest.raises(NotAnalyzableError, match="left lateral"):
        select_radiograph(study(s))
    code.CodeMeaning = "antero-posterior"
    ds.ViewCodeSequence = [code]
    ds.save_as(s.paths[0])
    assert select_radiograph(study(s)).view.view == "AP"


def test_cr_and_secondary_capture_chest_accepted(tmp_path: Path) -> None:
    cr = series(tmp_path, 1, DXStyle(modality="CR", sop_class=CR_IMAGE))
    assert select_radiograph(study(cr)).chosen.modality == "CR"
    sc = series(tmp_path, 2, DXStyle(sop_class=SECONDARY_CAPTURE, description="DR chest PA"))
    choice = select_radiograph(study(sc))
    assert choice.chosen.sop_class_uid == SECONDARY_CAPTURE
    sc_other = series(
        tmp_path, 3, DXStyle(sop_class=SECONDARY_CAPTURE, description="report", body_part=None)
    )
    with pytest.raises(NotAnalyzableError, match="secondary capture"):
        select_radiograph(study(sc_other))


def test_other_body_parts_modalities_and_corrupt_files(tmp_path: Path) -> None:
    hand = series(tmp_path, 1, DXStyle(body_part="HAND"))
    ct = SeriesInput("1.2.3", "CT", "chest", "CHEST", ())
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom at all")
    junk = SeriesInput("1.2.4", "DX", None, None, (broken,))
    with pytest.raises(NotAnalyzableError) as info:
        select_radiograph(study(hand, ct, junk))
    text = str(info.value)
    assert "body part HAND" in text and "modality CT" in text and "unreadable file" in text


def test_trigger_series_preferred_among_equals(tmp_path: Path) -> None:
    a = series(tmp_path, 1, DXStyle())
    b = series(tmp_path, 2, DXStyle())
    assert select_radiograph(study(a, b, trigger=1)).chosen.series_uid == b.series_uid
