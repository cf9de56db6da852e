"""The chest CT nodule triage pipeline: StudyInput -> PipelineOutput.

Stages, top to bottom: ``select_series`` -> ``load_volume`` -> ``analyze_volume`` (lung
mask, candidates, network, masks, measurements, Lung-RADS) -> Fleischner + urgency ->
key images -> SEG arrays. ``PipelineOutput.arrays`` carries, for the SEG export:

- ``mask_<i>``: bool array, finding i's voxels cropped to its bounding box;
- ``bbox_<i>``: int array ``[k0, j0, i0, k1, j1, i1]`` (half-open) of that box in the
  selected series' voxel grid (slice, row, column);
- ``geometry``: float 4x4 affine from (column, row, slice, 1) to patient LPS mm;
- ``slice_sop_uids``: unicode array, the SOP Instance UID of every slice in order
  (slice k of the grid; after resampling, the nearest acquired instance).

Finding i of ``result.findings`` uses ``mask_<i>``; its ``key_image`` names
``nodule_<i>_axial`` (``nodule_<i>_zoom`` beside it); ``overview_coronal_mip`` shows all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from countyread.domain import AnalysisResult, Finding, Measurement, ModelRef, Urgency, Volume
from countyread.errors import NotAnalyzableError
from countyread.settings import Settings
from inference.ct_nodule.analysis import AssessedNodule, StageTimer, analyze_volume
from inference.ct_nodule.keyimages import axial_image, coronal_overview, zoom_image
from inference.ct_nodule.lungs import LungMask
from inference.ct_nodule.rules import fleischner, is_urgent, study_category
from inference.pipeline import PipelineOutput, StudyInput
from inference.selection import SelectionRules, read_series_header, select_series
from inference.volume import load_volume
from models.registry import ModelArtifact, ModelRegistry
from models.runtime import ModelSession, create_session

logger = logging.getLogger(__name__)

MODEL_SPEC = "ct_nodule"
RULES = SelectionRules()
THIN_LIMIT_MM = 5.0  # above: limited analysis (large lesions only)
THICK_MIN_REPORT_MM = 10.0
THICK_LARGE_FLOOR = 0.5
TYPE_TEXT = {
    "solid": "solid",
    "part_solid": "part-solid",
    "ground_glass": "ground-glass",
    "calcified": "calcified",
}


class CTNodulePipeline:
    """Created once per worker (``create``); ``analyze`` is re-entrant per study."""

    name = "ct_nodule"

    def __init__(self, artifact: ModelArtifact, session: ModelSession) -> None:
        self.artifact = artifact
        self.session = session
        self.threshold = artifact.card.operating_threshold

    @classmethod
    def create(cls, settings: Settings) -> CTNodulePipeline:
        artifact = ModelRegistry(settings.models_dir).load(MODEL_SPEC)
        return cls(artifact, create_session(artifact, settings))

    @property
    def model_ref(self) -> ModelRef:
        return self.artifact.ref

    def run_network(
        self, x: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        out = self.session.run({"patch": x})
        return out["logit"], out["mask_logit"]

    def analyze(self, study: StudyInput) -> PipelineOutput:
        t0 = time.perf_counter()
        timer = StageTimer()
        headers = [read_series_header(s.series_uid, s.paths) for s in study.series]
        choice = select_series(headers, RULES)
        loaded = timer.run(
            "volume", lambda: load_volume(choice.chosen.paths, choice.chosen.series_uid)
        )
        volume: Volume = loaded.volume  # type: ignore[attr-defined]
        thickness = float(loaded.slice_thickness)  # type: ignore[attr-defined]
        notes = [choice.explanation(), *loaded.notes]  # type: ignore[attr-defined]
        limited = thickness > THIN_LIMIT_MM
        if limited:
            notes.append(
                f"limited analysis: slice thickness {thickness:g} mm > {THIN_LIMIT_MM:g} mm; "
                f"only lesions >= {THICK_MIN_REPORT_MM:g} mm are reported, smaller nodules "
                "cannot be assessed on these images"
            )
        # Thick slices lie outside the training distribution: large lesions (the only
        # ones reported there) are accepted from probability THICK_LARGE_FLOOR.
        large_floor = THICK_LARGE_FLOOR if limited else None
        analysis = analyze_volume(volume, self.run_network, self.threshold, timer, large_floor)
        nodules = [
            n
            for n in analysis.nodules
            if not limited or n.measurements.axes.long_mm >= THICK_MIN_REPORT_MM
        ]
        nodules.sort(key=lambda n: -n.measurements.axes.mean_mm)
        t_img = time.perf_counter()
        findings, images, arrays = self._outputs(volume, analysis.lung, nodules)
        timer.timings.append(("key_images", round((time.perf_counter() - t_img) * 1000.0, 1)))
        cats = [n.category for n in nodules]
        study_cat = study_category(cats)
        largest = max((n.measurements.axes.long_mm for n in nodules), default=0.0)
        urgency = Urgency.URGENT if is_urgent(study_cat, largest) else Urgency.ROUTINE
        recommendation = fleischner([n.facts for n in nodules])
        timer.timings.append(("total", round((time.perf_counter() - t0) * 1000.0, 1)))
        result = AnalysisResult(
            pipeline=self.name,
            series_uid=choice.chosen.series_uid,
            study_uid=study.study_uid,
            findings=tuple(findings),
            urgency=urgency,
            category=study_cat,
            recommendation=recommendation,
            notes=tuple(notes),
            timings_ms=tuple(timer.timings),
            models=(self.model_ref,),
        )
        logger.info(
            "ct nodule analysis done",
            extra={
                "study_uid": study.study_uid,
                "series_uid": choice.chosen.series_uid,
                "findings": len(findings),
                "category": study_cat,
                "urgency": urgency.value,
                "candidates": analysis.n_candidates,
                "duration_ms": timer.timings[-1][1],
            },
        )
        return PipelineOutput(result, tuple(images), tuple(arrays))

    def _outputs(
        self, volume: Volume, lung: LungMask, nodules: list[AssessedNodule]
    ) -> tuple[list[Finding], list[tuple[str, Any]], list[tuple[str, Any]]]:
        findings: list[Finding] = []
        images: list[tuple[str, Any]] = []
        arrays: list[tuple[str, Any]] = [
            ("geometry", np.asarray(volume.affine, dtype=np.float64)),
            ("slice_sop_uids", np.asarray(volume.sop_instance_uids, dtype=np.str_)),
        ]
        labels = []
        for i, n in enumerate(nodules):
            finding, caption = self._finding(volume, n, i)
            findings.append(finding)
            labels.append(f"{i + 1}: {n.category}")
            images.append(
                (f"nodule_{i}_axial", axial_image(volume, n.detection, n.measurements, caption))
            )
            images.append(
                (f"nodule_{i}_zoom", zoom_image(volume, n.detection, n.measurements, caption[0]))
            )
            arrays.append((f"mask_{i}", n.detection.mask.astype(bool)))
            arrays.append((f"bbox_{i}", np.asarray(n.detection.bbox, dtype=np.int64)))
        images.append(
            (
                "overview_coronal_mip",
                coronal_overview(volume, lung, [n.detection for n in nodules], labels),
            )
        )
        return findings, images, arrays

    def _finding(self, volume: Volume, n: AssessedNodule, i: int) -> tuple[Finding, list[str]]:
        m = n.measurements
        k_key = n.detection.box[0].start + m.axes.slice_index
        sop = volume.sop_instance_uids[k_key] if volume.sop_instance_uids else None
        centre = volume.index_to_lps(n.detection.center_kji)
        values = [
            Measurement("long_axis", round(m.axes.long_mm, 1), "mm"),
            Measurement("short_axis", round(m.axes.short_mm, 1), "mm"),
            Measurement("mean_diameter", m.axes.mean_mm, "mm"),
            Measurement("volume", round(m.volume_mm3, 1), "mm3"),
            Measurement("mean_hu", round(m.mean_hu, 1), "[hnsf'U]"),
            Measurement("max_hu", round(m.max_hu, 1), "[hnsf'U]"),
        ]
        if m.type.value == "part_solid":
            values.append(Measurement("solid_part", round(m.solid_part_mm, 1), "mm"))
        kind = "lung_mass" if n.is_mass else "lung_nodule"
        finding = Finding(
            kind=kind,
            probability=round(n.detection.probability, 4),
            center_lps=(
                round(float(centre[0]), 2),
                round(float(centre[1]), 2),
                round(float(centre[2]), 2),
            ),
            series_uid=volume.series_uid or "",
            sop_instance_uid=sop,
            measurements=tuple(values),
            category=n.category,
            attributes=(
                ("type", m.type.value),
                ("side", n.side),
                ("location", n.location),
                ("margin", m.margin),
            ),
            model=self.model_ref,
            key_image=f"nodule_{i}_axial",
        )
        caption = [
            f"#{i + 1} {TYPE_TEXT[m.type.value]} {kind.replace('_', ' ')}, {n.side} lung, "
            f"Lung-RADS {n.category}",
            f"{m.axes.long_mm:.1f} x {m.axes.short_mm:.1f} mm (mean {m.axes.mean_mm:.1f} mm), "
            f"{m.volume_mm3:.0f} mm3, p={n.detection.probability:.2f}",
            "AI result, not verified",
        ]
        return finding, caption


def ensure_analyzable(volume: Volume) -> None:
    """Refuse volumes that cannot hold a chest (kept for callers that skip selection)."""
    if min(volume.shape) < 8:
        raise NotAnalyzableError("volume too small to analyse")
