"""DICOM SEG + CT series loader on SEGs made three ways: our own exporter, highdicom with
frames shuffled and no derivation references, and a hand-built FRACTIONAL SEG on a coarser
grid than the CT. Fixtures are a 64 x 64 x 40 chest phantom written as DICOM."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian

from countyread.domain import Volume
from countyread.errors import InvalidInputError
from countyread.uids import derive_uid
from dicom_node.results.common import (
    ConfirmedFinding,
    CroppedMask,
    PatientInfo,
    Reviewer,
    SignedStudy,
    SourceSeries,
)
from dicom_node.results.seg import build_seg
from inference.selection import SelectionRules
from inference.volume import load_volume
from tests.conftest import REALDATA, require
from tests.inference.ct_series import COLS, ROWS, SPACING, write_multiframe, write_series
from training.loaders.dicomseg import SEG_SOP_CLASSES, load_dicom_seg
from training.phantoms import ChestCTConfig, CTPhantom, NoduleSpec, make_chest_ct
from training.phantoms.dicom_writer import write_dicom

SPECS = (NoduleSpec(14.0, "solid", "round", "lung"), NoduleSpec(10.0, "solid", "round", "lung"))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[CTPhantom, list[Path]]:
    cfg = ChestCTConfig(matrix=64, pixel_spacing_mm=3.0, slice_thickness_mm=2.5,
                        coverage_mm=100.0, vessel_points_per_tree=300, nodule_specs=SPECS)
    ph = make_chest_ct(5, cfg)
    assert ph.volume.shape == (40, 64, 64) and len(ph.nodules) == 2
    return ph, write_dicom(ph, tmp_path_factory.mktemp("ct"))


def _truth(ph: CTPhantom, n: int) -> np.ndarray:
    return np.asarray(ph.instance_mask == n + 1)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _signed(ph: CTPhantom, ct_paths: list[Path]) -> SignedStudy:
    """What results/inputs.py loads from the database, built directly from the phantom."""
    vol = load_volume(ct_paths, ph.volume.series_uid).volume
    by_sop = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
              for p in ct_paths}
    found = []
    for n in range(len(ph.nodules)):
        nz = np.nonzero(_truth(ph, n))
        lo = [int(x.min()) for x in nz]
        hi = [int(x.max()) + 1 for x in nz]
        crop = _truth(ph, n)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        found.append(ConfirmedFinding(
            id=n + 1, analysis_id=1, number=n + 1, kind="lung_nodule", source="radiologist",
            verdict="accepted", series_uid=vol.series_uid, sop_instance_uid=None,
            center_lps=ph.nodules[n].center_lps, measurements=(), attributes=(), category=None,
            model=None, key_image=None, mask=CroppedMask(crop, (lo[0], lo[1], lo[2])),
            comment=None))
    source = SourceSeries(str(vol.series_uid), ph.volume.frame_of_reference_uid,
                          vol.sop_instance_uids, by_sop)
    patient = PatientInfo("Test^P", "P1", None, None, None, None, None, None)
    return SignedStudy("1.2.826.0.1.3680043.9.7.1", 1, patient, Reviewer("doc", "Doc"), None,
                       tuple(found), (source,), ())


def test_own_exporter_seg_round_trips_to_the_phantom_truth(
    phantom: tuple[CTPhantom, list[Path]], tmp_path: Path
) -> None:
    ph, ct_paths = phantom
    built = build_seg(_signed(ph, ct_paths))
    assert built is not None
    built[0].save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg([*ct_paths, tmp_path / "seg.dcm"], rules=SelectionRules())
    vol = got.case.volume
    assert vol.shape == ph.volume.shape and np.allclose(vol.affine, ph.volume.affine, atol=1e-3)
    assert np.array_equal(vol.array, ph.volume.array)  # the service's own assembly
    assert vol.frame_of_reference_uid == ph.volume.frame_of_reference_uid
    assert len(got.masks) == 2 and got.empty_segments == ()
    for n, (mask, nod) in enumerate(zip(got.masks, got.case.nodules, strict=True)):
        truth = _truth(ph, n)
        assert mask.array.dtype == np.bool_ and mask.label == f"lung_nodule {n + 1}"
        assert _dice(mask.full(vol.shape), truth) > 0.9
        centroid = vol.index_to_lps(np.argwhere(truth).mean(axis=0))
        assert np.linalg.norm(np.subtract(nod.center_lps, centroid)) < 1.0
        assert np.linalg.norm(np.subtract(nod.center_lps, ph.nodules[n].center_lps)) < 2.0
        assert nod.source == f"dicom-seg:lung_nodule {n + 1}"
        assert abs(nod.diameter_mm - SPECS[n].diameter_mm) < 2.5

    # Frames placed only through their source images (no Plane Position, no orientation).
    seg = built[0]
    for item in seg.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
    del seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    folder = tmp_path / "study"  # a folder this time, with the series and the SEG inside
    (folder / "ct").mkdir(parents=True)
    for path in ct_paths:
        (folder / "ct" / path.name).symlink_to(path)
    seg.save_as(folder / "seg.dcm", enforce_file_format=True)
    (again,) = load_dicom_seg(folder)
    assert all(np.array_equal(a.full(vol.shape), b.full(vol.shape))
               for a, b in zip(again.masks, got.masks, strict=True))
    assert again.case.nodules == got.case.nodules
    for item in seg.PerFrameFunctionalGroupsSequence:
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = (
            derive_uid("t", "not-in-series"))
    seg.save_as(folder / "seg.dcm", enforce_file_format=True)
    with pytest.raises(InvalidInputError, match="no plane position and no source image"):
        load_dicom_seg(folder)


def _highdicom_seg(ph: CTPhantom, ct_paths: list[Path], seg_type: str = "BINARY") -> Dataset:
    sources = sorted((pydicom.dcmread(p) for p in ct_paths),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    labels = np.zeros(ph.volume.shape, dtype=np.uint8)
    for n in range(len(ph.nodules)):
        labels[_truth(ph, n)] = n + 1
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n + 1, segment_label=f"nodule {n + 1}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n in range(len(ph.nodules))
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels,
        segmentation_type=seg_type,
        segment_descriptions=descriptions, series_instance_uid=derive_uid("t", "seg-series"),
        series_number=99, sop_instance_uid=derive_uid("t", "seg", seg_type), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0")
    if seg_type != "BINARY":
        return seg
    # Plane positions only: no derivation references, frames in a shuffled order.
    frames = np.asarray(seg.pixel_array)
    order = np.random.default_rng(3).permutation(len(frames))
    items = list(seg.PerFrameFunctionalGroupsSequence)
    for item in items:
        del item.DerivationImageSequence
    seg.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
    seg.PixelData = pack_bits(frames[order])
    return seg


def test_highdicom_seg_shuffled_plane_positions_only(
    phantom: tuple[CTPhantom, list[Path]], tmp_path: Path
) -> None:
    ph, ct_paths = phantom
    seg = _highdicom_seg(ph, ct_paths)
    assert all("DerivationImageSequence" not in f for f in seg.PerFrameFunctionalGroupsSequence)
    del seg.ReferencedSeriesSequence  # the series is found by the shared frame of reference
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg([*ct_paths, tmp_path / "seg.dcm"])
    assert [m.label for m in got.masks] == ["nodule 1", "nodule 2"]
    assert {m.property_type for m in got.masks} == {"Nodule"}
    for n, mask in enumerate(got.masks):
        assert np.array_equal(mask.full(ph.volume.shape), _truth(ph, n))

    # A second reconstruction sharing the frame of reference: the one the service would
    # analyse (ORIGINAL) is chosen, through the service's own selection rules.
    derived = []
    for path in ct_paths:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = derive_uid("t", "derived")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = derive_uid(
            "t", "derived", path.name)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        derived.append(tmp_path / f"derived-{path.name}")
        ds.save_as(derived[-1], enforce_file_format=True)
    (both,) = load_dicom_seg([*derived, *ct_paths, tmp_path / "seg.dcm"])
    assert both.case.case_id == ph.volume.series_uid

    seg.FrameOfReferenceUID = derive_uid("t", "other-for")
    seg.ReferencedSeriesSequence = [Dataset()]
    seg.ReferencedSeriesSequence[0].SeriesInstanceUID = ph.volume.series_uid
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    with pytest.raises(InvalidInputError, match="frame of reference"):
        load_dicom_seg([*ct_paths, tmp_path / "seg.dcm"])


def test_two_seg_objects_one_series_and_a_label_map(
    phantom: tuple[CTPhantom, list[Path]], tmp_path: Path
) -> None:
    ph, ct_paths = phantom
    _highdicom_seg(ph, ct_paths).save_as(tmp_path / "a.dcm", enforce_file_format=True)
    labelmap = _highdicom_seg(ph, ct_paths, "LABELMAP")
    assert labelmap.SegmentationType == "LABELMAP"
    labelmap.save_as(tmp_path / "b.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg([*ct_paths, tmp_path / "a.dcm", tmp_path / "b.dcm"])
    assert len(got.masks) == 4 and len(got.seg_uids) == 2  # segment numbers 1, 2 in each
    for n, mask in enumerate(got.masks):
        assert np.array_equal(mask.full(ph.volume.shape), _truth(ph, n % 2))


def _fractional_seg(ph: CTPhantom, center: np.ndarray, radius: float) -> Dataset:
    """8-bit OCCUPANCY SEG on a grid twice as coarse as the CT in every direction, with a
    second segment that has no frame at all. Hand-built: highdicom ties frames to sources."""
    vol = ph.volume
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(SEG_SOP_CLASSES[0])
    ds.file_meta.MediaStorageSOPInstanceUID = UID(derive_uid("t", "frac"))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SEG_SOP_CLASSES[0], derive_uid("t", "frac")
    ds.Modality, ds.SeriesInstanceUID = "SEG", derive_uid("t", "frac-series")
    ds.FrameOfReferenceUID = vol.frame_of_reference_uid
    ds.ReferencedSeriesSequence = [Dataset()]
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = vol.series_uid
    ds.SegmentationType, ds.SegmentationFractionalType = "FRACTIONAL", "OCCUPANCY"
    ds.MaximumFractionalValue = 200
    ds.SegmentSequence = []
    for n, name in ((1, "soft nodule"), (2, "never drawn")):
        item = Dataset()
        item.SegmentNumber, item.SegmentLabel = n, name
        ds.SegmentSequence.append(item)
    sp_row, sp_col, step = 2 * vol.spacing[1], 2 * vol.spacing[2], 2 * vol.spacing[0]
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [sp_row, sp_col]
    shared.PixelMeasuresSequence[0].SliceThickness = step
    ds.SharedFunctionalGroupsSequence = [shared]
    rows = cols = 32
    origin = vol.origin + np.array([0.5 * vol.spacing[2], 0.5 * vol.spacing[1], 0.0])
    rr, cc = np.mgrid[0:rows, 0:cols]
    frames, per_frame = [], []
    for z in center[2] + step * np.arange(-3, 4) - 0.25 * step:
        x = origin[0] + cc * sp_col
        y = origin[1] + rr * sp_row
        dist = np.sqrt((x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2)
        frac = np.clip((radius - dist) / sp_col + 0.5, 0.0, 1.0)
        if not frac.any():
            continue
        frames.append(np.round(200 * frac).astype(np.uint8))
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [origin[0], origin[1], z]
        item.SegmentIdentificationSequence = [Dataset()]
        item.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 1
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame[::-1]  # any order
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(frames), rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.stack(frames[::-1]).tobytes()
    return ds


def test_fractional_seg_on_a_coarser_grid_is_resampled(
    phantom: tuple[CTPhantom, list[Path]], tmp_path: Path
) -> None:
    ph, ct_paths = phantom
    center = ph.volume.index_to_lps((20.3, 30.6, 28.2))
    _fractional_seg(ph, center, 8.0).save_as(tmp_path / "frac.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg([*ct_paths, tmp_path / "frac.dcm"])
    assert got.empty_segments == (2,) and len(got.masks) == 1
    (mask,), (nod,) = got.masks, got.case.nodules
    assert mask.array.dtype == np.float32 and mask.fractional_type == "OCCUPANCY"
    assert 0.0 < mask.array.max() <= 1.0 and 0.0 < mask.array[mask.array > 0].min() < 1.0
    assert np.linalg.norm(np.subtract(nod.center_lps, center)) < 1.5
    assert abs(nod.diameter_mm - 16.0) < 2.0
    # The painted voxels stay within the sphere plus one coarse voxel in each direction.
    kji = np.argwhere(mask.full(ph.volume.shape) > 0)
    far = np.linalg.norm(ph.volume.index_to_lps(kji) - center, axis=1)
    assert far.max() < 8.0 + np.linalg.norm([6.0, 6.0, 5.0])


def test_seg_of_a_series_not_given_is_an_error(
    phantom: tuple[CTPhantom, list[Path]], tmp_path: Path
) -> None:
    ph, ct_paths = phantom
    seg = _fractional_seg(ph, ph.volume.index_to_lps((20, 30, 30)), 6.0)
    seg.ReferencedSeriesSequence[0].SeriesInstanceUID = derive_uid("t", "absent")
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    with pytest.raises(InvalidInputError, match="not among the 1 image series"):
        load_dicom_seg([*ct_paths, tmp_path / "seg.dcm"])
    with pytest.raises(InvalidInputError, match="no DICOM Segmentation"):
        load_dicom_seg(ct_paths)
    with pytest.raises(InvalidInputError, match="missing DICOM folder"):
        load_dicom_seg(tmp_path / "nowhere")


def test_sagittal_seg_is_painted_onto_the_axial_grid(
    phantom: tuple[CTPhantom, list[Path]], tmp_path: Path
) -> None:
    """BINARY sagittal frames, 1 mm pixels, 1.5 mm apart, over an axial 3 x 3 x 2.5 mm CT."""
    ph, ct_paths = phantom
    vol = ph.volume
    center, radius = vol.index_to_lps((20.0, 30.4, 31.7)), 9.0
    ds = _fractional_seg(ph, center, radius)
    ds.SegmentationType = "BINARY"
    del ds.SegmentationFractionalType, ds.MaximumFractionalValue
    shared = ds.SharedFunctionalGroupsSequence[0]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    shared.PixelMeasuresSequence[0].PixelSpacing = [1.0, 1.0]
    shared.PixelMeasuresSequence[0].SliceThickness = 1.5
    rr, cc = np.mgrid[0:60, 0:60]
    frames, items = [], []
    for x in center[0] + 1.5 * np.arange(-8, 9):
        ipp = np.array([x, center[1] - 29.5, center[2] + 29.5])
        y, z = ipp[1] + cc * 1.0, ipp[2] - rr * 1.0
        inside = (x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2 <= radius**2
        if not inside.any():
            continue
        frames.append(inside)
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [float(v) for v in ipp]
        item.SegmentIdentificationSequence = [Dataset()]
        item.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 1
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(frames), 60, 60
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = pack_bits(np.stack(frames).astype(np.uint8))
    ds.save_as(tmp_path / "sag.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg([*ct_paths, tmp_path / "sag.dcm"])
    (mask,) = got.masks
    kji = np.indices(vol.shape).reshape(3, -1).T
    truth = (np.linalg.norm(vol.index_to_lps(kji) - center, axis=1) <= radius).reshape(vol.shape)
    assert mask.array.dtype == np.bool_ and _dice(mask.full(vol.shape), truth) > 0.85
    assert np.linalg.norm(np.subtract(got.case.nodules[0].center_lps, center)) < 1.0


def test_real_ct_with_a_seg_of_its_annotated_boxes(tmp_path: Path) -> None:
    """Lung-PET-CT-Dx A0002 (two reconstructions, one frame of reference): ellipses in the
    published boxes of the B40f slices -> highdicom SEG -> loader, with and without the
    SEG naming its series."""
    import xml.etree.ElementTree as ET

    root = REALDATA / "lung-ct-A0002"
    require(root.is_dir(), f"real CT not present at {root}")
    folder = tmp_path / "study"
    for name in ("series-B40f", "series-B70f"):
        (folder / name).mkdir(parents=True)
        for p in sorted((root / name).iterdir()):
            (folder / name / p.name).symlink_to(p)
    sources = sorted((pydicom.dcmread(p) for p in (root / "series-B40f").iterdir()),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    labels = np.zeros((len(sources), 512, 512), dtype=np.uint8)
    rr, cc = np.mgrid[0:512, 0:512]
    for k, src in enumerate(sources):
        xml = root / "annotation" / f"{src.SOPInstanceUID}.xml"
        if not xml.is_file():
            continue
        for box in ET.parse(xml).getroot().iter("bndbox"):
            x0, y0, x1, y1 = (float(box.findtext(t) or 0) for t in ("xmin", "ymin", "xmax", "ymax"))
            inside = (((cc - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2
                      + ((rr - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2) <= 1.0
            labels[k][inside] = 1
    assert labels.any()
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="tumour",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)],
        series_instance_uid=derive_uid("t", "real-seg"), series_number=99,
        sop_instance_uid=derive_uid("t", "real-seg", 1), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0")
    seg.save_as(folder / "seg.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg(folder, rules=SelectionRules())
    assert got.case.case_id == sources[0].SeriesInstanceUID
    (mask,) = got.masks
    assert np.array_equal(mask.full(got.case.volume.shape), labels.astype(bool))
    assert got.case.nodules[0].diameter_mm > 30.0  # the annotated lesions are masses

    del seg.ReferencedSeriesSequence  # found by frame of reference: the sharp B70f is chosen
    seg.save_as(folder / "seg.dcm", enforce_file_format=True)
    (sharp,) = load_dicom_seg(folder)
    assert sharp.case.case_id != got.case.case_id
    assert np.allclose(sharp.case.volume.affine, got.case.volume.affine, atol=1e-3)
    assert np.array_equal(sharp.masks[0].full(sharp.case.volume.shape), labels.astype(bool))


def _source_only_seg(series_uid: str, refs: list[tuple[str, int | None]],
                     frames: list[np.ndarray]) -> Dataset:
    """A BINARY SEG whose frames say only which source image they derive from."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(SEG_SOP_CLASSES[0])
    ds.file_meta.MediaStorageSOPInstanceUID = UID(derive_uid("t", "src-only", series_uid))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SEG_SOP_CLASSES[0], derive_uid("t", "src-only", series_uid)
    ds.Modality, ds.SegmentationType = "SEG", "BINARY"
    ds.ReferencedSeriesSequence = [Dataset()]
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = series_uid
    ds.SegmentSequence = [Dataset()]
    ds.SegmentSequence[0].SegmentNumber, ds.SegmentSequence[0].SegmentLabel = 1, "block"
    ds.PerFrameFunctionalGroupsSequence = []
    for sop, frame in refs:
        src = Dataset()
        src.ReferencedSOPInstanceUID = sop
        if frame is not None:
            src.ReferencedFrameNumber = frame
        deriv = Dataset()
        deriv.SourceImageSequence = [src]
        item = Dataset()
        item.DerivationImageSequence = [deriv]
        ds.PerFrameFunctionalGroupsSequence.append(item)
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(frames), frames[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pack_bits(np.stack(frames).astype(np.uint8))
    return ds


def _expected(volume: Volume, centres: list[np.ndarray]) -> np.ndarray:
    """The CT voxels nearest to source pixel centres (N x 3 LPS mm per source frame)."""
    out = np.zeros(volume.shape, dtype=bool)
    for frame in centres:
        out[tuple(np.rint(volume.lps_to_index(frame)).astype(int).T)] = True
    return out


def test_source_references_on_tilted_and_enhanced_ct(tmp_path: Path) -> None:
    """No plane positions: tilted slices land where they were imaged (not at their slice
    index), and frames of an Enhanced CT are found by ReferencedFrameNumber."""
    z = [float(k) for k in range(12)]
    block = np.zeros((ROWS, COLS), dtype=bool)
    block[5:9, 6:10] = True
    rr, cc = np.nonzero(block)
    tilted = write_series(tmp_path / "tilted", z, tilt_y_per_mm=0.1)
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in tilted]
    seg = _source_only_seg(str(heads[0].SeriesInstanceUID),
                           [(str(h.SOPInstanceUID), None) for h in heads], [block] * len(heads))
    seg.save_as(tmp_path / "tilted.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg([*tilted, tmp_path / "tilted.dcm"])
    assert any("gantry tilt" in n for n in got.notes)
    centres = [np.c_[-6.0 + cc * SPACING, float(h.ImagePositionPatient[1]) + rr * SPACING,
                     np.full(len(rr), float(h.ImagePositionPatient[2]))] for h in heads]
    vol = got.case.volume
    assert np.array_equal(got.masks[0].full(vol.shape), _expected(vol, centres))

    mf = write_multiframe(tmp_path / "enhanced", z)
    head = pydicom.dcmread(mf, stop_before_pixels=True)
    picked = (2, 7)  # 1-based frame numbers; frames are stored in reverse z order
    seg = _source_only_seg(str(head.SeriesInstanceUID),
                           [(str(head.SOPInstanceUID), f) for f in picked], [block, block])
    seg.save_as(tmp_path / "mf-seg.dcm", enforce_file_format=True)
    (got,) = load_dicom_seg([mf, tmp_path / "mf-seg.dcm"])
    vol = got.case.volume
    want = [np.c_[-6.0 + cc * SPACING, -6.0 + rr * SPACING, np.full(len(rr), z[len(z) - f])]
            for f in picked]
    assert np.array_equal(got.masks[0].full(vol.shape), _expected(vol, want))
