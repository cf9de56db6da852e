"""Head/neck CTA studies the way consoles really send them.

A CTA study rarely holds one series: a localiser, a bolus-tracking monitor, a thin
non-contrast pre-scan, the thin arterial series, thick reformats and the scanner's own
MIPs arrive together, in any order, from head-first or feet-first acquisitions, often
JPEG-LS / JPEG 2000 compressed. One small arterial phantom (and its non-contrast twin,
the same anatomy) is re-stored each way; the pipeline must analyse the arterial series
and report the same vessels and stenoses as for the plain head-first series, or refuse
with a reason — never invent a tree on the wrong series, never swap sides.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from countyread.domain import Finding
from countyread.errors import NotAnalyzableError
from countyread.settings import Settings
from inference.cta import CTAPipeline
from inference.cta.select import select_cta_series
from inference.pipeline import PipelineOutput, SeriesInput, StudyInput
from tests.robustness.test_ct_orientation import X, Y, relayout
from training.cta.dicom import write_series
from training.cta.synth import SynthConfig, make_synthetic_cta

SEED = 541  # not a training seed (training.cta: 100..123) nor a test_cta_* seed


@dataclass(frozen=True)
class Study:
    arterial: list[Dataset]
    noncontrast: list[Dataset]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    tmp = tmp_path_factory.mktemp("cta_variants")
    cfg = SynthConfig(n_stenoses=2)
    arterial = write_series(make_synthetic_cta(SEED, cfg), SEED, tmp / "arterial")
    plain = make_synthetic_cta(SEED, SynthConfig(n_stenoses=2, phase="noncontrast"))
    noncontrast = write_series(plain, SEED, tmp / "noncontrast")
    return Study([pydicom.dcmread(p) for p in arterial], [pydicom.dcmread(p) for p in noncontrast])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> CTAPipeline:
    # One thread: CI has two cores and other tests' processes beside this one.
    return CTAPipeline.create(
        Settings(data_dir=tmp_path_factory.mktemp("var"), intra_op_threads=1)
    )


def _write(datasets: Sequence[Dataset], directory: Path) -> SeriesInput:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        path = directory / f"{k:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    first = datasets[0]
    return SeriesInput(
        str(first.SeriesInstanceUID), str(first.Modality),
        str(first.get("SeriesDescription", "")), str(first.get("BodyPartExamined", "")),
        tuple(paths),
    )


def _study(series: Sequence[SeriesInput], trigger: SeriesInput) -> StudyInput:
    uid = str(pydicom.dcmread(series[0].paths[0], stop_before_pixels=True).StudyInstanceUID)
    return StudyInput(uid, trigger.series_uid, tuple(series))


def _new_series(datasets: Sequence[Dataset], **attrs: object) -> list[Dataset]:
    uid = generate_uid()
    out = [copy.deepcopy(ds) for ds in datasets]
    for ds in out:
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for k, v in attrs.items():
            setattr(ds, k, v)
    return out


def _stenoses(out: PipelineOutput) -> dict[str, float]:
    found: dict[str, float] = {}
    for f in out.result.findings:
        if f.kind == "stenosis":
            pct = f.measurement("stenosis_percent")
            assert pct is not None
            found[str(f.attribute("vessel"))] = pct
    return found


def _vessels(out: PipelineOutput) -> set[str]:
    note = next(n for n in out.result.notes if n.startswith("vessels named: "))
    return set(note[len("vessels named: "):].split(", "))


@pytest.fixture(scope="module")
def reference(study: Study, pipeline: CTAPipeline, tmp_path_factory: pytest.TempPathFactory
              ) -> PipelineOutput:
    """The arterial series alone, head-first supine, uncompressed."""
    s = _write(study.arterial, tmp_path_factory.mktemp("ref"))
    out = pipeline.analyze(_study([s], s))
    assert _stenoses(out), "the reference case must have stenoses to compare"
    assert {"CCA_L", "CCA_R", "ICA_L", "ICA_R"} <= _vessels(out)
    return out


def _same_result(out: PipelineOutput, ref: PipelineOutput, tolerance: float) -> None:
    got, want = _stenoses(out), _stenoses(ref)
    assert set(got) == set(want), (got, want)  # same vessels, same sides
    for name, pct in want.items():
        assert abs(got[name] - pct) <= tolerance, (name, got[name], pct)
    assert _vessels(out) == _vessels(ref)


def test_noncontrast_prescan_in_the_study_is_passed_over(
    study: Study, pipeline: CTAPipeline, reference: PipelineOutput, tmp_path: Path
) -> None:
    """The thin pre-scan arrives last and triggers the job: it is tried, refused for its
    phase (the note says why) and the arterial series is analysed."""
    arterial = _write(study.arterial, tmp_path / "a")
    plain = _write(study.noncontrast, tmp_path / "n")
    out = pipeline.analyze(_study([plain, arterial], trigger=plain))
    assert out.result.series_uid == arterial.series_uid
    assert f"{plain.series_uid}: no arterial contrast" in out.result.notes[0], out.result.notes
    _same_result(out, reference, tolerance=0.0)


def test_noncontrast_only_study_is_refused(study: Study, pipeline: CTAPipeline,
                                           tmp_path: Path) -> None:
    plain = _write(study.noncontrast, tmp_path / "n")
    with pytest.raises(NotAnalyzableError, match="no arterial contrast"):
        pipeline.analyze(_study([plain], plain))


def test_scanner_series_beside_the_arterial_one_are_not_chosen(
    study: Study, tmp_path: Path
) -> None:
    """Localiser, bolus-tracking monitor (one level scanned again and again), a 5 mm
    reformat and the console's thin MIP series (DERIVED): selection takes the arterial."""
    art = study.arterial
    localiser = _new_series(art[:1], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                            SeriesDescription="Topogram", SliceThickness=1.0)
    monitor = _new_series([art[120]] * 60, SeriesDescription="Bolus tracking",
                          SliceThickness=10.0)
    thick = _new_series(art[::5], SliceThickness=5.0, SeriesDescription="5mm axial")
    mip = _new_series(art, ImageType=["DERIVED", "SECONDARY", "AXIAL", "MIP"],
                      SeriesDescription="MIP 1mm")
    arterial = _write(art, tmp_path / "art")
    others = [_write(s, tmp_path / name) for name, s in
              (("loc", localiser), ("mon", monitor), ("thick", thick), ("mip", mip))]
    for trigger in [*others, arterial]:
        choice = select_cta_series(_study([*others, arterial], trigger))
        assert choice.chosen.series_uid == arterial.series_uid, choice.explanation()


