"""Every result object: encoded, read back by pydicom and highdicom, valid per dciodvfy."""

from __future__ import annotations

from io import BytesIO

import highdicom as hd
import pydicom
import pytest

from countyread.context import AppContext
from dicom_node.results import build_results
from dicom_node.results.builder import ResultSet
from tests.results.conftest import dciodvfy_errors
from tests.results.seed import MODEL, PATIENT_NAME, REVIEWER_NAME, SeededStudy


@pytest.fixture()
def built(ctx: AppContext, seeded: SeededStudy) -> ResultSet:
    return build_results(ctx, seeded.study_uid)


def _read(ctx: AppContext, rel: str) -> pydicom.Dataset:
    data = (ctx.settings.results_dir / rel).read_bytes()
    return pydicom.dcmread(BytesIO(data))


def test_every_family_is_built_and_valid(ctx: AppContext, built: ResultSet) -> None:
    families = [o.family for o in built.objects]
    assert families.count("SEG") == 1
    assert families.count("SC") == 3  # one per confirmed finding, the rejected one left out
    assert families.count("SR") == 1
    assert families.count("KOS") == 1
    for o in built.objects:
        path = ctx.settings.results_dir / o.path
        assert path.parts[-3:-1] == (f"r{built.revision}", o.family)
        assert path.name == f"{o.sop_instance_uid}.dcm"
        assert dciodvfy_errors(path) == [], o.family
        ds = _read(ctx, o.path)
        assert ds.SOPInstanceUID == o.sop_instance_uid
        assert ds.StudyInstanceUID == built.study_uid
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == PATIENT_NAME
        equipment = ds.ContributingEquipmentSequence
        assert any(
            e.get("DeviceSerialNumber") == MODEL["sha256"]
            and e.ManufacturerModelName == MODEL["name"]
            and MODEL["version"] in e.SoftwareVersions
            for e in equipment
        ), o.family


def test_sr_is_a_verified_tid1500_report(
    ctx: AppContext, built: ResultSet, seeded: SeededStudy
) -> None:
    ds = _read(ctx, built.of("SR")[0].path)
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert sr.VerificationFlag == "VERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    observer = sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName).rstrip("^") == REVIEWER_NAME
    assert "County Review Center" in observer.VerifyingOrganization
    content = sr.content
    groups = hd.sr.MeasurementReport.from_sequence([ds]).get_volumetric_roi_measurement_groups()
    assert len(groups) == 3
    seg = _read(ctx, built.of("SEG")[0].path)
    seg_tracking = {s.TrackingUID for s in seg.SegmentSequence}
    for group in groups:
        assert group.tracking_uid in seg_tracking
        assert group.finding_type.value == "27925004"  # SCT Nodule
        names = {m.name.meaning: m.value for m in group.get_measurements()}
        assert {"Long axis", "Short axis", "Diameter", "Volume"} <= set(names)
        evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
        assert evaluations["Lung-RADS v2022 assessment category"] == "Lung-RADS 4A"
        assert group.finding_sites[0].value.value in {"45653009", "90572001", "72481006"}
        assert group.referenced_segment is not None
    assert content is not None


def test_seg_has_one_segment_per_masked_finding(
    ctx: AppContext, built: ResultSet, seeded: SeededStudy
) -> None:
    seg = hd.seg.segread(ctx.settings.results_dir / built.of("SEG")[0].path)
    assert seg.number_of_segments == 3
    referenced = {
        r.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for r in s.ReferencedInstanceSequence
    }
    assert referenced <= set(seeded.sop_uids) and referenced
    # Every synthetic mask has 4 x 4 pixels on 3 slices; frames hold one segment each.
    assert int(seg.pixel_array.sum()) == 3 * 48
    assert seg.get_segment_description(1).algorithm_type.value == "AUTOMATIC"  # accepted
    assert seg.get_segment_description(2).algorithm_type.value == "SEMIAUTOMATIC"  # edited


def test_key_images_carry_caption_and_kos_references_them(
    ctx: AppContext, built: ResultSet
) -> None:
    for o in built.of("SC"):
        ds = _read(ctx, o.path)
        assert ds.PhotometricInterpretation == "RGB"
        assert ds.Columns >= 512
        assert "结节" in ds.ImageComments and "Nodule" in ds.ImageComments
        assert ds.BurnedInAnnotation == "YES"
        # The caption band at the bottom is not black any more.
        assert ds.pixel_array[-ds.Rows // 12 :].max() > 0
    kos = hd.ko.KeyObjectSelectionDocument.from_dataset(_read(ctx, built.of("KOS")[0].path))
    referenced = {
        str(i.ReferencedSOPInstanceUID)
        for study in kos.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert referenced == {o.sop_instance_uid for o in built.of("SC", "SR")}
    description = next(
        i.TextValue
        for i in kos.ContentSequence
        if i.ConceptNameCodeSequence[0].CodeValue == "113012"  # Key Object Description
    )
    assert "右肺上叶实性结节" in description  # the signed impression (seed report)


def test_chinese_names_round_trip_in_sr_bytes(ctx: AppContext, built: ResultSet) -> None:
    raw = (ctx.settings.results_dir / built.of("SR")[0].path).read_bytes()
    assert PATIENT_NAME.encode("utf-8") in raw
    assert REVIEWER_NAME.encode("utf-8") in raw
    ds = pydicom.dcmread(BytesIO(raw))
    person = [
        item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121008"
    ]  # Person Observer Name
    assert person and str(person[0].PersonName).rstrip("^") == REVIEWER_NAME


@pytest.mark.parametrize("slice_order", [True, False], ids=["npz-order", "sorted-by-position"])
def test_seg_frames_sit_on_the_masked_slices(ctx: AppContext, slice_order: bool) -> None:
    from tests.results.seed import seed_study

    study = seed_study(ctx, n_findings=2, slice_order=slice_order, tag=f"order-{slice_order}")
    seg = hd.seg.segread(
        ctx.settings.results_dir / build_results(ctx, study.study_uid).of("SEG")[0].path
    )
    # Seeded masks: finding i covers slices k0 .. k0+2 with k0 = 2 + 3 i.
    for number, k0 in ((1, 2), (2, 5)):
        frames = [
            f
            for f in seg.PerFrameFunctionalGroupsSequence
            if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == number
        ]
        sources = {
            f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for f in frames
        }
        assert sources == set(study.sop_uids[k0 : k0 + 3])
