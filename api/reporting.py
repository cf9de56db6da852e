"""Structured report drafts in Chinese and English from the confirmed findings.

Confirmed means verdict accepted or edited (radiologist-added findings are stored as
accepted). Chest CT nodules get location, type, size, Lung-RADS per nodule and an
impression with the study category and the Fleischner recommendation; CTA findings get
NASCET grades; chest radiograph nodules a CT recommendation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api import clinical

CONFIRMED = ("accepted", "edited")
NODULE_KINDS = ("lung_nodule", "lung_mass", "nodule")
VESSEL_KINDS = ("stenosis", "occlusion", "near_occlusion")
DR_KINDS = ("dr_nodule", "dr_mass")

_LOBES = {
    "rul": ("右肺上叶", "right upper lobe"), "rml": ("右肺中叶", "right middle lobe"),
    "rll": ("右肺下叶", "right lower lobe"), "lul": ("左肺上叶", "left upper lobe"),
    "lll": ("左肺下叶", "left lower lobe"), "right": ("右肺", "right lung"),
    "left": ("左肺", "left lung"), "r": ("右肺", "right lung"), "l": ("左肺", "left lung"),
    "right_upper": ("右肺上叶", "right upper lobe"),
    "right_middle": ("右肺中叶", "right middle lobe"),
    "right_lower": ("右肺下叶", "right lower lobe"), "left_upper": ("左肺上叶", "left upper lobe"),
    "left_lower": ("左肺下叶", "left lower lobe"),
}
_TYPES = {
    "solid": ("实性结节", "solid nodule"), "part_solid": ("部分实性结节", "part-solid nodule"),
    "ground_glass": ("磨玻璃结节", "ground-glass nodule"),
    "calcified": ("钙化结节", "calcified nodule"), None: ("结节", "nodule"),
}
_VESSELS = {
    "left_ica": ("左侧颈内动脉", "left internal carotid artery"),
    "right_ica": ("右侧颈内动脉", "right internal carotid artery"),
    "left_cca": ("左侧颈总动脉", "left common carotid artery"),
    "right_cca": ("右侧颈总动脉", "right common carotid artery"),
    "left_mca": ("左侧大脑中动脉", "left middle cerebral artery"),
    "right_mca": ("右侧大脑中动脉", "right middle cerebral artery"),
    "left_aca": ("左侧大脑前动脉", "left anterior cerebral artery"),
    "right_aca": ("右侧大脑前动脉", "right anterior cerebral artery"),
    "left_va": ("左侧椎动脉", "left vertebral artery"),
    "right_va": ("右侧椎动脉", "right vertebral artery"),
    "basilar": ("基底动脉", "basilar artery"), "ba": ("基底动脉", "basilar artery"),
}
_GRADES = {
    "mild": ("轻度狭窄", "mild stenosis"), "moderate": ("中度狭窄", "moderate stenosis"),
    "severe": ("重度狭窄", "severe stenosis"), "occlusion": ("闭塞", "occlusion"),
    "near_occlusion": ("次全闭塞", "near-occlusion"),
}
#: (findings zh, findings en, impression zh, impression en) lines of one report section.
Lines = list[str]
Sections = tuple[Lines, Lines, Lines, Lines]

_GRADE_RANK = {"occlusion": 0, "near_occlusion": 1, "severe": 2, "moderate": 3, "mild": 4}


@dataclass(frozen=True, slots=True)
class ReportDraft:
    findings_zh: str
    impression_zh: str
    findings_en: str
    impression_en: str
    lung_rads: str | None


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _location(attrs: Mapping[Any, Any]) -> tuple[str, str]:
    # The lobe when known, else the side; "location" of AI CT findings is lung /
    # juxtapleural (a position, not a place), so it only qualifies the side.
    for key in ("lobe", "side", "location"):
        raw = attrs.get(key)
        name = str(raw or "").strip().lower().replace(" ", "_")
        if name in _LOBES:
            zh, en = _LOBES[name]
            if key != "location" and str(attrs.get("location", "")).lower() == "juxtapleural":
                return f"{zh}胸膜下", f"{en}, juxtapleural"
            return zh, en
    raw = attrs.get("lobe") or attrs.get("location")
    if raw and str(raw).strip().lower() not in ("lung", "juxtapleural"):
        return str(raw), str(raw)
    return ("肺内", "the lung")


def _peripheral(attrs: Mapping[Any, Any]) -> bool:
    flags = {str(attrs.get("position", "")).lower(), str(attrs.get("location_type", "")).lower()}
    return bool({"juxtapleural", "perifissural"} & flags) or any(
        str(attrs.get(k, "")).lower() in ("true", "1", "yes") for k in ("juxtapleural",
                                                                      "perifissural"))


def _nodule_category(f: Mapping[Any, Any]) -> str | None:
    if f.get("category") and clinical.lung_rads_rank(f["category"]) >= 0:
        return str(f["category"]).upper()
    attrs = f.get("attributes") or {}
    size = clinical.nodule_size(f.get("measurements") or [])
    return clinical.lung_rads_baseline(clinical.nodule_type(attrs), size, _peripheral(attrs))


def _value(measurements: Sequence[Any], name: str) -> float | None:
    for m in measurements or []:
        if isinstance(m, Mapping) and m.get("name") == name:
            try:
                return float(m["value"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def _change(f: Mapping[Any, Any]) -> tuple[str, str]:
    """Comparison with the prior CT (inference.ct_nodule.priors), zh and en; "" if none."""
    attrs = f.get("attributes") or {}
    change, when = attrs.get("change"), attrs.get("prior_date") or "?"
    grown = _value(f.get("measurements") or [], "diameter_change")
    vdt = _value(f.get("measurements") or [], "volume_doubling_time")
    vz = f"，体积倍增时间约 {vdt:.0f} 天" if vdt else ""
    ve = f", volume doubling time about {vdt:.0f} days" if vdt else ""
    if change == "new":
        return f"较 {when} 前片为新发", f"new since the prior CT of {when}"
    if change == "growing" and grown is not None:
        return (f"较 {when} 前片平均径增大 {grown:.1f} mm{vz}",
                f"grown {grown:.1f} mm in mean diameter since {when}{ve}")
    if change == "stable":
        return f"与 {when} 前片比较无明显变化", f"stable since {when}"
    if change == "baseline" and grown is not None and grown > 0:
        return (f"较 {when} 前片平均径增大 {grown:.1f} mm{vz}",
                f"{grown:.1f} mm larger than on {when}{ve}")
    return "", ""


def _nodules(found: Sequence[Mapping[Any, Any]]) -> tuple[Lines, Lines, Lines, Lines, str | None]:
    fz: list[str] = []
    fe: list[str] = []
    cats: list[str | None] = []
    worst: tuple[float, str | None, clinical.NoduleSize] | None = None
    for i, f in enumerate(found, 1):
        attrs = f.get("attributes") or {}
        size = clinical.nodule_size(f.get("measurements") or [])
        ntype = clinical.nodule_type(attrs)
        tz, te = _TYPES.get(ntype, _TYPES[None])
        if f["kind"] == "lung_mass":
            tz, te = "肿块", "mass"
        lz, le = _location(attrs)
        cat = _nodule_category(f)
        cats.append(cat)
        dims = (f"{_fmt(size.long_mm)} × {_fmt(size.short_mm)} mm"
                if size.long_mm is not None and size.short_mm is not None else None)
        sz = [f"大小约 {dims}" if dims else "", f"平均径 {_fmt(size.mean_mm)} mm"]
        se = [dims or "", f"mean diameter {_fmt(size.mean_mm)} mm"]
        if size.solid_mm is not None and ntype == "part_solid":
            sz.append(f"实性成分 {_fmt(size.solid_mm)} mm")
            se.append(f"solid component {_fmt(size.solid_mm)} mm")
        if size.volume_mm3 is not None:
            sz.append(f"体积约 {size.volume_mm3:.0f} mm³")
            se.append(f"volume {size.volume_mm3:.0f} mm³")
        chz, che = _change(f)
        sz.append(chz)
        se.append(che)
        cz = f"，Lung-RADS {cat} 类" if cat else ""
        ce = f", Lung-RADS {cat}" if cat else ""
        fz.append(f"{i}. {lz}见{tz}，" + "，".join(s for s in sz if s) + f"{cz}。")
        fe.append(f"{i}. {te.capitalize()} in the {le}, " + ", ".join(s for s in se if s)
                  + f"{ce}.")
        # Fleischner follows the most suspicious nodule: highest category, then size.
        key = clinical.lung_rads_rank(cat) * 1000 + (size.mean_mm or 0.0)
        if worst is None or key > worst[0]:
            worst = (key, ntype, size)
    study_cat = clinical.max_lung_rads(cats) or "1"
    iz = [f"肺结节 {len(found)} 枚，Lung-RADS {study_cat} 类。"]
    ie = [f"{len(found)} pulmonary nodule(s), Lung-RADS category {study_cat}."]
    advice = clinical.lung_rads_management(study_cat)
    if advice:
        iz.append(f"Lung-RADS 建议：{advice.zh}。")
        ie.append(f"Lung-RADS management: {advice.en}.")
    if worst is not None:
        fl = clinical.fleischner(worst[1], worst[2])
        iz.append(f"Fleischner 2017 建议（偶发结节，年龄≥35岁）：{fl.zh}。")
        ie.append(f"Fleischner 2017 (incidental nodule, age >= 35): {fl.en}.")
    return fz, fe, iz, ie, study_cat


def _vessels(found: Sequence[Mapping[Any, Any]]) -> Sections:
    rows = []
    for f in found:
        attrs = f.get("attributes") or {}
        meas = f.get("measurements") or []
        pct = clinical.stenosis_percent(meas)
        grade = str(attrs.get("grade") or "").lower().replace("-", "_") or None
        if grade not in _GRADES:
            grade = ("occlusion" if f["kind"] == "occlusion" else
                     "near_occlusion" if f["kind"] == "near_occlusion" else
                     clinical.nascet_grade(pct) if pct is not None else None)
        vessel = str(attrs.get("vessel") or "")
        vz, ve = _VESSELS.get(vessel.lower(), (vessel or "血管", vessel or "artery"))
        gz, ge = _GRADES.get(grade or "", ("狭窄", "stenosis"))
        if grade == "near_occlusion":
            lumen = clinical.residual_lumen(meas)
            dz = f"（残余管腔约 {_fmt(lumen)} mm）" if lumen is not None else ""
            de = f" (residual lumen {_fmt(lumen)} mm)" if lumen is not None else ""
        elif grade != "occlusion" and pct is not None:
            dz, de = f"（NASCET 约 {pct:.0f}%）", f" (NASCET {pct:.0f}%)"
        else:
            dz = de = ""
        rows.append((_GRADE_RANK.get(grade or "", 9), f"{vz}{gz}{dz}",
                     f"{ge.capitalize()} of the {ve}{de}"))
    rows.sort(key=lambda r: r[0])
    fz = [f"{i}. {z}。" for i, (_, z, _) in enumerate(rows, 1)]
    fe = [f"{i}. {e}." for i, (_, _, e) in enumerate(rows, 1)]
    iz = ["；".join(z for _, z, _ in rows) + "。"]
    ie = ["; ".join(e for _, _, e in rows) + "."]
    return fz, fe, iz, ie


def _radiograph(found: Sequence[Mapping[Any, Any]]) -> Sections:
    fz, fe = [], []
    for i, f in enumerate(found, 1):
        lz, le = _location(f.get("attributes") or {})
        d = clinical.nodule_size(f.get("measurements") or []).mean_mm
        sz = f"，直径约 {_fmt(d)} mm" if d is not None else ""
        se = f", about {_fmt(d)} mm" if d is not None else ""
        fz.append(f"{i}. {lz}见结节影{sz}。")
        fe.append(f"{i}. Nodular opacity in the {le}{se}.")
    return (fz, fe, [f"胸片示结节影 {len(found)} 处，建议胸部CT进一步检查。"],
            [f"{len(found)} nodular opacity(ies) on the chest radiograph; chest CT recommended."])


def generate(study: Mapping[Any, Any], finding_rows: Sequence[Mapping[Any, Any]]) -> ReportDraft:
    """Draft report texts (zh, en) from a study row and its finding rows."""
    confirmed = [f for f in finding_rows if f["verdict"] in CONFIRMED]
    nod = [f for f in confirmed if f["kind"] in NODULE_KINDS]
    ves = [f for f in confirmed if f["kind"] in VESSEL_KINDS]
    drn = [f for f in confirmed if f["kind"] in DR_KINDS]
    other = [f for f in confirmed if f not in nod and f not in ves and f not in drn]
    modalities = str(study.get("modalities") or "")
    fz: list[str] = []
    fe: list[str] = []
    iz: list[str] = []
    ie: list[str] = []
    lung_rads: str | None = None
    if nod:
        a, b, c, d, lung_rads = _nodules(nod)
        fz, fe, iz, ie = fz + a, fe + b, iz + c, ie + d
    elif "CT" in modalities.split("\\") and not ves and not drn:
        fz.append("双肺未见明确结节。")
        fe.append("No pulmonary nodule identified.")
        iz.append("Lung-RADS 1 类，12个月后低剂量CT年度筛查。")
        ie.append("Lung-RADS category 1; annual screening LDCT in 12 months.")
        lung_rads = "1"
    if ves:
        a, b, c, d = _vessels(ves)
        fz, fe, iz, ie = fz + a, fe + b, iz + c, ie + d
    if drn:
        a, b, c, d = _radiograph(drn)
        fz, fe, iz, ie = fz + a, fe + b, iz + c, ie + d
    for f in other:
        fz.append(f"- {f['kind']}（{f.get('category') or '未分级'}）。")
        fe.append(f"- {f['kind']} ({f.get('category') or 'not graded'}).")
    if not fz:
        fz, fe = ["未见明确异常。"], ["No abnormality identified."]
    if not iz:
        iz, ie = ["未见明确异常。"], ["No abnormality identified."]
    if study.get("reason"):
        iz.append(f"注：AI 分析未完成（{study['reason']}），请结合原始图像诊断。")
        ie.append(f"Note: AI analysis incomplete ({study['reason']}); read the original images.")
    return ReportDraft("\n".join(fz), _numbered(iz), "\n".join(fe), _numbered(ie), lung_rads)


def _numbered(lines: Lines) -> str:
    return "\n".join(f"{i}. {t}" if len(lines) > 1 else t for i, t in enumerate(lines, 1))
