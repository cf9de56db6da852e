"""``countyread export-labels``: signed review findings and DICOM SEG cases to a training set."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from countyread.context import AppContext
from training.loaders.dicomseg import load_dicom_seg
from training.loaders.export import FORMATS, LabelledCT, from_review, from_seg, write_labels
from training.loaders.review import load_review

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  countyread export-labels --format luna16 --out var/labels/luna16
  countyread export-labels --format nifti --out var/labels/nifti --seg /data/seg-cases
  countyread export-labels --format nifti --out var/labels/seg-only --no-review --seg DIR

What becomes a label: every accepted, edited or radiologist-added lung nodule/mass of a
signed report (positive), and every rejected AI finding (hard negative, candidates.csv
class 0). A verdict counts once its report is signed; a report reopened for amendment
keeps its last signed labels until it is signed again. --include-unsigned takes every
current verdict instead (research only: unsigned verdicts are not reviewed results).

luna16: OUT/subset0/<series uid>.mhd, OUT/annotations.csv, OUT/candidates.csv; read back
  with training.loaders.luna16.load_luna16(OUT, OUT/annotations.csv) and
  read_candidates(OUT/candidates.csv).
nifti:  OUT/images/<id>.nii.gz, OUT/labels/<id>.nii.gz (SEG masks, else spheres of the
  confirmed diameter), OUT/manifest.csv, OUT/candidates.csv; read back with
  training.loaders.nifti.load_nifti_pair(image, label).
Positions are LPS mm. No patient name or ID is written. The database and file store are
those of the current settings (COUNTYREAD_* variables, COUNTYREAD_CONFIG).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="countyread export-labels",
        description="Export confirmed review findings (and DICOM SEG cases) as a training "
        "set in a public format the training loaders read back.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--format", choices=FORMATS, required=True,
                   help="luna16 (.mhd + annotations.csv) or nifti (image + label pairs)")
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--seg", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder of CT series with DICOM SEG objects to add (repeatable)")
    p.add_argument("--no-review", action="store_true",
                   help="do not read review findings from the database (SEG cases only)")
    p.add_argument("--include-unsigned", action="store_true",
                   help="also take verdicts of reports not (yet) signed; research only")
    return p


def _cases(args: argparse.Namespace) -> Iterator[LabelledCT]:
    for folder in args.seg:
        for seg in load_dicom_seg(folder):
            yield from_seg(seg)
    if args.no_review:
        return
    ctx = AppContext.create()
    try:
        for case in load_review(ctx, include_unsigned=args.include_unsigned):
            yield from from_review(case)
    finally:
        ctx.close()


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.no_review and not args.seg:
        _parser().error("--no-review needs at least one --seg folder")
    summary = write_labels(_cases(args), args.out, args.format)
    if not summary.cases:
        print("nothing to export: no signed review finding or SEG case with a label found",
              file=sys.stderr)
        return 1
    print(f"{summary.cases} case(s), {summary.positives} positive and {summary.negatives} "
          f"negative label(s) written to {args.out} ({args.format})")
    if summary.point_labels:
        print(f"{summary.point_labels} positive(s) without a diameter are in candidates.csv "
              "only")
    return 0
