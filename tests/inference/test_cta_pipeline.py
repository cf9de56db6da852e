"""The CTA pipeline with the shipped ONNX model on a fixed set of phantom CTAs.

Acceptance (issue 5): named vessels found; stenosis % within 10 points of the truth for
>= 85 % of stenoses and the grade right for >= 85 %; every occlusion found; no stenosis
>= 50 % on stenosis-free vessels; non-contrast and venous series refused with the
reason; renders geometrically right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from countyread.domain import Finding, Urgency
from countyread.errors import NotAnalyzableError
from countyread.settings import Settings
from inference.cta import CTAPipeline, render
from inference.cta.analysis import CTAAnalysis, analyze_volume
from inference.cta.profile import sample_lps
from inference.cta.stenosis import grade_of
from inference.pipeline import PipelineOutput, SeriesInput, StudyInput
from training.cta.dicom import write_series
from training.cta.synth import VESSELS, SynthConfig, SynthCTA, make_synthetic_cta

#: fixed test set: seeds never used in training (training.cta config: 100..123)
STENOSIS_SEEDS = (501, 502, 503, 504, 505)
OCCLUSION_SEEDS = (511, 512)


@dataclass(frozen=True)
class Case:
    phantom: SynthCTA
    analysis: CTAAnalysis
    findings: list[Finding]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> CTAPipeline:
    return CTAPipeline.create(Settings(data_dir=tmp_path_factory.mktemp("var")))


def _run(pipeline: CTAPipeline, seed: int, cfg: SynthConfig) -> Case:
    p = make_synthetic_cta(seed, cfg)
    a = analyze_volume(p.volume, pipeline.predict, logit_threshold=pipeline.logit_threshold)
    return Case(p, a, pipeline.findings(a, p.volume, "1.2.3"))


@pytest.fixture(scope="module")
def stenosis_cases(pipeline: CTAPipeline) -> list[Case]:
    return [_run(pipeline, s, SynthConfig(n_stenoses=3)) for s in STENOSIS_SEEDS]


@pytest.fixture(scope="module")
def occlusion_cases(pipeline: CTAPipeline) -> list[Case]:
    return [_run(pipeline, s, SynthConfig(n_stenoses=1, occlusion=True)) for s in OCCLUSION_SEEDS]


def _by_vessel(findings: list[Finding], kind: str) -> dict[str, Finding]:
    return {str(f.attribute("vessel")): f for f in findings if f.kind == kind}


@pytest.mark.slow  # acceptance figures (issue 5); see the report
def test_named_vessels_found(stenosis_cases: list[Case]) -> None:
    for case in stenosis_cases:
        assert set(case.analysis.naming.vessels) == set(VESSELS)


@pytest.mark.slow  # acceptance figures (issue 5); see the report
def test_stenosis_percent_and_grade_against_truth(stenosis_cases: list[Case]) -> None:
    # measured: 14/15 within 10 points, grade 13/15 (misses: a 90.5 % internal carotid
    # at the mouth of its canal reads 55.3 %, a 75.9 % M1 67.2 %); 9/15 and 9/15 before
    # the lumen-against-bone, distal-fragment and deblurring-floor changes
    errors, grades = [], []
    for case in stenosis_cases:
        found = _by_vessel(case.findings, "stenosis")
        for st in case.phantom.stenoses:
            f = found.get(st.vessel)
            pct = (f.measurement("stenosis_percent") or 0.0) if f else 0.0
            errors.append(abs(pct - st.percent))
            graded = f.attribute("grade") if f else "mild"
            grades.append(graded == grade_of(st.percent))
            if f is not None:
                d = np.linalg.norm(np.asarray(f.center_lps) - np.asarray(st.center_lps))
                assert d < 6.0, (st.vessel, d)
    errors_a = np.asarray(errors)
    assert len(errors_a) >= 12
    assert (errors_a <= 10.0).mean() >= 0.85, errors_a.round(1)
    assert np.mean(grades) >= 0.85


@pytest.mark.slow  # acceptance figures (issue 5); see the report
def test_no_significant_stenosis_on_normal_vessels(stenosis_cases: list[Case]) -> None:
    for case in stenosis_cases:
        diseased = {s.vessel for s in case.phantom.stenoses}
        for f in case.findings:
            if f.kind == "stenosis" and f.attribute("vessel") not in diseased:
                assert (f.measurement("stenosis_percent") or 0.0) < 50.0, f


@pytest.mark.slow  # acceptance figures (issue 5); see the report
def test_no_occlusion_called_on_open_vessels(
    stenosis_cases: list[Case], occlusion_cases: list[Case]
) -> None:
    # An occlusion is a critical call: the stenosis check above does not see one on an
    # open vessel (before 99ea191 seed 505's open right ICA was called occluded).
    seeds = STENOSIS_SEEDS + OCCLUSION_SEEDS
    for seed, case in zip(seeds, stenosis_cases + occlusion_cases, strict=True):
        occluded = {o.vessel for o in case.phantom.occlusions}
        called = set(_by_vessel(case.findings, "occlusion"))
        assert called <= occluded, (seed, sorted(called - occluded))


@pytest.mark.slow  # acceptance figures (issue 5); see the report
def test_every_occlusion_found(occlusion_cases: list[Case]) -> None:
    for case in occlusion_cases:
        found = _by_vessel(case.findings, "occlusion")
        for occ in case.phantom.occlusions:
            assert occ.vessel in found, (occ.vessel, sorted(found))


@pytest.fixture(scope="module")
def dicom_case(
    pipeline: CTAPipeline, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SynthCTA, PipelineOutput, list[Path]]:
    p = make_synthetic_cta(521, SynthConfig(n_stenoses=2))
    paths = write_series(p, 521, tmp_path_factory.mktemp("cta"))
    return p, pipeline.analyze(_study(paths)), paths


def _study(paths: list[Path]) -> StudyInput:
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    uid = str(ds.SeriesInstanceUID)
    series = SeriesInput(uid, "CT", str(ds.SeriesDescription), "HEADNECK", tuple(paths))
    return StudyInput(str(ds.StudyInstanceUID), uid, (series,))


def test_dicom_end_to_end_output_contract(
    dicom_case: tuple[SynthCTA, PipelineOutput, list[Path]],
) -> None:
    _phantom, out, paths = dicom_case
    images = dict(out.images)
    arrays = dict(out.arrays)
    assert {"mip_axial", "mip_coronal", "mip_sagittal"} <= set(images)
    assert [n for n in images if n.startswith("vr_")] == [f"vr_{i:03d}" for i in range(24)]
    named = [n[len("scpr_") :] for n in images if n.startswith("scpr_")]
    assert {"CCA_L", "CCA_R", "ICA_L", "ICA_R"} <= set(named)
    for name in named:
        assert f"cpr_{name}" in images and name in VESSELS
    for rgb in images.values():
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    sops = {str(pydicom.dcmread(x, stop_before_pixels=True).SOPInstanceUID) for x in paths}
    assert set(arrays["slice_sop_uids"].tolist()) == sops
    assert arrays["geometry"].shape == (4, 4)
    result = out.result
    worst = {f.attribute("grade") for f in result.findings}
    expected = (
        Urgency.CRITICAL
        if worst & {"occlusion", "near-occlusion"}
        else Urgency.URGENT
        if "severe" in worst
        else Urgency.ROUTINE
    )
    assert result.urgency == expected
    for i, f in enumerate(result.findings):
        assert f.sop_instance_uid in sops
        assert f.key_image in images
        assert f.attribute("method") in ("NASCET", "diameter reduction", None)
        if f.attribute("vessel") not in named:
            continue  # an occluded vessel that was never traced has no mask
        mask = arrays[f"mask_{i}"]
        assert mask.ndim == 3 and mask.any() and arrays[f"bbox_{i}"].shape == (3,)
    ica = [f for f in result.findings if str(f.attribute("vessel")).startswith("ICA")]
    assert all(f.attribute("method") == "NASCET" for f in ica if f.kind == "stenosis")
    assert {k for k, _ in result.timings_ms} >= {"segmentation", "centerlines", "stenosis"}


def test_renders_are_geometrically_right(pipeline: CTAPipeline, stenosis_cases: list[Case]) -> None:
    case = stenosis_cases[0]
    a = case.analysis
    clean = render.bone_removed(a.hu, a.seg.bone, a.intensities.tissue_hu)
    images = render.mip_views(clean)
    # a point inside the left common carotid lands on a bright (lumen) pixel of the MIP
    cca = case.phantom.centerlines["CCA_L"]
    for point in cca[len(cca) // 4 :: len(cca) // 4][:3]:
        r, c = render.mip_pixel(a.grid, point, "mip_coronal")
        assert images["mip_coronal"][r, c, 1] > 150, (point, r, c)
    # stretched CPR: one row pair per 0.5 mm sample, the centreline in the middle column;
    # a known phantom point on the centreline shows on the row of its profile sample
    checked = 0
    for name, truth_line in case.phantom.centerlines.items():
        prof = a.profiles.get(name)
        if prof is None:
            continue
        cpr = render.stretched_cpr(case.phantom.volume, prof)
        assert cpr.shape[0] == render.cpr_row(len(prof.points) - 1) + 1
        point = truth_line[len(truth_line) // 2]
        gap = np.linalg.norm(prof.points - point, axis=1)
        n = int(np.argmin(gap))
        if gap[n] > 1.0:
            continue
        expected = render.window(
            sample_lps(case.phantom.volume, prof.points[n][None]), *render.CPR_WINDOW
        )[0, 1]
        got = int(cpr[render.cpr_row(n), cpr.shape[1] // 2, 1])
        assert abs(got - int(expected)) <= 2, (name, got, expected)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("phase", ["noncontrast", "venous"])
def test_non_arterial_series_refused(pipeline: CTAPipeline, phase: str, tmp_path: Path) -> None:
    p = make_synthetic_cta(531, SynthConfig(phase=phase, n_stenoses=0))
    paths = write_series(p, 531, tmp_path)
    with pytest.raises(NotAnalyzableError, match="no arterial contrast"):
        pipeline.analyze(_study(paths))
