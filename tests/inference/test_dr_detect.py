"""Letterbox geometry, heatmap decoding, mapping to stored pixels / mm, findings, urgency."""

from __future__ import annotations

import numpy as np
import pytest

from countyread.domain import ModelRef, Urgency
from inference.dr.detect import STRIDE, Candidate, decode, letterbox
from inference.dr.findings import Mark, Thresholds, image_score, to_findings, to_marks, urgency
from inference.dr.image import PixelGeometry, Radiograph

MODEL = ModelRef("dr_nodule", "0.0.0", "0" * 64)


def radiograph(
    shape: tuple[int, int],
    factor: int = 1,
    crop: tuple[int, int] = (0, 0),
    spacing: tuple[float, float] | None = (0.5, 0.5),
) -> Radiograph:
    geo = PixelGeometry(spacing, "PixelSpacing" if spacing else "none")
    stored = ((shape[0] + crop[0]) * factor, (shape[1] + crop[1]) * factor)
    return Radiograph(np.zeros(shape, np.float32), factor, crop, stored, geo, ())


def test_letterbox_places_and_maps_back() -> None:
    img = np.zeros((400, 200), np.float32)
    img[100, 50] = 1.0
    x, box = letterbox(img, 256)
    assert x.shape == (256, 256)
    assert box.scale == pytest.approx(256 / 400)
    assert box.offset == (0, 64)
    assert x[:, :60].max() == 0.0 and x[:, 64 + 128 :].max() == 0.0  # zero padding
    rc = box.to_input((100, 50))[0]
    assert np.allclose(box.to_working(rc)[0], (100, 50))
    # the bright pixel lands where the mapping says
    r, c = np.unravel_index(np.argmax(x), x.shape)
    assert abs(r - rc[0]) <= 1 and abs(c - rc[1]) <= 1


def heat_with_peaks(peaks: list[tuple[int, int, float]], size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    h = np.zeros((size, size), np.float32)
    for r, c, s in peaks:
        h = np.maximum(h, s * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 2.0))
    return h.astype(np.float32)


def test_decode_finds_peaks_best_first_and_merges_duplicates() -> None:
    h = heat_with_peaks([(10, 10, 0.9), (40, 30, 0.6), (11, 12, 0.5)])
    d = np.full_like(h, 12.0)
    cands = decode(h, d)
    assert [round(c.score, 2) for c in cands] == [0.9, 0.6]  # (11, 12) is the same nodule
    top = cands[0]
    assert top.row == pytest.approx(10 * STRIDE + (STRIDE - 1) / 2, abs=0.6 * STRIDE)
    assert top.diameter == 12.0
    assert decode(np.zeros_like(h), d) == []
    assert len(decode(h, d, min_score=0.7)) == 1


def test_decode_refines_to_subpixel() -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    h = np.exp(-((yy - 20.3) ** 2 + (xx - 30.0) ** 2) / 4.0).astype(np.float32)
    (c,) = decode(h, np.ones_like(h))
    assert c.row == pytest.approx(20.3 * STRIDE + (STRIDE - 1) / 2, abs=0.15 * STRIDE)


def test_marks_map_to_stored_pixels_and_mm() -> None:
    rg = radiograph((512, 512), factor=2, crop=(10, 20), spacing=(0.2, 0.2))
    _, box = letterbox(rg.pixels, 256)  # scale 0.5
    # a candidate at input (100, 60) -> working (200.5, 120.5) -> stored ((210.5)*2+0.5, ...)
    (m,) = to_marks([Candidate(100.0, 60.0, 10.0, 0.8)], box, rg)
    assert (m.row, m.col) == pytest.approx(((200.5 + 10) * 2 + 0.5, (120.5 + 20) * 2 + 0.5))
    assert m.diameter_px == pytest.approx(10 / 0.5 * 2)
    assert m.unit == "mm" and m.diameter == pytest.approx(8.0)
    rg_px = radiograph((512, 512), spacing=None)
    (m_px,) = to_marks([Candidate(100.0, 60.0, 10.0, 0.8)], box, rg_px)
    assert m_px.unit == "px" and m_px.diameter == pytest.approx(20.0)


def test_findings_above_threshold_in_image_plane() -> None:
    rg = radiograph((500, 400), spacing=(0.15, 0.16))
    marks = [Mark(100.0, 200.0, 80.0, 12.4, "mm", 0.7), Mark(300.0, 50.0, 40.0, 6.2, "mm", 0.2)]
    fs = to_findings(
        marks,
        rg,
        series_uid="1.2",
        sop_instance_uid="1.2.3",
        view="PA",
        model=MODEL,
        thresholds=Thresholds(operating=0.5),
        key_image="dr_key",
    )
    assert len(fs) == 1
    f = fs[0]
    assert f.kind == "dr_nodule" and f.probability == 0.7
    assert f.center_lps == pytest.approx((200 * 0.16, 100 * 0.15, 0.0))
    assert f.sop_instance_uid == "1.2.3" and f.key_image == "dr_key"
    assert f.measurement("diameter") == 12.4
    assert f.attribute("unit") == "mm" and f.attribute("view") == "PA"
    assert image_score(marks) == 0.7 and image_score([]) == 0.0
    rg_px = radiograph((500, 400), spacing=None)
    (fp,) = to_findings(
        [Mark(100.0, 200.0, 80.0, 80.0, "px", 0.7)],
        rg_px,
        series_uid="1",
        sop_instance_uid="1.1",
        view="AP",
        model=MODEL,
        thresholds=Thresholds(),
        key_image=None,
    )
    assert fp.center_lps == (200.0, 100.0, 0.0)
    assert fp.measurements[0].unit == "px" and fp.attribute("unit") == "px"


def test_urgency_rule() -> None:
    rg = radiograph((500, 400))
    th = Thresholds(operating=0.5, urgent_score=0.9, mass_mm=30)

    def findings(d: float, unit: str, score: float) -> tuple:
        return to_findings(
            [Mark(10, 10, 5, d, unit, score)],
            rg,
            series_uid="1",
            sop_instance_uid="1.1",
            view="PA",
            model=MODEL,
            thresholds=th,
            key_image=None,
        )

    assert urgency(findings(12, "mm", 0.6), 0.6, th) is Urgency.ROUTINE
    assert urgency(findings(31, "mm", 0.6), 0.6, th) is Urgency.URGENT  # a mass
    assert urgency(findings(12, "mm", 0.95), 0.95, th) is Urgency.URGENT  # high score
    assert urgency(findings(300, "px", 0.6), 0.6, th) is Urgency.ROUTINE  # size unknown
    assert urgency((), 0.3, th) is Urgency.ROUTINE
