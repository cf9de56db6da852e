"""Shared 2-D render helpers for key images: windowing, contours, marks, text, MIP.

Images are RGB uint8 (H x W x 3) as ``PipelineOutput.images`` expects. Text uses a CJK
font when one is installed (Noto Sans CJK) so Chinese labels render; otherwise PIL's
built-in font and ASCII-only text (non-ASCII characters are replaced, never crash).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

logger = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]
LUNG_WINDOW = (-600.0, 1500.0)  # centre, width
MEDIASTINUM_WINDOW = (40.0, 400.0)
_FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
)


def window(
    hu: npt.NDArray[np.floating] | npt.NDArray[np.integer], centre: float, width: float
) -> RGB:
    """Grey RGB image of ``hu`` under a window (DICOM PS3.3 C.11.2.1.2 linear VOI)."""
    lo = centre - width / 2.0
    grey = np.clip((hu.astype(np.float32) - lo) / width * 255.0, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def resample_for_display(img: RGB, row_mm: float, col_mm: float, scale: float = 1.0) -> RGB:
    """Square pixels: stretch so one pixel is the same mm across and down, times ``scale``."""
    h, w = img.shape[:2]
    base = min(row_mm, col_mm)
    size = (max(1, round(w * col_mm / base * scale)), max(1, round(h * row_mm / base * scale)))
    if size == (w, h):
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))


def draw_contour(img: RGB, mask: npt.NDArray[np.bool_], colour: tuple[int, int, int]) -> RGB:
    """Overlay the 1-pixel boundary of ``mask`` (same H x W as ``img``)."""
    out = img.copy()
    edge = mask & ~ndimage.binary_erosion(mask)
    out[edge] = colour
    return out


def draw_marks(
    img: RGB,
    points_rc: list[tuple[float, float]],
    radii: list[float],
    labels: list[str],
    colour: tuple[int, int, int] = (255, 200, 0),
) -> RGB:
    """Circles with labels at (row, col) pixel positions."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    font = get_font(max(12, img.shape[0] // 40))
    for (r, c), rad, text in zip(points_rc, radii, labels, strict=True):
        rad = max(rad, 6.0)
        draw.ellipse([c - rad, r - rad, c + rad, r + rad], outline=colour, width=2)
        draw.text((c + rad + 2, r - rad), _safe(text, font), fill=colour, font=font)
    return np.asarray(pil)


def draw_line(
    img: RGB, a_rc: tuple[float, float], b_rc: tuple[float, float], colour: tuple[int, int, int]
) -> RGB:
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).line([a_rc[::-1], b_rc[::-1]], fill=colour, width=1)
    return np.asarray(pil)


def add_caption(img: RGB, lines: list[str], colour: tuple[int, int, int] = (255, 255, 255)) -> RGB:
    """Text lines in the top-left corner over a dark band, readable on any background."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    size = max(12, img.shape[0] // 32)
    font = get_font(size)
    # Small matrices (and long Chinese + English captions) would cut text at the edge.
    lines = [part for line in lines for part in wrap_text(_safe(line, font), font,
                                                           img.shape[1] - 8)]
    height = (size + 4) * len(lines) + 4
    draw.rectangle([0, 0, img.shape[1], height], fill=(0, 0, 0))
    for n, line in enumerate(lines):
        draw.text((4, 2 + n * (size + 4)), line, fill=colour, font=font)
    return np.asarray(pil)


def wrap_text(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int
) -> list[str]:
    """Break ``text`` into lines no wider than ``width`` pixels.

    Breaks after spaces and commas where possible, otherwise between any two characters
    (Chinese has no spaces), so nothing is ever clipped.
    """
    out: list[str] = []
    line = ""
    for ch in text:
        if font.getlength(line + ch) <= width or not line:
            line += ch
            continue
        cut = max(line.rfind(" "), line.rfind(","), line.rfind("，"))
        if cut > 0:
            out.append(line[: cut + 1].rstrip())
            line = line[cut + 1 :].lstrip() + ch
        else:
            out.append(line)
            line = ch
    if line or not out:
        out.append(line)
    return out


def mip(array: npt.NDArray[np.integer], axis: int) -> npt.NDArray[np.integer]:
    """Maximum intensity projection along ``axis``."""
    return np.asarray(array.max(axis=axis))


@functools.lru_cache(maxsize=8)
def get_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in _FONT_CANDIDATES:
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError:
                continue
    logger.info("no TrueType font found; key image text is ASCII only")
    return ImageFont.load_default()


def has_cjk_font(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> bool:
    return isinstance(font, ImageFont.FreeTypeFont) and "CJK" in str(getattr(font, "path", ""))


def _safe(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> str:
    if has_cjk_font(font) or text.isascii():
        return text
    return text.encode("ascii", "replace").decode("ascii")