def test_feet_first_reversed_and_shuffled(
    study: Study, pipeline: CTAPipeline, reference: PipelineOutput, tmp_path: Path
) -> None:
    """Feet-first supine: pixels mirrored to match the (-1, 0, 0) row cosine, slices sent
    caudal first with scrambled instance numbers. The pipeline turns the stack to the
    head-first layout (exactly: flips only), so the analysis, the renders (patient right
    on the viewer's left) and the findings are those of the reference; the SEG crops
    address the mirrored pixels as stored."""
    ffs = relayout(study.arterial, "FFS", -X, Y)
    ffs.reverse()
    numbers = list(range(1, len(ffs) + 1))
    random.Random(SEED).shuffle(numbers)
    for ds, n in zip(ffs, numbers, strict=True):
        ds.InstanceNumber = n
    s = _write(ffs, tmp_path / "ffs")
    out = pipeline.analyze(_study([s], s))
    _same_result(out, reference, tolerance=0.0)
    images, ref_images = dict(out.images), dict(reference.images)
    for view in ("mip_coronal", "mip_axial", "vr_000"):
        np.testing.assert_array_equal(images[view], ref_images[view])
    # SEG crops: the same voxels as the reference's, addressed in the mirrored storage
    # (relayout keeps SOP Instance UIDs; FFS stores columns right -> left).
    arrays, ref_arrays = dict(out.arrays), dict(reference.arrays)
    masks = sorted(k for k in arrays if k.startswith("mask_"))
    assert masks and masks == sorted(k for k in ref_arrays if k.startswith("mask_"))
    ref_slice = {str(u): n for n, u in enumerate(ref_arrays["slice_sop_uids"])}
    order = [ref_slice[str(u)] for u in arrays["slice_sop_uids"]]
    for key in masks:
        plane = (int(ffs[0].Rows), int(ffs[0].Columns))
        full, ref_full = (_full_mask(a, key, plane) for a in (arrays, ref_arrays))
        as_reference = np.zeros_like(ref_full)
        as_reference[order] = full[:, :, ::-1]
        np.testing.assert_array_equal(as_reference, ref_full)


def _full_mask(arrays: dict[str, np.ndarray], key: str, plane: tuple[int, int]) -> np.ndarray:
    n = len(arrays["slice_sop_uids"])
    mask = arrays[key].astype(bool)
    k, j, i = (int(v) for v in arrays["bbox_" + key[len("mask_"):]])
    full = np.zeros((n, *plane), dtype=bool)
    full[k:k + mask.shape[0], j:j + mask.shape[1], i:i + mask.shape[2]] = mask
    return full


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_losslessly_compressed_series_gives_the_same_result(
    study: Study, pipeline: CTAPipeline, reference: PipelineOutput, tmp_path: Path, syntax: str
) -> None:
    sent = [copy.deepcopy(ds) for ds in study.arterial]
    for ds in sent:
        ds.compress(syntax)
    s = _write(sent, tmp_path / "c")
    assert str(pydicom.dcmread(s.paths[0]).file_meta.TransferSyntaxUID) == syntax
    _same_result(pipeline.analyze(_study([s], s)), reference, tolerance=0.0)


@pytest.mark.parametrize("part", ["head", "neck"])
def test_partial_coverage_is_analysed_or_refused_with_a_reason(
    study: Study, pipeline: CTAPipeline, tmp_path: Path, part: str
) -> None:
    """Head-only or neck-only coverage (70 mm): a result for what is covered, or a
    clear refusal; never a crash, never a finding outside the covered range."""
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in study.arterial])
    order = np.argsort(z)
    keep = order[-70:] if part == "head" else order[:70]
    sent = _new_series([study.arterial[int(k)] for k in keep])
    s = _write(sent, tmp_path / part)
    try:
        out = pipeline.analyze(_study([s], s))
    except NotAnalyzableError as exc:
        assert str(exc), "a refusal names its reason"
        return
    lo, hi = z[keep].min() - 1.0, z[keep].max() + 1.0
    findings: list[Finding] = list(out.result.findings)
    for f in findings:
        assert lo <= f.center_lps[2] <= hi, (f.kind, f.center_lps, lo, hi)
