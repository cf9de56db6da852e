"""Push datasets through the real node (C-STORE on an ephemeral port) and the worker.

One small chest CT phantom is made per test session; each variant edits copies of its
datasets the way a particular scanner would send them, stores them with pynetdicom in
the transfer syntax the "scanner" chose, ticks the stability monitor and runs the
analysis worker until the queue is empty. The outcome is read back from the database.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import analyses, findings, quarantine, studies, utcnow
from countyread.nodes import add_node
from countyread.settings import load_settings
from dicom_node.assembly import StabilityMonitor
from dicom_node.scp import DicomNode
from inference.ct_nodule import CTNodulePipeline
from inference.pipeline import PipelineOutput, SeriesInput, StudyInput
from inference.registry import PipelineRegistry
from inference.worker import AnalysisWorker
from training.phantoms.ct import ChestCTConfig, CTPhantom, make_chest_ct
from training.phantoms.dicom_writer import DicomOptions, phantom_datasets
from training.phantoms.nodule_shapes import NoduleSpec

SCANNER_AE = "TOWNSHIP1"
NODULE_MM = 18.0


def small_chest_ct() -> CTPhantom:
    """128 x 128 at 2.6 mm, 2.5 mm slices over 160 mm: one 18 mm solid nodule (urgent)."""
    config = ChestCTConfig(
        matrix=128, pixel_spacing_mm=2.6, slice_thickness_mm=2.5, coverage_mm=160.0,
        nodule_specs=(NoduleSpec(diameter_mm=NODULE_MM, kind="solid", side="right"),),
        vessel_points_per_tree=500,
    )
    return make_chest_ct(7, config)


def base_datasets(phantom: CTPhantom) -> list[Dataset]:
    return phantom_datasets(phantom, DicomOptions(vendor="GE", charset="GB18030"))


def clone(datasets: Iterable[Dataset]) -> list[Dataset]:
    return [copy.deepcopy(ds) for ds in datasets]


def analyse(pipeline: CTNodulePipeline, datasets: Sequence[Dataset], tmp: Path) -> PipelineOutput:
    """The CT nodule pipeline alone on these datasets (written to ``tmp``): no node, no
    database; for checks on the pipeline's own output (arrays, images)."""
    paths = []
    for k, ds in enumerate(datasets):
        paths.append(tmp / f"{k:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    s = SeriesInput(str(datasets[0].SeriesInstanceUID), "CT", "chest", "CHEST", tuple(paths))
    return pipeline.analyze(StudyInput(str(datasets[0].StudyInstanceUID), s.series_uid, (s,)))


def hu(ds: Dataset) -> npt.NDArray[np.int32]:
    """The stored pixels of one slice in HU."""
    return ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the worklist would show for the study, plus the node's refusals."""

    status: str
    reason: str | None
    urgency: str | None
    notes: tuple[str, ...]
    analysis_statuses: tuple[str, ...]
    patient_name: str | None
    quarantined: tuple[str, ...]
    finding_centres: tuple[tuple[float, float, float], ...]  # LPS mm


class Site:
    """A node, a monitor and a worker sharing one fresh data directory."""

    def __init__(self, data_dir: Path, registry: PipelineRegistry | None = None) -> None:
        settings = load_settings(
            data_dir=data_dir, dicom_host="127.0.0.1", environment="test", stable_quiet_s=0.5,
        ).model_copy(update={"dicom_port": 0})
        self.ctx = AppContext.create(settings)
        add_node(self.ctx.db, name="Township 1", ae_title=SCANNER_AE)
        self.node = DicomNode(self.ctx)
        self.node.start()
        self.registry = registry or PipelineRegistry(settings)

    def close(self) -> None:
        self.node.stop()
        self.ctx.close()

    def send(self, datasets: Sequence[Dataset]) -> list[int]:
        """C-STORE each dataset in its own transfer syntax; returns the status codes."""
        ae = AE(ae_title=SCANNER_AE)
        pairs = {(str(ds.SOPClassUID), _syntax(ds)) for ds in datasets}
        for sop_class, syntax in sorted(pairs):
            ae.add_requested_context(sop_class, [syntax])
        assoc = ae.associate("127.0.0.1", self.node.port, ae_title=self.ctx.settings.ae_title)
        assert assoc.is_established, "association refused"
        codes = []
        try:
            for ds in datasets:
                rsp = assoc.send_c_store(ds)
                codes.append(int(rsp.Status) if "Status" in rsp else -1)
        finally:
            assoc.release()
        return codes

    def analyse(self) -> None:
        StabilityMonitor(self.ctx).tick(now=utcnow() + timedelta(seconds=5))
        worker = AnalysisWorker(self.ctx, self.registry)
        while worker.run_once():
            pass

    def outcome(self, study_uid: str) -> Outcome:
        with self.ctx.db.begin() as conn:
            study = conn.execute(
                select(studies).where(studies.c.study_uid == study_uid)
            ).mappings().first()
            runs = conn.execute(
                select(analyses).where(analyses.c.study_uid == study_uid)
                .order_by(analyses.c.id)
            ).mappings().all()
            refused = conn.execute(select(quarantine.c.reason)).scalars().all()
            centres = conn.execute(
                select(findings.c.center_x, findings.c.center_y, findings.c.center_z)
                .where(findings.c.study_uid == study_uid)
            ).all()
        assert study is not None, "study not stored"
        last: dict[str, Any] = dict(runs[-1]) if runs else {}
        return Outcome(
            status=str(study["status"]),
            reason=study["reason"],
            urgency=study["urgency"],
            notes=tuple(last.get("notes") or ()),
            analysis_statuses=tuple(str(r["status"]) for r in runs),
            patient_name=study["patient_name"],
            quarantined=tuple(refused),
            finding_centres=tuple((float(x), float(y), float(z)) for x, y, z in centres),
        )

    def run(self, datasets: Sequence[Dataset]) -> Outcome:
        codes = self.send(datasets)
        assert all(c in (0x0000, 0xB000, 0xB007, 0xB006) for c in codes), [hex(c) for c in codes]
        self.analyse()
        return self.outcome(str(datasets[0].StudyInstanceUID))


def _syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    return UID(meta.TransferSyntaxUID) if meta and "TransferSyntaxUID" in meta else (
        ExplicitVRLittleEndian)
