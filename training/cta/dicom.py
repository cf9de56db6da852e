"""Write a synthetic CTA as a DICOM CT series through the project phantom writer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from countyread.domain import Volume
from countyread.uids import derive_uid
from training.cta.synth import SynthCTA
from training.phantoms.dicom_writer import DicomOptions, phantom_datasets


@dataclass(frozen=True, slots=True)
class _Acquisition:
    kernel: str = "standard"
    kvp: int = 100
    mas: float = 200.0


@dataclass(frozen=True, slots=True)
class HeadNeckCTA:
    """The attributes the phantom writer reads from a CT phantom."""

    seed: int
    volume: Volume
    acquisition: _Acquisition
    body_part: str = "HEADNECK"
    modality: str = "CTA"


def write_series(
    phantom: SynthCTA, seed: int, directory: Path, vendor: str | None = None
) -> list[Path]:
    """One file per slice (``IM00001.dcm``...); UIDs derive from ``seed`` and the phase."""
    series_uid = derive_uid("countyread-synth-cta", seed, phantom.phase, "series")
    vol = replace(phantom.volume, series_uid=series_uid)
    case = HeadNeckCTA(seed, vol, _Acquisition())
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in phantom_datasets(case, DicomOptions(vendor=vendor)):
        path = directory / f"IM{int(ds.InstanceNumber):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
