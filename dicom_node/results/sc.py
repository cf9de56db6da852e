"""SC key images: RGB Secondary Capture per finding, caption burned in (PS3.3 A.8.1).

Township consoles often show neither SR nor SEG, so the key image is the result they can
read: the pipeline's PNG (overlay already drawn) with a short bilingual caption in a band
below the image, the same text in ImageComments, uncompressed 8-bit RGB.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from dicom_node.results.codes import NODULE_KINDS, VESSEL_KINDS, base_kind, lobe_key
from dicom_node.results.common import (
    MANUFACTURER,
    ConfirmedFinding,
    Family,
    SignedStudy,
    apply_patient,
    contributing_equipment,
    series_number,
)

logger = logging.getLogger(__name__)

# Fonts with CJK glyphs, first found wins; without one the caption is English only.
_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
)
_MIN_WIDTH = 512  # old consoles show small matrices tiny; upscale to at least this
_KIND_ZH = {
    "nodule": "结节",
    "dr_nodule": "结节",
    "stenosis": "狭窄",
    "occlusion": "闭塞",
    "near_occlusion": "次全闭塞",
    "aneurysm": "动脉瘤",
    "mass": "肿块",
}
_GRADE_ZH = {
    "mild": "轻度",
    "moderate": "中度",
    "severe": "重度",
    "near-occlusion": "次全闭塞",
    "occlusion": "闭塞",
}
_VESSEL_ZH = {
    "ICA": "颈内动脉",
    "CCA": "颈总动脉",
    "ECA": "颈外动脉",
    "VA": "椎动脉",
    "BA": "基底动脉",
    "M1": "大脑中动脉M1段",
    "A1": "大脑前动脉A1段",
    "P1": "大脑后动脉P1段",
}
_SIDE = {"right": ("右肺", "right lung"), "left": ("左肺", "left lung")}
_LOBE_ZH = {
    "RUL": "右肺上叶",
    "RML": "右肺中叶",
    "RLL": "右肺下叶",
    "LUL": "左肺上叶",
    "LLL": "左肺下叶",
}


@lru_cache(maxsize=4)
def _font(size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    for path in _CJK_FONTS:
        if Path(path).exists():
            return ImageFont.truetype(path, size), True
    return ImageFont.load_default(), False


def _vessel_zh(name: str) -> str:
    base, _, side = name.partition("_")
    where = {"L": "左", "R": "右"}.get(side.upper(), "")
    return f"{where}{_VESSEL_ZH.get(base.upper(), base)}" if base else name


def caption(finding: ConfirmedFinding) -> tuple[str, str]:
    """(Chinese, English) one-line captions, e.g. '结节 1 右肺上叶 8.2 mm Lung-RADS 4A'."""
    attrs = dict(finding.attributes)
    kind = base_kind(finding.kind)
    lobe = (lobe_key(attrs) or "").upper()
    vessel = attrs.get("vessel", "")
    size = next(
        (m for m in finding.measurements if m.name.startswith(("mean_diameter", "diameter"))), None
    )
    pct = next((m for m in finding.measurements if m.name.startswith("stenosis")), None)
    lumen = next((m for m in finding.measurements if m.name == "residual_lumen"), None)
    value = (
        f"{pct.value:.0f}%"
        if pct
        else f"residual {lumen.value:.1f} mm"
        if lumen
        else f"{size.value:.1f} {size.unit}"
        if size
        else ""
    )
    grade_en = grade_zh = ""
    if finding.category and kind in NODULE_KINDS:
        grade_en = grade_zh = f"Lung-RADS {finding.category}"
    elif finding.kind in VESSEL_KINDS:
        grade_en = attrs.get("grade") or finding.category or ""
        grade_zh = _GRADE_ZH.get(grade_en, grade_en)
    kind_en = kind.removeprefix("dr_").replace("_", " ").capitalize()
    # No lobe (thick slices, fissures not seen): the side, as the CT pipeline reports it.
    side = attrs.get("side", "").lower() if kind in NODULE_KINDS and not lobe else ""
    side_zh, side_en = _SIDE.get(side, ("", ""))
    zh = " ".join(
        p
        for p in (
            f"{_KIND_ZH.get(kind, kind)} {finding.number}",
            _LOBE_ZH.get(lobe, lobe) or side_zh or _vessel_zh(vessel),
            value.replace("residual", "残余管腔"),
            grade_zh,
        )
        if p
    )
    en = " ".join(
        p
        for p in (f"{kind_en} {finding.number}", lobe or side_en or vessel, value, grade_en)
        if p
    )
    return zh, en


def _render(png: Path, lines: list[str]) -> npt.NDArray[np.uint8]:
    img = Image.open(png).convert("RGB")
    if img.width < _MIN_WIDTH:
        scale = -(-_MIN_WIDTH // img.width)
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    size = max(14, img.width // 28)
    font, has_cjk = _font(size)
    shown = lines if has_cjk else [ln for ln in lines if ln.isascii()]
    band = int(size * 1.4) * len(shown) + size // 2
    canvas = Image.new("RGB", (img.width, img.height + band), (0, 0, 0))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = img.height + size // 4
    for line in shown:
        draw.text((size // 2, y), line, fill=(255, 255, 0), font=font)
        y += int(size * 1.4)
    return np.asarray(canvas, dtype=np.uint8)


def rgb_secondary_capture(
    signed: SignedStudy,
    pixels: npt.NDArray[np.uint8],
    *,
    series_uid: str,
    number: int,
    sop_uid: str,
    instance_number: int,
    description: str,
    comments: str,
) -> Dataset:
    """An uncompressed 8-bit RGB SC of the signed study, annotations burned in."""
    p = signed.patient
    first = signed.sources[0].at(0) if signed.sources and len(signed.sources[0]) else None
    body_part = str(getattr(first, "BodyPartExamined", "") or "") or (
        "CHEST" if any(base_kind(f.kind) in NODULE_KINDS for f in signed.findings) else ""
    )
    study_id = str(getattr(first, "StudyID", "") or "") or None
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        study_instance_uid=signed.study_uid,
        series_instance_uid=series_uid,
        series_number=number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_id=p.patient_id,
        patient_name=None,  # set by apply_patient, unvalidated: names stay as received
        patient_birth_date=p.birth_date,
        patient_sex=p.sex if p.sex in {"M", "F", "O"} else None,
        accession_number=p.accession_number,
        study_id=study_id,
        study_date=p.study_date,
        study_time=p.study_time,
        referring_physician_name=None,
        patient_orientation=("L", "P"),
        contributing_equipment=contributing_equipment(signed.models),
        series_description=f"{description} r{signed.revision}"[:64],
        specific_character_set="ISO_IR 192",
    )
    apply_patient(sc, p)
    sc.ImageComments = comments[:10240]
    if body_part:
        # Tells a validator the body part is unpaired, so Laterality (2C) is absent.
        sc.BodyPartExamined = body_part
    else:
        sc.Laterality = ""
    sc.BurnedInAnnotation = "YES"  # text is in the pixels (PS3.3 C.7.6.1.1.11)
    return sc


#: Burned into every key image of an unreviewed alert, first line, so that an old
#: township console shows it whatever it does with the header.
ALERT_LINES = ("AI 危急提示 未经医师审核", "AI ALERT - NOT REVIEWED BY A RADIOLOGIST")


def build_key_images(signed: SignedStudy) -> list[Dataset]:
    """One SC per confirmed finding that has a key image, numbered by finding order."""
    out: list[Dataset] = []
    series_uid = signed.uid(Family.SC, "series")
    alert = list(ALERT_LINES) if signed.preliminary else []
    for f in signed.findings:
        if f.key_image is None:
            continue
        zh, en = caption(f)
        out.append(
            rgb_secondary_capture(
                signed,
                _render(f.key_image, [*alert, zh, en]),
                series_uid=series_uid,
                number=series_number(Family.SC, signed.revision),
                sop_uid=signed.uid(Family.SC, "instance", f.id),
                instance_number=f.number,
                description="AI ALERT not reviewed" if alert else "AI key images",
                # The radiologist's note travels in ImageComments, not in the pixels.
                comments=" / ".join(c for c in (*alert, zh, en, f.comment or "") if c),
            )
        )
    logger.info("key images built", extra={"study_uid": signed.study_uid, "count": len(out)})
    return out
