"""The held-out loss diagnosis: its summary (FROC, stages, false positives) and JSON round trip."""

from __future__ import annotations

import json
from dataclasses import asdict

from training.ct_nodule.diagnose import CaseResult, NoduleTrace, summarise


def _trace(seed: int, index: int, mm: float, stage: str) -> NoduleTrace:
    return NoduleTrace(seed, index, "solid", "lung", mm, 1.0, True, 3, 0.99, 0.99, stage)


def _case(seed: int, fp: float) -> CaseResult:
    return CaseResult(
        seed,
        [_trace(seed, 0, 8.0, "found"), _trace(seed, 1, 5.0, "cap")],
        [((0.0, 0.0, 0.0), 8.0, "solid"), ((50.0, 0.0, 0.0), 5.0, "solid")],
        [((0.5, 0.0, 0.0), 0.999), ((-60.0, 0.0, 0.0), fp)],
        400,
    )


def test_summary_counts_stages_sensitivity_and_false_positives() -> None:
    s = summarise([_case(1, 0.999), _case(2, 0.2)], threshold=0.99)
    assert s["stages"] == {"found": 2, "cap": 2}
    assert s["ge6mm_found_at_threshold"] == "2/2"
    assert s["sensitivity_at_1fp"] == 0.5  # the 5 mm nodules are never detected
    assert s["fp_above_threshold_per_scan"] == 0.5
    assert s["top_fp_probabilities"] == [0.999, 0.2]


def test_case_result_json_round_trip() -> None:
    case = _case(3, 0.5)
    assert CaseResult.from_json(json.loads(json.dumps(asdict(case)))) == case
