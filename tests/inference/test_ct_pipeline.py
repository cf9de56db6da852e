"""CT nodule pipeline end to end on DICOM phantoms and on the real chest CT (if present)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pydicom
import pytest

from countyread.domain import Urgency
from countyread.errors import NotAnalyzableError
from countyread.settings import Settings
from inference.ct_nodule import CTNodulePipeline
from inference.ct_nodule.rules import lung_rads
from inference.pipeline import PipelineOutput, SeriesInput, StudyInput
from training.ct_nodule.evaluate import truth_category
from training.phantoms.ct import ChestCTConfig, CTPhantom, make_chest_ct
from training.phantoms.dicom_writer import write_dicom
from training.phantoms.nodule_shapes import NoduleSpec

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "lung-ct-A0002"

SPECS = (
    NoduleSpec(9.0, "solid", "round", "lung", side="right"),
    NoduleSpec(16.0, "part_solid", "round", "lung", side="left", solid_part_mm=9.0),
    NoduleSpec(12.0, "ground_glass", "round", "lung", side="right"),
    NoduleSpec(8.0, "calcified", "round", "lung", side="left"),
    NoduleSpec(34.0, "solid", "lobulated", "lung", side="right"),
)


@pytest.fixture(scope="module")
def pipeline() -> CTNodulePipeline:
    return CTNodulePipeline.create(Settings(intra_op_threads=2))


def _study(directory: Path, paths: list[Path]) -> StudyInput:
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    series = SeriesInput(
        str(ds.SeriesInstanceUID), "CT", str(ds.get("SeriesDescription", "")), "CHEST", tuple(paths)
    )
    return StudyInput(str(ds.StudyInstanceUID), series.series_uid, (series,))


@pytest.fixture(scope="module")
def nodule_case(
    tmp_path_factory: pytest.TempPathFactory, pipeline: CTNodulePipeline
) -> tuple[CTPhantom, PipelineOutput]:
    phantom = make_chest_ct(4242, ChestCTConfig.small(nodule_specs=SPECS, mas=120.0))
    directory = tmp_path_factory.mktemp("nodules")
    paths = write_dicom(phantom, directory)
    return phantom, pipeline.analyze(_study(directory, paths))


def test_every_nodule_of_6mm_or_more_is_found_and_measured(
    nodule_case: tuple[CTPhantom, PipelineOutput],
) -> None:
    phantom, out = nodule_case
    findings = out.result.findings
    truths = [t for t in phantom.nodules if t.mean_diameter_mm >= 6.0]
    assert len(truths) == len(SPECS)
    right_type = right_cat = 0
    for t in truths:
        hits = [
            f
            for f in findings
            if np.linalg.norm(np.subtract(f.center_lps, t.center_lps)) <= t.mean_diameter_mm / 2
        ]
        assert hits, f"missed {t.kind} {t.mean_diameter_mm} mm at {t.center_lps}"
        f = hits[0]
        mean = f.measurement("mean_diameter")
        assert mean is not None
        assert abs(mean - t.mean_diameter_mm) <= 1.5, (t.kind, mean, t.mean_diameter_mm)
        right_type += f.attribute("type") == t.kind
        right_cat += f.category == truth_category(t)
        assert f.attribute("side") == t.side
        assert f.attribute("lobe") == t.lobe  # 2.5 mm slices: the fissures are found
        assert f.kind == (
            "lung_mass" if t.long_axis_mm >= 30 or t.mean_diameter_mm >= 30 else "lung_nodule"
        )
    assert right_type / len(truths) >= 0.9
    assert right_cat / len(truths) >= 0.9


def test_study_level_result_and_outputs(nodule_case: tuple[CTPhantom, PipelineOutput]) -> None:
    _, out = nodule_case
    r = out.result
    assert r.pipeline == "ct_nodule"
    assert r.urgency is Urgency.URGENT  # the 34 mm mass
    assert r.category in {"4B", "4X"}
    assert r.recommendation and "mass" in r.recommendation.lower()
    assert r.models and r.models[0].name == "ct_nodule" and len(r.models[0].sha256) == 64
    names = {n for n, _ in out.images}
    arrays = dict(out.arrays)
    assert "overview_coronal_mip" in names
    assert arrays["geometry"].shape == (4, 4)
    assert len(arrays["slice_sop_uids"]) == out.arrays[1][1].shape[0]
    for i, f in enumerate(r.findings):
        assert f.key_image == f"nodule_{i}_axial" and f.key_image in names
        assert f"nodule_{i}_zoom" in names
        bbox = arrays[f"bbox_{i}"]
        mask = arrays[f"mask_{i}"]
        assert mask.dtype == bool and mask.shape == tuple(bbox[3:] - bbox[:3])
        assert f.sop_instance_uid in set(arrays["slice_sop_uids"].tolist())
        assert f.model is not None and f.probability >= 0.0
    for _, img in out.images:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert dict(r.timings_ms)["total"] > 0


def test_nodule_free_phantom_has_no_finding_above_threshold(
    tmp_path: Path, pipeline: CTNodulePipeline
) -> None:
    phantom = make_chest_ct(4343, ChestCTConfig.small(n_nodules=0, mas=120.0))
    out = pipeline.analyze(_study(tmp_path, write_dicom(phantom, tmp_path)))
    assert out.result.findings == ()
    assert out.result.category == "1"
    assert out.result.urgency is Urgency.ROUTINE


def test_localiser_only_study_is_not_analyzable(tmp_path: Path, pipeline: CTNodulePipeline) -> None:
    phantom = make_chest_ct(4444, ChestCTConfig.small(n_nodules=0, coverage_mm=40.0))
    paths = write_dicom(phantom, tmp_path)[:4]
    with pytest.raises(NotAnalyzableError, match="no suitable CT series"):
        pipeline.analyze(_study(tmp_path, paths))


def _real_boxes() -> dict[str, tuple[int, int, int, int]]:
    boxes = {}
    for xml in (REALDATA / "annotation").glob("*.xml"):
        b = ET.parse(xml).getroot().find("object/bndbox")
        assert b is not None
        boxes[xml.stem] = tuple(
            int(float(b.findtext(k) or 0)) for k in ("xmin", "ymin", "xmax", "ymax")
        )
    return boxes  # type: ignore[return-value]


def test_real_chest_ct_tumour_is_reported_and_urgent(pipeline: CTNodulePipeline) -> None:
    if not REALDATA.is_dir():
        pytest.skip(f"real data not present at {REALDATA}")
    series = []
    for d in sorted(REALDATA.glob("series-*")):
        paths = tuple(sorted(d.glob("*.dcm")))
        uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
        series.append(SeriesInput(uid, "CT", d.name, "CHEST", paths))
    study = StudyInput("1.2.3", series[0].series_uid, tuple(series))
    out = pipeline.analyze(study)
    r = out.result
    assert r.urgency is Urgency.URGENT
    assert any("limited analysis" in n for n in r.notes)
    boxes = _real_boxes()
    chosen = next(s for s in series if s.series_uid == r.series_uid)
    uid_to_path = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in chosen.paths
    }
    annotated = {u: b for u, b in boxes.items() if u in uid_to_path}
    assert annotated, "annotations name slices of the chosen series"
    arrays = dict(out.arrays)
    affine = arrays["geometry"]
    inv = np.linalg.inv(affine)
    hit = False
    for f in r.findings:
        col, row, k = (inv @ np.r_[f.center_lps, 1.0])[:3]
        uid = str(arrays["slice_sop_uids"][round(k)])
        for u, (x0, y0, x1, y1) in annotated.items():
            near = abs(np.where(arrays["slice_sop_uids"] == u)[0][0] - k) <= 1
            if near and x0 <= col <= x1 and y0 <= row <= y1:
                hit = True
        del uid
    assert hit, [(f.kind, f.center_lps, f.category) for f in r.findings]
    assert lung_rads is not None
