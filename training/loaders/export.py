"""Write labelled CT cases in the public formats the loaders read back (LUNA16, NIfTI).

A hospital's signed review findings and its DICOM SEG cases become a training set:

- ``luna16``: ``subset0/<series uid>.mhd`` (+ ``.zraw``), ``annotations.csv`` (seriesuid,
  coordX, coordY, coordZ, diameter_mm; LPS mm = ITK physical space) and
  ``candidates.csv`` (class 1 for every confirmed nodule, class 0 for every rejected AI
  finding: the hard negatives LUNA16's false-positive-reduction track uses);
- ``nifti``: ``images/<id>.nii.gz`` + ``labels/<id>.nii.gz`` (RAS affine, nodules drawn as
  their SEG masks, or as spheres of the confirmed diameter), ``manifest.csv`` and the same
  ``candidates.csv``.

Only voxels and geometry are written: no patient name or ID leaves in these files.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from countyread.domain import Volume
from countyread.errors import CountyReadError, InvalidInputError
from inference.volume import load_volume
from training.loaders.dicomseg import SegCase, scan_files
from training.loaders.review import ReviewCase
from training.loaders.types import NoduleLabel
from training.phantoms.nifti import ras_affine

logger = logging.getLogger(__name__)

FORMATS = ("luna16", "nifti")


@dataclass(frozen=True, slots=True)
class LabelledCT:
    """One CT volume with its positive and negative labels; ``mask`` when voxels are known."""

    case_id: str
    volume: Volume
    positives: tuple[NoduleLabel, ...]
    negatives: tuple[NoduleLabel, ...] = ()
    mask: npt.NDArray[np.bool_] | None = None


@dataclass(frozen=True, slots=True)
class ExportSummary:
    cases: int
    positives: int
    negatives: int
    point_labels: int  # positives without a diameter: in candidates.csv only


def from_seg(seg: SegCase) -> LabelledCT:
    """A SEG case with the union of its segment masks (fractions binarised at 0.5)."""
    shape = seg.case.volume.shape
    mask = np.zeros(shape, dtype=bool)
    for m in seg.masks:
        mask |= np.asarray(m.full(shape)) >= 0.5
    return LabelledCT(seg.case.case_id, seg.case.volume, seg.case.nodules, (), mask)


def _inside(volume: Volume, label: NoduleLabel) -> bool:
    kji = volume.lps_to_index(label.center_lps)
    return bool(np.all(kji >= -0.5) and np.all(kji <= np.asarray(volume.shape) - 0.5))


def from_review(case: ReviewCase) -> Iterator[LabelledCT]:
    """One LabelledCT per series of the study whose volume assembles; each label goes to
    every series whose volume contains its centre (a study may hold two reconstructions)."""
    _, by_series, _ = scan_files(list(case.instance_paths))
    placed: set[int] = set()
    for series_uid in sorted(by_series):
        try:
            volume = load_volume(by_series[series_uid], series_uid).volume
        except CountyReadError as exc:
            logger.warning("series skipped in label export",
                           extra={"series_uid": series_uid, "reason": str(exc)})
            continue
        pos = tuple(n for n in case.positives if _inside(volume, n))
        neg = tuple(n for n in case.negatives if _inside(volume, n))
        placed.update(id(n) for n in (*pos, *neg))
        if pos or neg:
            yield LabelledCT(series_uid, volume, pos, neg)
    lost = len(case.positives) + len(case.negatives) - len(placed)
    if lost:
        logger.warning("labels outside every stored series",
                       extra={"study_uid": case.study_uid, "labels": lost})


def _sphere_mask(volume: Volume, labels: tuple[NoduleLabel, ...]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(volume.shape, dtype=bool)
    spacing = np.asarray(volume.spacing)
    for n in labels:
        if n.diameter_mm <= 0:
            continue
        r = n.diameter_mm / 2.0
        c = volume.lps_to_index(n.center_lps)
        lo = np.maximum(np.floor(c - r / spacing).astype(int), 0)
        hi = np.minimum(np.ceil(c + r / spacing).astype(int) + 1, volume.shape)
        if np.any(hi <= lo):
            continue
        kji = np.indices(tuple(hi - lo)).reshape(3, -1).T + lo
        near = np.linalg.norm(volume.index_to_lps(kji) - np.asarray(n.center_lps), axis=1) <= r
        mask[tuple(kji[near].T)] = True
    return mask


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _candidates(case: LabelledCT) -> list[list[object]]:
    return [[case.case_id, *(f"{v:.3f}" for v in n.center_lps), cls]
            for cls, labels in ((1, case.positives), (0, case.negatives)) for n in labels]


def _write_mhd(volume: Volume, path: Path) -> None:
    """ITK image of a Volume: the inverse of :func:`training.loaders.types.affine_from_itk`."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))  # [slice, row, column]
    sl, row, col = volume.spacing
    img.SetSpacing((col, row, sl))
    img.SetOrigin(tuple(float(v) for v in volume.origin))
    img.SetDirection(tuple(float(v) for v in volume.direction.ravel()))
    sitk.WriteImage(img, str(path), useCompression=True)


def _save_nifti(array: npt.NDArray[np.generic], volume: Volume, path: Path) -> None:
    affine = ras_affine(volume.affine)
    img = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine)
    img.set_sform(affine, code=1)  # scanner-anatomical
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def write_labels(cases: Iterable[LabelledCT], out: Path, fmt: str) -> ExportSummary:
    """Write ``cases`` under ``out`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    folders = [out / "subset0"] if fmt == "luna16" else [out / "images", out / "labels"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    annotations: list[list[object]] = []
    candidates: list[list[object]] = []
    manifest: list[list[object]] = []
    n_cases = n_pos = n_neg = n_point = 0
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise InvalidInputError(f"case {case.case_id} given twice")
        seen.add(case.case_id)
        n_cases += 1
        n_pos += len(case.positives)
        n_neg += len(case.negatives)
        n_point += sum(1 for n in case.positives if n.diameter_mm <= 0)
        candidates += _candidates(case)
        if fmt == "luna16":
            _write_mhd(case.volume, out / "subset0" / f"{case.case_id}.mhd")
            annotations += [[case.case_id, *(f"{v:.3f}" for v in n.center_lps),
                             f"{n.diameter_mm:.2f}"] for n in case.positives if n.diameter_mm > 0]
            continue
        mask = case.mask if case.mask is not None else _sphere_mask(case.volume, case.positives)
        image, label = (out / d / f"{case.case_id}.nii.gz" for d in ("images", "labels"))
        _save_nifti(np.asarray(case.volume.array, dtype=np.int16), case.volume, image)
        _save_nifti(mask.astype(np.uint8), case.volume, label)
        manifest.append([case.case_id, image.relative_to(out), label.relative_to(out),
                         len(case.positives)])
    if fmt == "luna16":
        _write_csv(out / "annotations.csv",
                   ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], annotations)
    else:
        _write_csv(out / "manifest.csv", ["case_id", "image", "label", "nodules"], manifest)
    _write_csv(out / "candidates.csv", ["seriesuid", "coordX", "coordY", "coordZ", "class"],
               candidates)
    logger.info("labels exported", extra={"format": fmt, "cases": n_cases, "positives": n_pos,
                                          "negatives": n_neg})
    return ExportSummary(n_cases, n_pos, n_neg, n_point)
