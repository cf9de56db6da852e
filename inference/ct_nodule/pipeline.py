"""The chest CT nodule triage pipeline: StudyInput -> PipelineOutput.

Stages, top to bottom: ``select_series`` -> ``load_volume`` -> ``to_canonical`` (the
layout the network was trained on, by axis reversal/permutation, see
:mod:`inference.orient`) -> ``analyze_volume`` (lung mask, candidates, network,
masks, measurements, Lung-RADS) -> Fleischner + urgency -> key images -> SEG arrays.
Key images are drawn in the canonical (radiological, supine head-first) view and name
the original image; everything voxel-indexed is reported on the selected series' own
grid, so ``PipelineOutput.arrays`` carries, for the SEG export:

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
from dataclasses import dataclass
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
from inference.orient import Reorientation, to_canonical
from inference.pipeline import PipelineOutput, StudyInput
from inference.selection import SelectionRules, read_series_header, select_series
from inference.volume import LoadedVolume, load_volume
from models.registry import ModelArtifact, ModelRegistry
from models.runtime import ModelSession, create_session

logger = logging.getLogger(__name__)

MODEL_SPEC = "ct_nodule"
RULES = SelectionRules()
THIN_LIMIT_MM = 5.0  # above: limited analysis (large lesions only)
THICK_MIN_REPORT_MM = 10.0
THICK_LARGE_FLOOR = 0.5


@dataclass(frozen=True, slots=True)
class SourceGrid:
    """The selected series' grid as loaded (the SEG's and the radiologist's reference)
    and how the analysed, canonical volume maps onto it."""

    affine: npt.NDArray[np.float64]
    sop_uids: tuple[str, ...]
    instance_numbers: tuple[int, ...]
    turn: Reorientation

    @classmethod
    def of(cls, loaded: LoadedVolume, turn: Reorientation) -> SourceGrid:
        v = loaded.volume
        return cls(
            np.asarray(v.affine, dtype=np.float64),
            v.sop_instance_uids,
            loaded.instance_numbers,
            turn,
        )

    def image_label(self, k: int) -> str:
        """How a radiologist finds source slice ``k``'s instance: its Instance Number when
        the series numbers its instances uniquely, else its place among them in order."""
        if not self.sop_uids:
            return f"slice {k + 1}"
        # resampled grids repeat an instance on neighbouring slices: count instances
        number_of = dict(zip(self.sop_uids, self.instance_numbers, strict=False))
        order = list(dict.fromkeys(self.sop_uids))
        numbers = [number_of.get(uid, 0) for uid in order]
        if len(set(numbers)) == len(order) and min(numbers) > 0:
            return f"image {number_of[self.sop_uids[k]]}"
        return f"slice {order.index(self.sop_uids[k]) + 1}/{len(order)}"


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
        loaded: LoadedVolume = timer.run(
            "volume", load_volume, choice.chosen.paths, choice.chosen.series_uid
        )
        volume, turn = timer.run("orient", to_canonical, loaded.volume)
        source = SourceGrid.of(loaded, turn)
        thickness = float(loaded.slice_thickness)
        notes = [choice.explanation(), *loaded.notes]
        if not turn.is_identity:
            notes.append(f"analysed in the standard supine head-first layout ({turn.describe()})")
        interpolated = turn.slices_to_canonical(loaded.interpolated)
        del loaded  # with a permuted copy in ``volume``, the source array can go now
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
        analysis = analyze_volume(
            volume, self.run_network, self.threshold, timer, large_floor, interpolated
        )
        if analysis.gap_suppressed:
            notes.append(
                f"{analysis.gap_suppressed} detection(s) on slices interpolated across the "
                "missing-slice gap set aside: not seen on enough acquired slices"
            )
        if analysis.lobes is not None and analysis.lobes.reason:
            notes.append(
                f"lobes not assigned where the fissures are not seen ({analysis.lobes.reason})"
            )
        nodules = [
            n
            for n in analysis.nodules
            if not limited or n.measurements.axes.long_mm >= THICK_MIN_REPORT_MM
        ]
        nodules.sort(key=lambda n: -n.measurements.axes.mean_mm)
        t_img = time.perf_counter()
        findings, images, arrays = self._outputs(volume, source, analysis.lung, nodules)
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
        self, volume: Volume, source: SourceGrid, lung: LungMask, nodules: list[AssessedNodule]
    ) -> tuple[list[Finding], list[tuple[str, Any]], list[tuple[str, Any]]]:
        findings: list[Finding] = []
        images: list[tuple[str, Any]] = []
        arrays: list[tuple[str, Any]] = [
            ("geometry", np.asarray(source.affine, dtype=np.float64)),
            ("slice_sop_uids", np.asarray(source.sop_uids, dtype=np.str_)),
        ]
        labels = []
        for i, n in enumerate(nodules):
            finding, caption = self._finding(volume, source, n, i)
            findings.append(finding)
            labels.append(f"{i + 1}: {n.category}")
            images.append(
                (f"nodule_{i}_axial", axial_image(volume, n.detection, n.measurements, caption))
            )
            images.append(
                (f"nodule_{i}_zoom", zoom_image(volume, n.detection, n.measurements, caption[0]))
            )
            box, mask = source.turn.crop_to_source(n.detection.box, n.detection.mask)
            bbox = [b.start for b in box] + [b.stop for b in box]
            arrays.append((f"mask_{i}", mask.astype(bool)))
            arrays.append((f"bbox_{i}", np.asarray(bbox, dtype=np.int64)))
        images.append(
            (
                "overview_coronal_mip",
                coronal_overview(volume, lung, [n.detection for n in nodules], labels),
            )
        )
        return findings, images, arrays

    def _finding(
        self, volume: Volume, source: SourceGrid, n: AssessedNodule, i: int
    ) -> tuple[Finding, list[str]]:
        m = n.measurements
        # The key slice (largest axial diameter) as an original instance: the canonical
        # point on it, mapped to the source grid (resampled slices name their nearest).
        k_key = n.detection.box[0].start + m.axes.slice_index
        _, row, col = n.detection.center_kji
        k_src = round(float(source.turn.to_source((k_key, row, col))[0]))
        sop = source.sop_uids[k_src] if source.sop_uids else None
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
                *((("lobe", n.lobe),) if n.lobe else ()),
                ("location", n.location),
                ("margin", m.margin),
            ),
            model=self.model_ref,
            key_image=f"nodule_{i}_axial",
        )
        caption = [
            f"#{i + 1} {TYPE_TEXT[m.type.value]} {kind.replace('_', ' ')}, {_where(n)}, "
            f"Lung-RADS {n.category}",
            f"{m.axes.long_mm:.1f} x {m.axes.short_mm:.1f} mm (mean {m.axes.mean_mm:.1f} mm), "
            f"{m.volume_mm3:.0f} mm3, p={n.detection.probability:.2f}",
            f"key slice: {source.image_label(k_src)}"
            + ("" if source.turn.is_identity else " (standard view)"),
            "AI result, not verified",
        ]
        return finding, caption


def _where(n: AssessedNodule) -> str:
    """``right upper lobe`` when the lobe is known, else ``right lung``."""
    return f"{n.lobe.replace('_', ' ')} lobe" if n.lobe else f"{n.side} lung"


def ensure_analyzable(volume: Volume) -> None:
    """Refuse volumes that cannot hold a chest (kept for callers that skip selection)."""
    if min(volume.shape) < 8:
        raise NotAnalyzableError("volume too small to analyse")
