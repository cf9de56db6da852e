"""Benchmark the CT nodule pipeline: per-stage wall time and peak memory.

Cases (made by the phantom factory, written as DICOM once into ``var/bench``):
``ct300``: 300 slices 512x512, 1 mm; ``ct600``: 600 slices 512x512, 0.625 mm.
Each case is analysed in a fresh process so ``ru_maxrss`` is the pipeline's own peak;
tracemalloc reports the peak of Python/numpy allocations beside it.

    nice -n 10 python -m benchmarks.ct_nodule [ct300] [ct600]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

#: name -> (slice thickness mm, z coverage mm)
CASES = {"ct300": (1.0, 300.0), "ct600": (0.625, 375.0)}
ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "var" / "bench"


def prepare(name: str) -> Path:
    from training.phantoms.ct import ChestCTConfig, make_chest_ct
    from training.phantoms.dicom_writer import write_dicom

    out = BENCH_DIR / name
    if (out / "done").exists():
        return out
    thickness, coverage = CASES[name]
    cfg = ChestCTConfig(
        matrix=512,
        pixel_spacing_mm=0.7,
        slice_thickness_mm=thickness,
        coverage_mm=coverage,
        n_nodules=5,
        nodule_size_mm=(5.0, 25.0),
    )
    phantom = make_chest_ct(77, cfg)
    write_dicom(phantom, out)
    (out / "done").write_text("ok")
    return out


def analyse(name: str) -> dict[str, object]:
    import pydicom

    from countyread.settings import Settings
    from inference.ct_nodule import CTNodulePipeline
    from inference.pipeline import SeriesInput, StudyInput

    directory = BENCH_DIR / name
    paths = tuple(sorted(directory.glob("*.dcm")))
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    series = SeriesInput(str(ds.SeriesInstanceUID), "CT", None, "CHEST", paths)
    study = StudyInput(str(ds.StudyInstanceUID), series.series_uid, (series,))
    pipeline = CTNodulePipeline.create(Settings())
    tracemalloc.start()
    t0 = time.perf_counter()
    out = pipeline.analyze(study)
    wall = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "case": name,
        "slices": len(paths),
        "wall_s": round(wall, 2),
        "stages_ms": dict(out.result.timings_ms),
        "findings": len(out.result.findings),
        "tracemalloc_peak_mb": round(traced_peak / 2**20, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv) or any(
        a not in CASES and a not in {"--prepare", "--analyse"} for a in argv[:1]
    ):
        print(f"usage: python -m benchmarks.ct_nodule [{' '.join(CASES)}]\n"
              "Times the CT nodule pipeline end to end and per stage on phantom CTs made\n"
              "on first use (each case in its own process; peak memory from ru_maxrss).\n"
              "No argument: every case.")
        return 0 if any(a in ("-h", "--help") for a in argv) else 2
    if len(argv) == 2 and argv[0] in {"--prepare", "--analyse"}:
        if argv[0] == "--prepare":
            prepare(argv[1])
        else:
            print(json.dumps(analyse(argv[1])))
        return 0
    for name in argv or list(CASES):
        prep = [sys.executable, "-m", "benchmarks.ct_nodule", "--prepare", name]
        subprocess.run(prep, check=True, cwd=ROOT)
        res = subprocess.run(
            [sys.executable, "-m", "benchmarks.ct_nodule", "--analyse", name],
            check=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        print(res.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
