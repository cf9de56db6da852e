"""The CTA pipeline on the project phantom factory (training.phantoms.cta, small config).

These phantoms (aortic arch, subclavians, external carotid branches, full circle of
Willis, veins) and their analyses take ~30 s each on the 2-core CPU, so the set is
``slow``; the acceptance figures of issue 5 are measured here (targets: stenosis % within
10 points for >= 85 % of stenoses, grade right for >= 85 %, every occlusion found, no
stenosis >= 50 % on a vessel without one). ``python -m training.cta.diagnose`` prints
the same set lesion by lesion. ``test_cta_accuracy.py`` guards one small case in CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from countyread.domain import Finding
from countyread.errors import NotAnalyzableError
from countyread.settings import Settings
from inference.cta import CTAPipeline
from inference.cta.analysis import CTAAnalysis, analyze_volume
from inference.cta.stenosis import REPORT_MIN_PERCENT, grade_of
from inference.pipeline import SeriesInput, StudyInput

phantoms = pytest.importorskip("training.phantoms.cta")

pytestmark = pytest.mark.slow

STENOSIS_SEEDS = (601, 602, 603, 604)
OCCLUSION_SEEDS = (611, 612)
NAMED = ("CCA_L", "CCA_R", "ICA_L", "ICA_R", "ECA_L", "ECA_R", "VA_L", "VA_R", "BA",
         "M1_L", "M1_R", "A1_L", "A1_R", "P1_L", "P1_R")  # fmt: skip


@dataclass(frozen=True)
class Case:
    phantom: object
    analysis: CTAAnalysis
    findings: list[Finding]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> CTAPipeline:
    return CTAPipeline.create(Settings(data_dir=tmp_path_factory.mktemp("var")))


def run_case(pipeline: CTAPipeline, seed: int, **cfg: object) -> Case:
    """One arterial project phantom (small config) through the analysis and findings."""
    p = phantoms.make_head_neck_cta(seed, phantoms.CTAConfig.small(phase="arterial", **cfg))
    a = analyze_volume(p.volume, pipeline.predict, logit_threshold=pipeline.logit_threshold)
    return Case(p, a, pipeline.findings(a, p.volume, "1.2.3"))


@pytest.fixture(scope="module")
def cases(pipeline: CTAPipeline) -> list[Case]:
    return [run_case(pipeline, s, n_stenoses=2, n_occlusions=0) for s in STENOSIS_SEEDS]


def test_named_vessels(cases: list[Case]) -> None:
    found = [len(set(c.analysis.naming.vessels) & set(NAMED)) for c in cases]
    assert min(found) >= 13, found


def _percent_errors_and_grades(cases: list[Case]) -> tuple[np.ndarray, np.ndarray]:
    """Per true stenosis: |measured - true| % and whether the grade is right. No finding
    reads "under REPORT_MIN_PERCENT" (a mild narrowing that is not reported)."""
    errors, grades = [], []
    for c in cases:
        by = {f.attribute("vessel"): f for f in c.findings if f.kind == "stenosis"}
        for st in c.phantom.stenoses:  # type: ignore[attr-defined]
            f = by.get(st.vessel)
            if f is None:
                errors.append(max(0.0, st.percent - REPORT_MIN_PERCENT))
            else:
                errors.append(abs((f.measurement("stenosis_percent") or 0.0) - st.percent))
            grades.append((f.attribute("grade") if f else "mild") == grade_of(st.percent))
    return np.asarray(errors), np.asarray(grades)


def test_stenosis_percent_within_10_points(cases: list[Case]) -> None:
    """8/8 since the blur along the vessel, measured on the image's own carotid edges, is
    taken out of severe waists (inference.cta.blur; before: 6/8, the 93.5 % M1 and 91.7 %
    basilar stenoses of seed 604 read 77 % and 78 %)."""
    errors, _ = _percent_errors_and_grades(cases)
    assert (errors <= 10).mean() >= 0.85, errors.round(1)


def test_stenosis_grade(cases: list[Case]) -> None:
    _, grades = _percent_errors_and_grades(cases)
    assert grades.mean() >= 0.85, grades


def test_no_false_significant_stenosis(cases: list[Case]) -> None:
    false = []
    for c in cases:
        truth = {st.vessel for st in c.phantom.stenoses}  # type: ignore[attr-defined]
        for f in c.findings:
            pct = f.measurement("stenosis_percent") or 0.0
            if f.kind == "stenosis" and f.attribute("vessel") not in truth and pct >= 50:
                false.append((c.phantom.seed, f.attribute("vessel"), pct))  # type: ignore[attr-defined]
    assert not false, false


def test_no_occlusion_called_on_an_open_vessel(cases: list[Case]) -> None:
    """An occlusion call is a 100 % stenosis (and a critical worklist entry): none on a
    vessel that is open, stenosed or not."""
    false = [
        (c.phantom.seed, f.attribute("vessel"))  # type: ignore[attr-defined]
        for c in cases
        for f in c.findings
        if f.kind == "occlusion"
    ]
    assert not false, false


def test_occlusions_found(pipeline: CTAPipeline) -> None:
    for seed in OCCLUSION_SEEDS:
        c = run_case(pipeline, seed, n_stenoses=0, n_occlusions=1)
        found = {f.attribute("vessel") for f in c.findings if f.kind == "occlusion"}
        for occ in c.phantom.occlusions:  # type: ignore[attr-defined]
            assert occ.vessel in found


@pytest.mark.parametrize("phase", ["noncontrast", "venous"])
def test_refused_through_dicom(pipeline: CTAPipeline, phase: str, tmp_path: Path) -> None:
    from training.phantoms.dicom_writer import write_dicom

    p = phantoms.make_head_neck_cta(621, phantoms.CTAConfig.small(phase=phase))
    paths = write_dicom(p, tmp_path)
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    uid = str(ds.SeriesInstanceUID)
    study = StudyInput(
        str(ds.StudyInstanceUID), uid, (SeriesInput(uid, "CT", None, None, tuple(paths)),)
    )
    with pytest.raises(NotAnalyzableError, match="no arterial contrast"):
        pipeline.analyze(study)
