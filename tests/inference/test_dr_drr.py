"""The DR pipeline on CT-projection DRR phantoms (``training.phantoms.dr``) written by the
phantom factory's own DX/CR writer. Each phantom projects a full chest CT (~20 s), so
this is ``slow``; the fast fixed set is in ``test_dr_pipeline.py``.

Seeds 500000.. are the DRR held-out seeds of ``training/dr/finetune3.toml``. Only nodules
the phantom marks ``visible`` count (a ground-glass or small retrocardiac nodule casts a
shadow under 3.5% of the display range, which no reader sees); a mark on a hidden nodule
is not a false positive either.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from countyread.settings import load_settings
from inference.dr import DRNodulePipeline
from inference.dr.findings import Thresholds
from inference.dr.pipeline import DRConfig
from inference.pipeline import SeriesInput, StudyInput
from training.dr.evaluate import Box

pytestmark = pytest.mark.slow

SEEDS = range(500000, 500008)


# Known shortfall: dr_nodule 1.4.0 finds 4 of the 6 visible nodules >= 10 mm here at
# 1.00 FP/image (1.3.0: 3/6 at 0.88; 1.2.0: 3/6 at 0.50; 1.1.0, trained mostly on analytic
# phantoms, found 1 of all 10 at its operating point). On the 60-film DRR held-out set
# 1.4.0 reaches 0.70 at 1 FP/image (1.3.0: 0.64; 1.2.0: 0.49). strict: an XPASS fails.
# Where the 60-film set loses its 14 (training.dr.diagnose, 2026-12-07): 8 have no peak at
# all. 8 are solid or part-solid with the phantom's CNR <= 1.03 (4 of the 12 below 1.05
# found; 29 of the 35 above); the other 6 are calcified (CNR 1.2-2.7; 17 of 23 calcified
# found), and those looked at lie on the lung's edge (diaphragm dome, mediastinal border)
# where, at 256 input pixels, little of them shows. Rescoring candidates (logistic on score
# and predicted size, fitted on analytic seeds 940000..940299) lifts the analytic set 0.772
# -> 0.784 at 1 FP/image but costs DRRs 0.617 -> 0.596 at 0.5 FP/image; with local contrast
# features too, analytic 0.769 and DRR 0.574: not taken.
@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="dr_nodule 1.4.0 on CT-projection DRRs: 4/6 found"
)
def test_drr_nodules_of_10_mm_and_more(tmp_path: Path) -> None:
    from training.phantoms.dicom_writer import write_dicom
    from training.phantoms.dr import ChestDRConfig, make_chest_dr

    pipeline = DRNodulePipeline.create(load_settings(data_dir=tmp_path / "var", environment="test"))
    # run at the card's threshold for 1 FP/image on the DRR held-out set (>= 10 mm), as the
    # fixed analytic set runs at its analytic counterpart (test_dr_pipeline.py)
    card = pipeline.session.artifact.card
    th = Thresholds(operating=card.metrics["drr_ge10mm_threshold_at_1_fp"])
    pipeline = DRNodulePipeline(pipeline.session, DRConfig(th))
    hits = truths = fps = 0
    for seed in SEEDS:
        phantom = make_chest_dr(seed, ChestDRConfig(size_px=768, pixel_spacing_mm=0.55))
        paths = tuple(write_dicom(phantom, tmp_path / str(seed)))
        series = SeriesInput(f"1.2.{seed}", phantom.modality, None, "CHEST", paths)
        out = pipeline.analyze(StudyInput(f"1.3.{seed}", series.series_uid, (series,)))
        boxes = []
        for f in out.result.findings:
            col, row = (float(v) for v in (f.attribute("pixel_center") or "").split(","))
            d = (f.measurement("diameter") or 0) / phantom.projection.pixel_spacing_mm
            boxes.append(Box.around(row, col, d))
        matched: set[int] = set()
        for n in sorted(phantom.nodules, key=lambda n: not n.visible):  # shown ones first
            truth = Box(*(float(v) for v in n.bbox_px))
            j = next(
                (j for j, b in enumerate(boxes) if j not in matched and b.iou(truth) > 0.2), None
            )
            if j is not None:
                matched.add(j)
            if n.diameter_mm >= 10 and n.visible:
                truths += 1
                hits += j is not None
        fps += len(boxes) - len(matched)
    print(f"DRR: sensitivity >= 10 mm {hits}/{truths}, {fps / len(SEEDS):.2f} FP/image")
    assert truths > 0
    assert hits / truths >= 0.80
    assert fps / len(SEEDS) <= 1.0
