"""Training patches from labelled real CT (LUNA16 ``.mhd`` + annotations.csv, NIfTI pairs).

Each ``CTCase`` from ``training.loaders`` becomes patches the way a phantom does (the same
candidate generator, head-of-list and random negatives, truth-centred copies); a nodule
known only by centre and diameter gets a sphere as its mask target. One ``.npz`` per case,
named by a hash of source and case id (case ids are UIDs or file names).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from countyread.errors import InvalidInputError
from training.ct_nodule.config import DataConfig, RealSource
from training.ct_nodule.dataset import (
    MIN_TRUTH_MM,
    TruthSite,
    is_hard,
    onnx_scorer,
    sphere_mask,
    volume_patches,
)
from training.loaders.luna16 import load_luna16
from training.loaders.nifti import load_nifti_pair
from training.loaders.types import CTCase

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def source_cases(source: RealSource) -> Iterator[CTCase]:
    """The cases of one source, in a stable order, at most ``max_cases``."""
    if source.kind == "luna16":
        cases: Iterator[CTCase] = load_luna16(source.root, source.labels)
    else:
        cases = _nifti_cases(source.root, source.labels)
    return islice(cases, source.max_cases)


def _nifti_cases(images: Path, labels: Path) -> Iterator[CTCase]:
    if not images.is_dir() or not labels.is_dir():
        raise InvalidInputError(f"NIfTI source needs two folders: {images}, {labels}")
    paths = sorted(p for p in images.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    missing = [p.name for p in paths if not (labels / p.name).exists()]
    if missing:
        raise InvalidInputError(f"{len(missing)} images without a label map: {missing[:3]}")
    for p in paths:
        yield load_nifti_pair(p, labels / p.name, allow_empty=True)


def case_sites(case: CTCase) -> list[TruthSite]:
    """Labelled spheres on the case's grid (type unknown: only size marks hard ones)."""
    vol = case.volume
    out = []
    for n in case.nodules:
        if n.diameter_mm < MIN_TRUTH_MM:
            continue
        centre = np.asarray(vol.lps_to_index(n.center_lps), dtype=np.float64)
        out.append(
            TruthSite(
                centre,
                n.diameter_mm,
                is_hard(None, n.diameter_mm),
                sphere_mask(centre, n.diameter_mm, vol.spacing),
            )
        )
    return out


def case_file(out_dir: Path, source: RealSource, case_id: str) -> Path:
    key = hashlib.sha256(f"{source.kind}:{source.root}:{case_id}".encode()).hexdigest()[:16]
    return out_dir / f"real_{source.kind}_{key}.npz"


def build_real_cases(
    sources: tuple[RealSource, ...], data: DataConfig, out_dir: Path
) -> list[Path]:
    """Make (or reuse) the patch file of every real case; returns them in source order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scorer = onnx_scorer(data.hard_negative_model) if data.hard_negative_model else None
    paths = []
    for source in sources:
        for n, case in enumerate(source_cases(source)):
            path = case_file(out_dir, source, case.case_id)
            paths.append(path)
            if path.exists():
                continue
            patches = volume_patches(case.volume, case_sites(case), data, n, scorer)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(
                tmp,
                patches=patches.patches,
                masks=patches.masks,
                labels=patches.labels,
                scores=patches.scores,
            )
            tmp.rename(path)
            logger.info(
                "real training case written",
                extra={
                    "source": source.kind,
                    "patches": len(patches.labels),
                    "positives": int(patches.labels.sum()),
                },
            )
    return paths
