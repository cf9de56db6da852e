"""RENDER: a CTA pipeline's MIP / VR / CPR images as their own SC series.

The CTA pipeline leaves annotated PNGs in its analysis directory (``mip_*``, ``vr_*``,
``cpr_*`` / ``scpr_*``); each kind becomes one series so a console lists "MIP", "VR"
and "CPR" side by side. Registered with the builder as a plug-in series: nodes receive
it only when their ``send`` list names ``RENDER``.
"""

from __future__ import annotations

import logging
import re

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from dicom_node.results.common import Family, SignedStudy, series_number
from dicom_node.results.sc import rgb_secondary_capture

logger = logging.getLogger(__name__)

# (series key, file-name pattern, description); the order fixes the series numbers.
RENDER_SERIES = (
    ("mip", re.compile(r"^mip_[a-z0-9_]+\.png$"), "CTA MIP 最大密度投影"),
    ("vr", re.compile(r"^vr_[0-9]+\.png$"), "CTA VR 容积再现"),
    ("cpr", re.compile(r"^s?cpr_[A-Za-z0-9_]+\.png$"), "CTA CPR 曲面重建"),
)
PIPELINES = ("cta",)


def build_cta_renders(signed: SignedStudy) -> list[Dataset]:
    """One SC per rendered image of the CTA analyses behind the signed findings."""
    out: list[Dataset] = []
    dirs = [d for pipeline, d in signed.artifacts if pipeline in PIPELINES and d.is_dir()]
    for offset, (key, pattern, description) in enumerate(RENDER_SERIES, start=1):
        files = sorted(p for d in dirs for p in d.iterdir() if pattern.match(p.name))
        series_uid = signed.uid(Family.RENDER, "series", key)
        for n, png in enumerate(files, start=1):
            pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.uint8)
            out.append(
                rgb_secondary_capture(
                    signed,
                    pixels,
                    series_uid=series_uid,
                    number=series_number(Family.RENDER, signed.revision, offset),
                    sop_uid=signed.uid(Family.RENDER, "instance", key, png.parent.name, png.stem),
                    instance_number=n,
                    description=description,
                    comments=png.stem,
                )
            )
    if out:
        logger.info("render series built", extra={"study_uid": signed.study_uid, "count": len(out)})
    return out
