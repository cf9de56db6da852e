"""Series selection for head/neck CTA and the arterial-phase check from the data itself."""

from __future__ import annotations

from dataclasses import dataclass

from countyread.errors import NotAnalyzableError
from inference.pipeline import StudyInput
from inference.selection import SelectionRules, SeriesHeader, read_series_header, rejection_reason

#: Thin axial CT only: vessels of 2-3 mm need <= 1.25 mm slices to be measured.
CTA_RULES = SelectionRules(max_thickness_mm=1.25, min_instances=40)
MIN_COVERAGE_MM = 60.0
#: Arterial-phase lumen is 250-500 HU; venous phase leaves the arteries near 150 HU.
MIN_ARTERIAL_HU = 220.0
MIN_VESSEL_VOLUME_MM3 = 1500.0
#: At most this many qualifying series are analysed before the study is refused: each
#: try costs a volume load and a segmentation (a few seconds to ~20 s).
MAX_SERIES_TRIED = 3


@dataclass(frozen=True, slots=True)
class CTAChoice:
    chosen: SeriesHeader
    rejected: tuple[tuple[str, str], ...]
    #: the other qualifying series, best first: a head/neck CTA study often holds a thin
    #: non-contrast (or venous / delayed) series as well, and only the data can tell
    #: which one is arterial (``check_arterial``), so the pipeline tries these in turn.
    fallbacks: tuple[SeriesHeader, ...] = ()

    def passed_over(self, why: str) -> CTAChoice:
        """The next qualifying series, with the chosen one recorded as refused (``why``)."""
        if not self.fallbacks:
            raise ValueError("no other qualifying series")
        rest = tuple((u, w) for u, w in self.rejected if u != self.fallbacks[0].series_uid)
        return CTAChoice(
            self.fallbacks[0], ((self.chosen.series_uid, why), *rest), self.fallbacks[1:]
        )

    def explanation(self) -> str:
        c = self.chosen
        text = f"analysed series {c.series_uid} ({c.n_instances} images, {c.slice_thickness} mm)"
        if self.rejected:
            text += "; passed over: " + "; ".join(f"{u}: {why}" for u, why in self.rejected)
        return text


def select_cta_series(study: StudyInput) -> CTAChoice:
    """The thinnest qualifying axial CT series, preferring the triggering one on ties."""
    usable: list[SeriesHeader] = []
    rejected: list[tuple[str, str]] = []
    for s in study.series:
        if (s.modality or "").upper() not in ("CT", ""):
            rejected.append((s.series_uid, f"modality {s.modality}"))
            continue
        h = read_series_header(s.series_uid, s.paths)
        why = rejection_reason(h, CTA_RULES)
        if why is None and h.slice_thickness is None:
            why = "slice thickness unknown"
        if why is None:
            usable.append(h)
        else:
            rejected.append((s.series_uid, why))
    if not usable:
        reasons = "; ".join(sorted({why for _, why in rejected})) or "no series"
        raise NotAnalyzableError(f"no thin (<= 1.25 mm) axial CT series for CTA: {reasons}")
    usable.sort(
        key=lambda h: (
            h.slice_thickness or 9.0,
            h.series_uid != study.trigger_series_uid,
            -h.n_instances,
        )
    )
    rejected += [(h.series_uid, "thicker or fewer images") for h in usable[1:]]
    return CTAChoice(usable[0], tuple(rejected), tuple(usable[1:MAX_SERIES_TRIED]))


def check_coverage(z_extent_mm: float) -> None:
    if z_extent_mm < MIN_COVERAGE_MM:
        raise NotAnalyzableError(
            f"series covers only {z_extent_mm:.0f} mm: not a head/neck CTA range"
        )


def check_arterial(vessel_volume_mm3: float, lumen_hu: float, carotid_traced: bool = True) -> None:
    """Refuse non-contrast and venous-phase series, judged on the segmented arteries.

    Without a traced carotid the bright tubes found are not arteries: in a non-contrast
    series the network's few false pieces sit on bone, whose marrow reads like lumen.
    """
    if not carotid_traced:
        raise NotAnalyzableError(
            "no arterial contrast: no carotid artery traced "
            f"({vessel_volume_mm3:.0f} mm3 of bright tubes)"
        )
    if vessel_volume_mm3 < MIN_VESSEL_VOLUME_MM3:
        raise NotAnalyzableError(
            "no arterial contrast: no enhanced arteries found "
            f"({vessel_volume_mm3:.0f} mm3 of lumen)"
        )
    if lumen_hu < MIN_ARTERIAL_HU:
        raise NotAnalyzableError(
            f"no arterial contrast: carotid lumen {lumen_hu:.0f} HU "
            f"(< {MIN_ARTERIAL_HU:.0f} HU; non-contrast or venous phase)"
        )
