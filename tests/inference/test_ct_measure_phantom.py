"""CT nodule measurement on fixed phantom nodules (issue 4): spiculation, a small solid
part, a juxtapleural ground-glass nodule and round solid nodules, each measured at its
true centre with the shipped network's mask (as ``training/ct_nodule/diagnose_measure``
does), so the test exercises the measurement stage without the detector's thresholds.

Before the spicule cue, the in-plane solid-part threshold and the outside-tissue rule of
``inference/ct_nodule/measure.py`` four of these six nodules got the wrong Lung-RADS
category (both spiculated ones 4B instead of 4X, the part-solid one read as ground glass,
the juxtapleural ground-glass one as part-solid through the chest wall). Since the phantom
draws spicules that show at this resolution, the part-solid spiculated one needs the
vessel cut of ``spicule_cue`` (SPICULE_CUT) to stay 4X: its spicules joined the vessels
they met.
"""

from __future__ import annotations

import pytest

from inference.ct_nodule.analysis import AssessedNodule, assess
from inference.ct_nodule.lungs import segment_lungs
from models.registry import ModelRegistry
from training.ct_nodule.diagnose_measure import detection_at_truth
from training.ct_nodule.evaluate import onnx_runner, truth_category
from training.phantoms.ct import ChestCTConfig, make_chest_ct
from training.phantoms.nodule_shapes import NoduleSpec
from training.phantoms.nodules import NoduleTruth

SEED = 12
SPECS = (
    NoduleSpec(26.0, "solid", "spiculated"),
    NoduleSpec(14.0, "solid", "round"),
    NoduleSpec(12.0, "part_solid", "round", solid_part_mm=3.0),
    NoduleSpec(12.0, "ground_glass", "round", "juxtapleural"),
    NoduleSpec(8.0, "solid", "round"),
    NoduleSpec(24.0, "part_solid", "spiculated", solid_part_mm=9.0),
)


@pytest.fixture(scope="module")
def measured() -> list[tuple[NoduleTruth, AssessedNodule]]:
    # thin slices: spicules thinner than a voxel fade into 2.5 mm slices
    cfg = ChestCTConfig.small(
        nodule_specs=SPECS, coverage_mm=160.0, slice_thickness_mm=1.25, kernel="standard", mas=120.0
    )
    ph = make_chest_ct(SEED, cfg)
    lung = segment_lungs(ph.volume)
    run = onnx_runner(ModelRegistry().load("ct_nodule").directory, threads=1)
    out = []
    for t in ph.nodules:
        det = detection_at_truth(ph, t, run)
        assert det is not None, f"no mask for nodule {t.index} ({t.kind}, {t.shape})"
        out.append((t, assess(ph.volume, lung, det)))
    assert len(out) == len(SPECS), "a nodule fell off the phantom"
    return out


def test_type_and_lung_rads_of_each_nodule(
    measured: list[tuple[NoduleTruth, AssessedNodule]],
) -> None:
    for t, n in measured:
        got = (n.measurements.type.value, n.category)
        assert got == (t.kind, truth_category(t)), (t, n.measurements)


def test_spiculated_nodules_and_only_they_are_spiculated(
    measured: list[tuple[NoduleTruth, AssessedNodule]],
) -> None:
    for t, n in measured:
        assert (n.measurements.margin == "spiculated") == (t.shape == "spiculated"), (
            t,
            n.measurements,
        )


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="since the phantom draws spicules that show (1.4 mm + 0.2 radius wide, 3 mm "
    "longer) the part-solid one's truth is 37.2 x 21.6 = 29.4 mm, taken on a slice where "
    "its spicules cross in 5 pieces (28.3 on the largest piece per slice); it measures "
    "34.4 x 17.0 = 25.7 mm (the solid one 29.9 against 28.9)",
)
def test_spiculated_diameter_reaches_the_spicules(
    measured: list[tuple[NoduleTruth, AssessedNodule]],
) -> None:
    """The truth's long axis runs to the spicules' tips; the mask alone stops at the core
    (20.8 and 19.1 mm against 24.8 and 22.3 mm before the spicule-inclusive axes, with
    the phantom's former sub-pixel spicules)."""
    for t, n in measured:
        if t.shape == "spiculated":
            assert abs(n.measurements.axes.mean_mm - t.mean_diameter_mm) <= 1.5, (t, n.measurements)
