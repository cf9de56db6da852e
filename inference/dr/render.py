"""Key image for DR: the radiograph with circled detections and the score, in Chinese and
English, as RGB uint8 (the worker saves it as PNG; the results builder wraps it in a
Secondary Capture for old township consoles).

Text uses the shared font choice of ``inference.render`` (Noto Sans CJK when installed);
without a CJK font the labels fall back to English only, so no tofu boxes reach a
radiologist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from inference.dr.findings import Mark
from inference.dr.image import Radiograph
from inference.render import get_font, has_cjk_font

logger = logging.getLogger(__name__)

MAX_SIDE = 1024
_RED = (255, 64, 64)
_AMBER = (255, 190, 0)


def _font(size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    """(font, has CJK glyphs), from the shared render helpers."""
    font = get_font(size)
    return font, has_cjk_font(font)


def key_image(
    radiograph: Radiograph,
    marks: Sequence[Mark],
    score: float,
    operating: float,
    *,
    view: str,
    unit_note: str | None,
) -> npt.NDArray[np.uint8]:
    """RGB key image of the analysed film (long side <= ``MAX_SIDE``)."""
    gray = np.round(radiograph.pixels * 255).astype(np.uint8)
    img = Image.fromarray(gray, mode="L")
    zoom = min(1.0, MAX_SIDE / max(img.size))
    if zoom < 1.0:
        img = img.resize(
            (round(img.width * zoom), round(img.height * zoom)), Image.Resampling.BILINEAR
        )
    band = max(28, img.height // 14)
    canvas = Image.new("RGB", (img.width, img.height + band), (0, 0, 0))
    canvas.paste(img.convert("RGB"), (0, band))
    draw = ImageDraw.Draw(canvas)
    # sized to the width too, so the bilingual headline fits on small films
    font, cjk = _font(max(10, min(band // 2 - 2, img.width // 40)))
    small, _ = _font(max(9, min(band // 3, img.width // 48)))
    per = radiograph.stored_per_working
    for i, m in enumerate(sorted(marks, key=lambda m: -m.score), start=1):
        if m.score < operating:
            continue
        # the key image shows the film as read: square pixels, standard display
        wr, wc = radiograph.to_working((m.row, m.col))[0]
        r, c = wr * zoom + band, wc * zoom
        rad = max(8.0, 0.75 * m.diameter_px / per * zoom)
        color = _RED if m.score >= 0.8 or (m.unit == "mm" and m.diameter >= 30) else _AMBER
        draw.ellipse((c - rad, r - rad, c + rad, r + rad), outline=color, width=2)
        label = f"{i} {m.score:.2f} {m.diameter:.0f}{m.unit}"
        draw.text((c + rad + 3, r - rad), label, fill=color, font=small)
    shown = sum(1 for m in marks if m.score >= operating)
    if cjk:
        headline = (
            f"AI 胸片结节筛查 / nodule triage ({view}) 评分 score {score:.2f}  "
            f"可疑结节 {shown} 处 / {shown} suspected"
        )
        footer = "仅供医师复核 · for radiologist review · 合成数据训练 synthetic-trained"
    else:
        headline = f"AI nodule triage ({view}) score {score:.2f}  {shown} suspected"
        footer = "for radiologist review - synthetic-trained model"
    draw.text((6, 2), headline, fill=(255, 255, 255), font=font)
    note = footer + (f" · {unit_note}" if unit_note else "")
    draw.text((6, band // 2 + 2), note, fill=(200, 200, 200), font=small)
    return np.asarray(canvas, dtype=np.uint8)
