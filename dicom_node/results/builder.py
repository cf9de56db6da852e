"""Build every result object of a signed revision and write them durably.

Layout: ``results_dir/<study>/r<revision>/<family>/<sop>.dcm`` plus ``manifest.json``
written last. A revision whose manifest exists is never rebuilt, so a retry sends the
very same files; a new revision (an amendment) gets new UIDs and a new directory.

Pipelines with extra image series (CTA MIP / VR / CPR renders) plug in through
:func:`register_series`: a callable that turns the :class:`SignedStudy` into datasets
of one family (normally ``RENDER``), built with ``signed.uid(...)`` for their UIDs.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from countyread.context import AppContext
from countyread.store import write_durable
from countyread.uids import derive_uid, validate_uid
from dicom_node.results.common import MANUFACTURER, Family, SignedStudy
from dicom_node.results.inputs import load_alert_study, load_signed_study
from dicom_node.results.ko import build_kos
from dicom_node.results.render import build_cta_renders
from dicom_node.results.sc import build_key_images
from dicom_node.results.seg import build_seg
from dicom_node.results.sr import build_sr

logger = logging.getLogger(__name__)

SeriesBuilder = Callable[[SignedStudy], list[Dataset]]
_EXTRA: dict[str, tuple[Family, SeriesBuilder]] = {}


def register_series(name: str, builder: SeriesBuilder, family: Family = Family.RENDER) -> None:
    """Add an extra image series (e.g. ``"cta_mip"``) to every future build."""
    _EXTRA[name] = (family, builder)


def unregister_series(name: str) -> None:
    _EXTRA.pop(name, None)


register_series("cta_renders", build_cta_renders)


@dataclass(frozen=True, slots=True)
class ResultObject:
    """One written object; ``path`` is relative to ``settings.results_dir``."""

    family: str
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    path: str

    def delivery_entry(self) -> dict[str, Any]:
        """The object's row in a delivery's ``objects`` list, not yet sent."""
        return {
            "family": self.family,
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "series_uid": self.series_uid,
            "path": self.path,
            "status": "pending",
            "dimse_status": None,
            "error": None,
        }


@dataclass(frozen=True, slots=True)
class ResultSet:
    study_uid: str
    revision: int
    objects: tuple[ResultObject, ...]

    def of(self, *families: str) -> list[ResultObject]:
        return [o for o in self.objects if o.family in families]


def revision_dir(results_dir: Path, study_uid: str, revision: int) -> Path:
    return results_dir / validate_uid(study_uid, "StudyInstanceUID") / f"r{revision}"


def _encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _read_manifest(path: Path) -> ResultSet | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return ResultSet(
        data["study_uid"], int(data["revision"]), tuple(ResultObject(**o) for o in data["objects"])
    )


def _previous_sr(results_dir: Path, signed: SignedStudy) -> list[Dataset]:
    """The SR of the latest earlier revision that was built, if any."""
    for rev in range(signed.revision - 1, 0, -1):
        previous = _read_manifest(
            revision_dir(results_dir, signed.study_uid, rev) / "manifest.json"
        )
        if previous is None:
            continue
        return [pydicom.dcmread(results_dir / o.path) for o in previous.of(Family.SR)]
    return []


def _sr_evidence(signed: SignedStudy) -> list[Dataset]:
    """Key slices of the findings, or one instance of the study when nothing is found."""
    evidence: dict[str, Dataset] = {}
    for f in signed.findings:
        src = signed.source(f.series_uid)
        if src is not None and f.sop_instance_uid:
            ds = src.header(f.sop_instance_uid)
            if ds is not None:
                evidence[f.sop_instance_uid] = ds
    if not evidence and signed.sources and len(signed.sources[0]):
        first = signed.sources[0].at(0)
        evidence[str(first.SOPInstanceUID)] = first
    return list(evidence.values())


def build_datasets(signed: SignedStudy, previous_sr: list[Dataset]) -> list[tuple[Family, Dataset]]:
    """All objects of one signed revision, in sending order (referenced before referring)."""
    out: list[tuple[Family, Dataset]] = []
    seg_built = build_seg(signed)
    seg, segments = seg_built if seg_built is not None else (None, {})
    if seg is not None:
        out.append((Family.SEG, seg))
    key_images = build_key_images(signed)
    out.extend((Family.SC, sc) for sc in key_images)
    sr = build_sr(signed, _sr_evidence(signed), seg, segments, previous_sr)
    out.append((Family.SR, sr))
    kos = build_kos(signed, [*key_images, sr])
    if kos is not None:
        out.append((Family.KOS, kos))
    for name, (family, builder) in sorted(_EXTRA.items()):
        datasets = builder(signed)
        logger.info("extra series built", extra={"series": name, "count": len(datasets)})
        out.extend((family, ds) for ds in datasets)
    return out


def warm_up() -> None:
    """Pay one-time costs (highdicom's standard tables, the caption font) off the sign path.

    The first object highdicom builds in a process loads its copy of the standard (about
    a second); a service calls this at start so the first sign-off is as fast as the rest.
    """
    from dicom_node.results.sc import _font

    _font(14)
    hd.sc.SCImage(
        pixel_array=np.zeros((2, 2, 3), dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=derive_uid("warm-up", "study"),
        series_instance_uid=derive_uid("warm-up", "series"),
        series_number=1,
        sop_instance_uid=derive_uid("warm-up", "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
    )


def build_results(ctx: AppContext, study_uid: str) -> ResultSet:
    """Build (once) and durably write every result object of the signed revision."""
    signed = load_signed_study(ctx, study_uid)
    return _write_once(ctx, signed, lambda: build_datasets(
        signed, _previous_sr(ctx.settings.results_dir, signed)))


def build_alert(ctx: AppContext, study_uid: str) -> ResultSet:
    """Build (once) the unreviewed alert of a study: key images and an SR, revision 0.

    Both say on their face that no radiologist verified them (SC caption and series
    description, SR PRELIMINARY + UNVERIFIED with the algorithm as the only observer).
    No SEG or KOS: an alert points at the images; the signed revision carries the rest.
    """
    signed = load_alert_study(ctx, study_uid)

    def datasets() -> list[tuple[Family, Dataset]]:
        key_images = build_key_images(signed)
        sr = build_sr(signed, _sr_evidence(signed), None, {}, [])
        return [*((Family.SC, sc) for sc in key_images), (Family.SR, sr)]

    return _write_once(ctx, signed, datasets)


def _write_once(
    ctx: AppContext, signed: SignedStudy, datasets: Callable[[], list[tuple[Family, Dataset]]]
) -> ResultSet:
    results_dir = ctx.settings.results_dir
    study_uid = signed.study_uid
    rev_dir = revision_dir(results_dir, study_uid, signed.revision)
    manifest = rev_dir / "manifest.json"
    existing = _read_manifest(manifest)
    if existing is not None:
        return existing
    started = time.perf_counter()
    objects = []
    for family, ds in datasets():
        sop = validate_uid(str(ds.SOPInstanceUID), "SOPInstanceUID")
        path = rev_dir / family.value / f"{sop}.dcm"
        write_durable(path, _encode(ds))
        objects.append(
            ResultObject(
                family=family.value,
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=sop,
                series_uid=str(ds.SeriesInstanceUID),
                path=str(path.relative_to(results_dir)),
            )
        )
    result = ResultSet(study_uid, signed.revision, tuple(objects))
    write_durable(
        manifest,
        json.dumps(
            {
                "study_uid": study_uid,
                "revision": signed.revision,
                "objects": [asdict(o) for o in objects],
            },
            indent=1,
        ).encode("utf-8"),
    )
    logger.info(
        "results built",
        extra={
            "study_uid": study_uid,
            "revision": signed.revision,
            "preliminary": signed.preliminary,
            "objects": len(objects),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return result
