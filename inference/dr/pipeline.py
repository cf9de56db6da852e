"""Chest DR/CR nodule triage, top to bottom:

``select_radiograph -> load_radiograph -> letterbox -> model -> decode -> to_marks ->
to_findings -> urgency -> key_image``.

The model is ``dr_nodule`` from the registry (sha256-checked) on an onnxruntime session
with automatic provider choice; its card sets the operating threshold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pydicom

from countyread.domain import AnalysisResult, ModelRef
from countyread.errors import NotAnalyzableError
from countyread.settings import Settings
from inference.dr.detect import INPUT_SIZE, decode, letterbox
from inference.dr.findings import Thresholds, image_score, to_findings, to_marks, urgency
from inference.dr.image import card_knee, load_radiograph
from inference.dr.render import key_image
from inference.dr.selection import select_radiograph
from inference.pipeline import PipelineOutput, StudyInput
from models.registry import ModelRegistry
from models.runtime import ModelSession, create_session

logger = logging.getLogger(__name__)

MODEL_SPEC = "dr_nodule"
KEY_IMAGE = "dr_key"
INPUT_NAME = "image"


@dataclass(frozen=True, slots=True)
class DRConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)


class DRNodulePipeline:
    """Created once per worker; ``analyze`` is safe to call from one thread at a time."""

    name = "dr_nodule"

    def __init__(self, session: ModelSession, config: DRConfig | None = None) -> None:
        self.session = session
        card = session.artifact.card
        self.config = config or DRConfig(Thresholds(operating=card.operating_threshold))
        self.model_ref: ModelRef = session.artifact.ref
        # the film is prepared as the model's training prepared it (its card says how)
        self.knee = card_knee(card.inputs[0].intensity) if card.inputs else None

    @classmethod
    def create(cls, settings: Settings) -> DRNodulePipeline:
        artifact = ModelRegistry(settings.models_dir).load(MODEL_SPEC)
        return cls(create_session(artifact, settings))

    def analyze(self, study: StudyInput) -> PipelineOutput:
        timings: dict[str, float] = {}
        t = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timings[name] = round((now - t) * 1000, 1)
            t = now

        choice = select_radiograph(study)
        lap("select")
        header = choice.chosen
        try:
            ds = pydicom.dcmread(header.path)
        except Exception as exc:  # the file was readable a moment ago; say what broke
            raise NotAnalyzableError(f"cannot read the radiograph: {exc}") from exc
        radiograph = load_radiograph(ds, self.knee)
        del ds
        lap("load")
        x, box = letterbox(radiograph.pixels, INPUT_SIZE)
        out = self.session.run({INPUT_NAME: x[None, None]})
        lap("infer")
        heat, diam = out["heatmap"][0, 0], out["diameter"][0, 0]
        marks = to_marks(decode(heat, diam), box, radiograph)
        score = image_score(marks)
        th = self.config.thresholds
        findings = to_findings(
            marks,
            radiograph,
            series_uid=header.series_uid,
            sop_instance_uid=header.sop_instance_uid,
            view=choice.view.view,
            model=self.model_ref,
            thresholds=th,
            key_image=KEY_IMAGE,
        )
        level = urgency(findings, score, th)
        lap("post")
        unit_note = radiograph.geometry.note()
        rgb = key_image(
            radiograph,
            marks,
            score,
            th.operating,
            view=choice.view.view,
            unit_note="sizes in px" if radiograph.geometry.unit == "px" else None,
        )
        lap("render")
        notes = [
            choice.explanation(),
            *choice.notes,
            *radiograph.notes,
            f"image-level nodule score {score:.3f} (operating threshold {th.operating:.2f}; "
            f"urgent at >= {th.urgent_score:.2f} or a mass >= {th.mass_mm:.0f} mm)",
            "finding centres are image-plane points (column x spacing, row x spacing, 0) "
            "from the top-left pixel, not patient LPS",
        ]
        if unit_note:
            notes.append(unit_note)
        if findings:
            recommendation = (
                "可疑肺结节/肿块，建议胸部CT进一步检查 / suspected nodule: chest CT advised"
            )
            category = "suspected nodule"
        else:
            recommendation, category = None, None
        result = AnalysisResult(
            pipeline=self.name,
            series_uid=header.series_uid,
            study_uid=study.study_uid,
            findings=findings,
            urgency=level,
            category=category,
            recommendation=recommendation,
            notes=tuple(notes),
            timings_ms=tuple(timings.items()),
            models=(self.model_ref,),
        )
        logger.info(
            "dr analysis",
            extra={
                "study_uid": study.study_uid,
                "series_uid": header.series_uid,
                "findings": len(findings),
                "score": round(score, 3),
                "duration_ms": round(sum(timings.values())),
            },
        )
        arrays = (
            ("dr_heatmap", np.asarray(heat, dtype=np.float16)),
            (
                "dr_geometry",
                np.asarray(
                    [box.scale, *box.offset, radiograph.factor, *radiograph.crop],
                    dtype=np.float64,
                ),
            ),
        )
        return PipelineOutput(result=result, images=((KEY_IMAGE, rgb),), arrays=arrays)
