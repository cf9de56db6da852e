"""Missing slices anywhere in the small chest phantom: the nodule stays, nothing is added.

A slice interpolated into a gap is a cross-fade of its neighbours; detections resting on
it without two acquired slices are set aside (``analysis.gap_supported``). A gap through
the nodule itself must not lose it: it spans several acquired slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from inference.ct_nodule import CTNodulePipeline
from inference.ct_nodule.analysis import gap_supported
from inference.ct_nodule.detector import Detection
from tests.robustness.harness import analyse, clone
from training.phantoms.ct import CTPhantom

# deleted slice indices: beside the vessel that fakes a nodule (see test_ct_variants), a
# two-slice gap there, one through the nodule's largest section, one at its edge, far away
GAPS = [(40,), (40, 41), (34,), (30,), (20, 21)]


@pytest.mark.parametrize("gap", GAPS, ids=lambda g: "del" + "_".join(map(str, g)))
def test_gap_keeps_the_nodule_and_adds_nothing(
    gap: tuple[int, ...],
    phantom: CTPhantom,
    series: list[Dataset],
    pipeline: CTNodulePipeline,
    tmp_path: Path,
) -> None:
    sent = [ds for k, ds in enumerate(clone(series)) if k not in gap]
    out = analyse(pipeline, sent, tmp_path)
    assert any(f"{len(gap)} missing slice" in n for n in out.result.notes), out.result.notes
    truth = phantom.nodules[0]
    got = out.result.findings
    assert len(got) == 1, [(f.center_lps, f.probability) for f in got]
    f = got[0]
    assert np.linalg.norm(np.subtract(f.center_lps, truth.center_lps)) <= 2.0
    mean = f.measurement("mean_diameter")
    assert mean is not None and abs(mean - truth.mean_diameter_mm) <= 1.5
    # the key slice is a sent (acquired) instance, never the made-up one
    assert f.sop_instance_uid in {str(ds.SOPInstanceUID) for ds in sent}


def _det(per_slice: list[int], k0: int) -> Detection:
    mask = np.zeros((len(per_slice), 4, 4), dtype=bool)
    for k, n in enumerate(per_slice):
        mask[k].flat[:n] = True
    box = (slice(k0, k0 + len(per_slice)), slice(0, 4), slice(0, 4))
    return Detection(0.995, box, mask, (float(k0), 2.0, 2.0))


def test_gap_support_rule() -> None:
    gap = frozenset({40})
    assert not gap_supported(_det([0, 1, 2, 0], 39), gap)  # slices 40, 41: one acquired
    assert not gap_supported(_det([3], 40), gap)  # only the made-up slice
    assert gap_supported(_det([1, 1, 2], 39), gap)  # 39, 40, 41: two acquired
    assert gap_supported(_det([2, 2], 41), gap)  # does not touch the gap
    assert gap_supported(_det([0, 1, 2, 0], 39), frozenset())  # no gap in the series
