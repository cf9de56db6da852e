"""The DR pipeline with the shipped model on phantom radiographs stored as DICOM files.

Fixed test set (seeds chosen before looking at results, never used in training):
12 films with one nodule of 10-30 mm and 6 nodule-free films, written in the styles
township scanners send (window, MONOCHROME1, VOI LUT only, no pixel spacing, CR, 8 bit).
Acceptance (issue 6): sensitivity >= 0.80 for nodules >= 10 mm at <= 1 FP per image, run
at the card's threshold for 1 FP/image on held-out data (``ge10mm_threshold_at_1_fp``);
at the card's (stricter) operating threshold nodule-free films give no finding at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from countyread.domain import AnalysisResult, Urgency
from countyread.errors import NotAnalyzableError
from countyread.settings import load_settings
from inference.dr import DRNodulePipeline
from inference.dr.findings import Thresholds
from inference.dr.pipeline import DRConfig
from inference.pipeline import PipelineOutput, SeriesInput, StudyInput
from training.dr.dicom import CR_IMAGE, DXStyle, uid, write_chest
from training.dr.evaluate import Box
from training.dr.synth import SynthChest, SynthConfig, make_synth_chest

POSITIVE_SEEDS = range(920000, 920012)
NEGATIVE_SEEDS = range(920100, 920106)
DIAMETERS = (10.0, 11.0, 12.0, 13.0, 14.0, 16.0, 18.0, 20.0, 22.0, 25.0, 28.0, 30.0)
STYLES = (
    DXStyle(),
    DXStyle(photometric="MONOCHROME1"),
    DXStyle(voi="lut", spacing="pixel"),
    DXStyle(spacing="none"),
    DXStyle(modality="CR", sop_class=CR_IMAGE, voi="none", bits_stored=10),
    DXStyle(view="AP", bits_stored=8, voi="none", description="Chest AP"),
)


@dataclass(frozen=True)
class Case:
    chest: SynthChest
    style: DXStyle
    study: StudyInput


def make_case(tmp: Path, seed: int, chest: SynthChest, style: DXStyle) -> Case:
    path = write_chest(tmp / f"{seed}.dcm", chest, seed, style)
    series = SeriesInput(uid(seed, 1, 1), style.modality, style.description, "CHEST", (path,))
    return Case(chest, style, StudyInput(uid(seed, 1), series.series_uid, (series,)))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> DRNodulePipeline:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("var"), environment="test")
    return DRNodulePipeline.create(settings)


@pytest.fixture(scope="module")
def pipeline_1fp(pipeline: DRNodulePipeline) -> DRNodulePipeline:
    """The same session at the held-out threshold for 1 FP/image (nodules >= 10 mm)."""
    card = pipeline.session.artifact.card
    th = Thresholds(operating=card.metrics["ge10mm_threshold_at_1_fp"])
    return DRNodulePipeline(pipeline.session, DRConfig(th))


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    tmp = tmp_path_factory.mktemp("dr")
    out = []
    for i, seed in enumerate(POSITIVE_SEEDS):
        chest = make_synth_chest(seed, SynthConfig(nodule_diameters=(DIAMETERS[i],)))
        out.append(make_case(tmp, seed, chest, STYLES[i % len(STYLES)]))
    for i, seed in enumerate(NEGATIVE_SEEDS):
        chest = make_synth_chest(seed, SynthConfig(p_no_nodule=1.0))
        assert not chest.nodules
        out.append(make_case(tmp, seed, chest, STYLES[i % len(STYLES)]))
    return out


@pytest.fixture(scope="module")
def outputs(pipeline_1fp: DRNodulePipeline, cases: list[Case]) -> list[PipelineOutput]:
    return [pipeline_1fp.analyze(c.study) for c in cases]


def finding_boxes(result: AnalysisResult, spacing_mm: float) -> list[Box]:
    """Finding boxes in stored pixels (from the pixel centre and the diameter)."""
    boxes = []
    for f in result.findings:
        col, row = (float(v) for v in (f.attribute("pixel_center") or "").split(","))
        d = f.measurement("diameter")
        assert d is not None
        if f.attribute("unit") == "mm":
            d = d / spacing_mm
        boxes.append(Box.around(row, col, d))
    return boxes


# Known shortfall of dr_nodule 1.4.0 on this fixed set: 6/12 found at 1.00 FP/image, and a 7th (14
# mm) scored 0.2130 against the threshold 0.2131 (1.3.0: 6/12 at 0.89; 1.2.0: 7/12 at 1.17 once PA
# films were written L\F). Of the others it misses, 10 and 12 mm have no candidate on them at all;
# 18, 20 and 22 mm have one with the right box (IoU 0.37-0.70) scored 0.13-0.17: the network's
# score, not the post-processing, loses them. Where (training.dr.diagnose, 2026-12-07): 18 and 22 mm
# project over the spine below the heart and 20 mm over the spine's edge behind it (ring display
# value 0.76-0.89; on the 400 held-out films 0.50 of the 36 nodules >= 10 mm on such a background
# are found at this threshold, 0.92 in open lung); 12 mm lies at the heart's lower border (0.60); 10
# mm is in open lung but 6.6 input pixels across (held-out 10-15 mm: 0.53 found; 15-20 mm 0.88;
# 20-30 mm 0.96). At the held-out rates by size this set would expect ~9 of 12; its three large
# nodules over the spine (held-out share of such backgrounds: 11 %) make it harder than the held-out
# draw. Over the spine the phantom itself erases some of them: training/dr/synth.py ``_detector``
# maps its 1st-99.5th percentile to the display range and clips above, and a nodule on the spine is
# the densest 0.5 % of the film, so 99 % of the 18 mm nodule's centre and 30 % of the 22 mm one's
# are stored at 4095 (a flat plateau, no nodule signal); on the held-out films 14 of the 338 nodules
# >= 10 mm have most of their centre clipped so, 0.43 of them found (the CT-projection DRRs clip
# none of theirs). A display curve with headroom would change every analytic draw, the held-out and
# this set included, so it is left for a decision. Not the file handling: each film's network input
# matches training's preparation (training.dr.data.sample_from_chest) within 0.011. Tried without
# training, none closes it: 1.1.0's and 1.2.0's networks under the same shift+flip averaging, alone
# or averaged with 1.4.0, score these five 0-0.17 too (same lineage, same blind spots); 1.4.0 on the
# film enlarged 1.5x / 2x (input 384 / 512) still has no peak on 10 and 12 mm and raises the
# nodule-free films' best false peak to 0.27-0.52 / 0.46-0.70. strict: a model that reaches the bar
# XPASSes, which fails until the marker is removed.
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # a crash is an error, not the known shortfall
    reason="dr_nodule 1.4.0: sensitivity 0.50 at 1.00 FP/image",
)
def test_nodules_of_10_mm_and_more_are_found(
    cases: list[Case], outputs: list[PipelineOutput]
) -> None:
    hits = truths = fps = 0
    for case, out in zip(cases, outputs, strict=True):
        boxes = finding_boxes(out.result, case.chest.spacing_mm)
        matched = set()
        for n in case.chest.nodules:
            truths += 1
            truth = Box(*n.bbox_rc)
            for j, b in enumerate(boxes):
                if j not in matched and b.iou(truth) > 0.2:
                    matched.add(j)
                    hits += 1
                    break
        fps += len(boxes) - len(matched)
    sensitivity = hits / truths
    fp_per_image = fps / len(cases)
    print(
        f"DR fixed set: sensitivity {sensitivity:.2f} ({hits}/{truths}), "
        f"{fp_per_image:.2f} FP/image over {len(cases)} images"
    )
    assert sensitivity >= 0.80
    assert fp_per_image <= 1.0


# What fires (2026-12-07): 920104 (0.461) and 920105 (0.336) on rib crossings (a posterior over an
# anterior rib) in open lung, as most of the 16 strongest held-out false positives do (0.39-0.56,
# read by eye). 920104's 0.461 is above the best peak of every one of the 114 held-out nodule-free
# films (highest 0.422), so no threshold read off the held-out set clears it; at 0.45 the held-out
# >= 10 mm sensitivity falls from 0.663 (0.30) to 0.524 (training.dr.diagnose).
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # a crash is an error, not the known shortfall
    reason="dr_nodule 1.4.0 marks 2 of the 6 nodule-free films at its operating threshold "
    "(4 of 6 at the 1 FP/image threshold)",
)
def test_nodule_free_films_have_no_finding(pipeline: DRNodulePipeline, cases: list[Case]) -> None:
    """The issue's rule: no finding above the operating threshold (the card's, stricter
    than the 1 FP/image one the sensitivity test runs at)."""
    flagged = []
    for case in cases:
        if case.chest.nodules:
            continue
        out = pipeline.analyze(case.study)
        if out.result.findings:
            flagged.append(case.study.study_uid)
            continue
        assert out.result.urgency is Urgency.ROUTINE
        assert out.result.category is None
    print(f"nodule-free films flagged at the operating threshold: {len(flagged)} of 6")
    assert flagged == []


def test_results_are_labelled(
    pipeline_1fp: DRNodulePipeline, cases: list[Case], outputs: list[PipelineOutput]
) -> None:
    for case, out in zip(cases, outputs, strict=True):
        r = out.result
        notes = " | ".join(r.notes)
        path = case.study.series[0].paths[0]
        sop_uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert "image-level nodule score" in notes
        assert r.pipeline == "dr_nodule" and r.models and r.models[0].name == "dr_nodule"
        assert dict(r.timings_ms).keys() >= {"select", "load", "infer", "render"}
        if case.style.photometric == "MONOCHROME1":
            assert "MONOCHROME1 inverted" in notes
        if case.style.voi == "lut":
            assert "VOI LUT applied" in notes
        for f in r.findings:
            assert f.sop_instance_uid == sop_uid
            assert f.center_lps[2] == 0.0
            assert f.attribute("view") == (case.style.view or "PA")
            assert f.key_image == "dr_key"
        unit = "px" if case.style.spacing == "none" else "mm"
        if unit == "px":
            assert "sizes are in pixels (px)" in notes
        for f in r.findings:
            assert f.attribute("unit") == unit and f.measurements[0].unit == unit
            d = f.measurement("diameter")
            assert d is not None and d > 0
        # urgency follows the documented rule
        big = unit == "mm" and any((f.measurement("diameter") or 0) >= 30 for f in r.findings)
        score = max((f.probability for f in r.findings), default=0.0)
        urgent_score = pipeline_1fp.config.thresholds.urgent_score
        expected = Urgency.URGENT if big or score >= urgent_score else Urgency.ROUTINE
        assert r.urgency is expected


def test_no_spacing_film_reports_pixels(cases: list[Case], outputs: list[PipelineOutput]) -> None:
    found = False
    for case, out in zip(cases, outputs, strict=True):
        if case.style.spacing != "none" or not out.result.findings or not case.chest.nodules:
            continue
        f = out.result.findings[0]
        col, row = (float(v) for v in (f.attribute("pixel_center") or "").split(","))
        assert f.center_lps == pytest.approx((col, row, 0.0), abs=0.01)
        n = case.chest.nodules[0]
        # a px diameter is about the nodule's size in stored pixels
        assert 0.4 * n.diameter_px < (f.measurement("diameter") or 0) < 2.5 * n.diameter_px
        found = True
    assert found, "no finding on a no-spacing film to check"


def test_key_image(outputs: list[PipelineOutput]) -> None:
    out = outputs[0]
    assert [name for name, _ in out.images] == ["dr_key"]
    rgb = out.images[0][1]
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert max(rgb.shape[:2]) <= 1024 + 100
    band = rgb[:20]
    assert band.max() > 128  # the headline text is drawn
    if out.result.findings:  # coloured marks are drawn
        assert (np.abs(rgb[..., 0].astype(int) - rgb[..., 2].astype(int)) > 100).any()
    assert dict(out.arrays)["dr_heatmap"].ndim == 2


def test_lateral_only_study_is_not_analyzable(pipeline: DRNodulePipeline, tmp_path: Path) -> None:
    chest = make_synth_chest(5, SynthConfig(matrix=(200, 200)))
    case = make_case(tmp_path, 5, chest, DXStyle(view="LL"))
    with pytest.raises(NotAnalyzableError, match="LL view"):
        pipeline.analyze(case.study)
