"""Head/neck CTA vessel reconstruction and stenosis grading, top to bottom:

``select_cta_series -> load_volume -> analyze_volume (resample, ONNX segmentation, bone
separation, contrast check, centrelines, naming, radius profiles, stenosis) ->
findings -> urgency -> renders (MIP, VR, CPR) -> SEG arrays``.

The model is ``cta_vessels`` from the registry (sha256-checked) on an onnxruntime
session with automatic provider choice.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from countyread.domain import AnalysisResult, Finding, ModelRef
from countyread.errors import NotAnalyzableError
from countyread.settings import Settings
from inference.cta import render
from inference.cta.analysis import CTAAnalysis, Timer, analyze_volume
from inference.cta.findings import (
    GRADE_ZH,
    occlusion_finding,
    source_crop,
    stenosis_finding,
    urgency_of,
    vessel_labels,
    worst_grade,
)
from inference.cta.segment import logit_of
from inference.cta.select import check_coverage, select_cta_series
from inference.orient import Reorientation, to_canonical
from inference.pipeline import PipelineOutput, StudyInput
from inference.volume import load_volume
from models.registry import ModelRegistry
from models.runtime import ModelSession, create_session

logger = logging.getLogger(__name__)

MODEL_SPEC = "cta_vessels"
INPUT_NAME = "image"


class CTAPipeline:
    """Created once per worker; ``analyze`` is safe to call from one thread at a time."""

    name = "cta"

    def __init__(self, session: ModelSession) -> None:
        self.session = session
        self.model_ref: ModelRef = session.artifact.ref
        self.logit_threshold = logit_of(session.artifact.card.operating_threshold)

    @classmethod
    def create(cls, settings: Settings) -> CTAPipeline:
        artifact = ModelRegistry(settings.models_dir).load(MODEL_SPEC)
        return cls(create_session(artifact, settings))

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self.session.run({INPUT_NAME: x})
        return next(iter(out.values()))

    def analyze(self, study: StudyInput) -> PipelineOutput:
        tm = Timer()
        choice = select_cta_series(study)
        tm.lap("select")
        refused_ms = 0.0
        while True:
            header = choice.chosen
            try:
                loaded = load_volume(header.paths, header.series_uid)
                # Feet-first and prone consoles store the head mirrored; the network,
                # the renders (patient right on the viewer's left) and the naming's
                # bone cues all expect the head-first supine layout. Values untouched.
                volume, turn = to_canonical(loaded.volume)
                tm.lap("volume")
                check_coverage(volume.shape[0] * volume.spacing[0])
                a = analyze_volume(volume, self.predict, tm, self.logit_threshold)
                break
            except NotAnalyzableError as exc:
                # The refusal belongs to this series (phase, range, geometry), not to the
                # study: a thin non-contrast pre-scan sorts before the arterial series.
                if not choice.fallbacks:
                    if choice.rejected and any(w != "thicker or fewer images"
                                               for _, w in choice.rejected):
                        raise NotAnalyzableError(
                            f"{exc}; other series: "
                            + "; ".join(f"{u}: {w}" for u, w in choice.rejected)
                        ) from exc
                    raise
                logger.info(
                    "cta series refused, trying the next qualifying one",
                    extra={"series_uid": header.series_uid, "reason": str(exc)},
                )
                choice = choice.passed_over(str(exc))
                tm.lap("_refused")
                refused_ms += sum(tm.timings.pop(k) for k in list(tm.timings) if k != "select")
        if refused_ms:
            tm.timings["refused series"] = round(refused_ms, 1)
        findings = self.findings(a, volume, header.series_uid)
        grade = worst_grade(findings)
        level = urgency_of(grade, len(a.naming.not_traced))
        tm.lap("findings")
        images = self.renders(a, volume, tm)
        arrays = self.arrays(a, volume, findings, loaded.volume, turn)
        tm.lap("arrays")
        named = sorted(a.naming.vessels)
        notes = [
            choice.explanation(),
            *loaded.notes,
            *([f"stored layout turned to head-first supine for analysis ({turn.describe()})"]
              if not turn.is_identity else []),
            f"vessels named: {', '.join(named) or 'none'}",
            *(
                [
                    "not traced (contrast along the expected course, no occlusion called; "
                    "a tight stenosis can break the trace: review these vessels): "
                    + ", ".join(c.vessel for c in a.naming.not_traced)
                ]
                if a.naming.not_traced
                else []
            ),
            f"lumen {a.intensities.lumen_hu:.0f} HU, tissue {a.intensities.tissue_hu:.0f} HU; "
            "diameters are effective (area-equivalent) lumen diameters",
        ]
        category = grade if findings else "no significant stenosis"
        recommendation = None
        if grade in GRADE_ZH:
            recommendation = f"{GRADE_ZH[grade]} / {grade}: 请结合临床 / correlate clinically"
        result = AnalysisResult(
            pipeline=self.name,
            series_uid=header.series_uid,
            study_uid=study.study_uid,
            findings=tuple(findings),
            urgency=level,
            category=category,
            recommendation=recommendation,
            notes=tuple(notes),
            timings_ms=tuple(tm.timings.items()),
            models=(self.model_ref,),
        )
        logger.info(
            "cta analysis",
            extra={
                "study_uid": study.study_uid,
                "series_uid": header.series_uid,
                "findings": len(findings),
                "vessels": len(named),
                "duration_ms": round(sum(tm.timings.values())),
            },
        )
        return PipelineOutput(result=result, images=tuple(images.items()), arrays=arrays)

    def findings(self, a: CTAAnalysis, volume: Any, series_uid: str) -> list[Finding]:
        out: list[Finding] = []
        occluded = {c.vessel for c in a.naming.occlusions}
        for call in a.naming.occlusions:
            out.append(occlusion_finding(a, call, volume, series_uid, self.model_ref))
        for name in sorted(a.stenoses):
            if name in occluded:
                continue
            out.append(stenosis_finding(a, a.stenoses[name], volume, series_uid, self.model_ref))
        return out

    def renders(
        self, a: CTAAnalysis, volume: Any, tm: Timer | None = None
    ) -> dict[str, npt.NDArray[np.uint8]]:
        tm = tm or Timer()
        clean = render.bone_removed(a.hu, a.seg.bone, a.intensities.tissue_hu)
        images = render.mip_views(clean)
        tm.lap("render_mip")
        images.update(render.volume_rendering(a.seg.vessels, clean))
        tm.lap("render_vr")
        occluded = {c.vessel: c for c in a.naming.occlusions}
        for name, prof in sorted(a.profiles.items()):
            images[f"cpr_{name}"] = render.annotate(
                render.curved_cpr(volume, prof), [f"CPR {name} 曲面重建"]
            )
            scpr = render.stretched_cpr(volume, prof)
            call = a.stenoses.get(name)
            if name in occluded:
                scpr = render.annotate(scpr, [f"{name} 闭塞 occlusion"], color=(255, 80, 80))
            elif call is not None:
                value = (
                    f"residual {call.min_diameter_mm:.1f} mm"
                    if call.grade == "near-occlusion"
                    else f"{call.percent:.0f}% {call.method}"
                )
                label = f"{name} {GRADE_ZH[call.grade]} {value}"
                scpr = render.mark_stenosis(scpr, call, label)
            else:
                scpr = render.annotate(scpr, [f"{name} 拉直曲面重建 stretched CPR"])
            images[f"scpr_{name}"] = scpr
        tm.lap("render_cpr")
        return images

    def arrays(
        self, a: CTAAnalysis, volume: Any, findings: list[Finding],
        source: Any = None, turn: Reorientation | None = None,
    ) -> tuple[tuple[str, npt.NDArray[Any]], ...]:
        """Arrays kept with the analysis; SEG crops address the stored instances.

        ``volume`` is the analysed (canonical) volume; ``source`` the series as stored
        and ``turn`` the way between them (both None when they are the same).
        """
        source = volume if source is None else source
        labels, names = vessel_labels(a)
        out: list[tuple[str, npt.NDArray[Any]]] = [
            ("geometry", np.asarray(source.affine, dtype=np.float64)),
            ("slice_sop_uids", np.asarray(source.sop_instance_uids, dtype=np.str_)),
            ("vessel_labels", labels),
            ("vessel_names", np.asarray(names, dtype=np.str_)),
            ("work_affine", np.asarray(a.grid.affine, dtype=np.float64)),
        ]
        # PS3.3 C.8.20 (SEG): one cropped mask per finding, on the source slices
        for i, f in enumerate(findings):
            vessel = f.attribute("vessel")
            if vessel not in names:
                continue
            crop = source_crop(a, labels, names.index(vessel) + 1, volume)
            if crop is None:
                continue
            mask, lo = crop
            if turn is not None and not turn.is_identity:
                box = tuple(slice(int(lo[d]), int(lo[d]) + mask.shape[d]) for d in range(3))
                src_box, mask = turn.crop_to_source((box[0], box[1], box[2]), mask)
                lo = np.asarray([b.start for b in src_box], dtype=np.int64)
            out.append((f"mask_{i}", mask.astype(np.uint8)))
            out.append((f"bbox_{i}", lo))
        for name, prof in sorted(a.profiles.items()):
            out.append((f"centerline_{name}", prof.points.astype(np.float32)))
            out.append((f"diameter_{name}", prof.diameter_mm.astype(np.float32)))
        return tuple(out)
