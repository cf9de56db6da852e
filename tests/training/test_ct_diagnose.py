"""The held-out loss diagnosis: its summary (FROC, stages, false positives) and JSON round trip."""

from __future__ import annotations

import json
from dataclasses import asdict

from training.ct_nodule.diagnose import CaseResult, NoduleTrace, candidate_recall, summarise


def _trace(seed: int, index: int, mm: float, stage: str, rank: int = 3) -> NoduleTrace:
    return NoduleTrace(
        seed, index, "solid", "lung", mm, 1.0, True, rank, 0.99, 0.99, stage, "round"
    )


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
    assert s["candidate_recall"] == {"400": 1.0, "800": 1.0, "1200": 1.0, "all": 1.0}


def test_candidate_recall_counts_first_ranks_per_cap() -> None:
    # ranks 3 and 399 are inside the 400 cap, 400 is the 401st candidate, -1 has none
    traces = [_trace(1, n, 8.0, "found", rank) for n, rank in enumerate((3, 399, 400, 900, -1))]
    assert candidate_recall(traces) == {"400": 0.4, "800": 0.6, "1200": 0.8, "all": 0.8}


def test_traces_written_before_the_shape_field_still_load() -> None:
    case = asdict(_case(4, 0.5))
    for t in case["traces"]:
        del t["shape"]
    assert CaseResult.from_json(case).traces[0].shape == ""


def test_case_result_json_round_trip() -> None:
    case = _case(3, 0.5)
    assert CaseResult.from_json(json.loads(json.dumps(asdict(case)))) == case
