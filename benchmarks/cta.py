"""CTA benchmark: per-stage timings and peak memory for a 512 x 512 x 600, 0.625 mm CTA.

``nice -n 10 python benchmarks/cta.py [--slices 600] [--matrix 512] [--spacing 0.625]``

A synthetic head/neck CTA of that size is written as a DICOM series to a temporary
directory; a fresh child process then runs the real pipeline on it (decode, volume,
resample, segmentation, bone separation, centrelines, naming, profiles, stenosis,
each render, arrays) plus PNG and DICOM (Secondary Capture) encoding of the renders, and
reports its own peak resident memory, so phantom generation is not counted.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def make_case(out: Path, slices: int, matrix: int, spacing: float) -> list[Path]:
    from training.cta.dicom import write_series
    from training.cta.synth import SynthConfig, make_synthetic_cta

    half = matrix * spacing / 2
    top = 194.0
    cfg = SynthConfig(
        spacing=(spacing, spacing, spacing),
        half_width_mm=half - spacing / 2,
        z_range_mm=(top - (slices - 1) * spacing, top),
        n_stenoses=3,
    )
    phantom = make_synthetic_cta(11, cfg)
    return write_series(phantom, 11, out)


def run_child(directory: Path) -> dict[str, object]:
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from countyread.settings import Settings
    from inference.cta import CTAPipeline
    from inference.pipeline import SeriesInput, StudyInput

    paths = tuple(sorted(directory.glob("*.dcm")))
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    study = StudyInput(
        str(first.StudyInstanceUID),
        str(first.SeriesInstanceUID),
        (SeriesInput(str(first.SeriesInstanceUID), "CT", None, None, paths),),
    )
    t0 = time.perf_counter()
    pipeline = CTAPipeline.create(Settings(data_dir=directory / "var"))
    create_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    output = pipeline.analyze(study)
    total_s = time.perf_counter() - t0
    timings = dict(output.result.timings_ms)
    t = time.perf_counter()
    for _, rgb in output.images:
        Image.fromarray(rgb).save(io.BytesIO(), format="PNG")
    timings["png_encoding"] = round((time.perf_counter() - t) * 1000, 1)
    t = time.perf_counter()
    for n, (_, rgb) in enumerate(output.images):
        # PS3.3 A.8.1: Secondary Capture Image, RGB, as the RENDER series carries them
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        ds.Rows, ds.Columns = rgb.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.ascontiguousarray(rgb).tobytes()
        ds.save_as(io.BytesIO(), enforce_file_format=True)
    timings["dicom_encoding"] = round((time.perf_counter() - t) * 1000, 1)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "timings_ms": timings,
        "analyze_s": round(total_s, 2),
        "session_create_s": round(create_s, 2),
        "peak_rss_mb": round(peak_mb),
        "findings": [
            (f.kind, f.attribute("vessel"), f.measurement("stenosis_percent"))
            for f in output.result.findings
        ],
        "images": len(output.images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--spacing", type=float, default=0.625)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="cta-bench-") as tmp:
        t = time.perf_counter()
        paths = make_case(Path(tmp), args.slices, args.matrix, args.spacing)
        print(f"phantom written: {len(paths)} slices in {time.perf_counter() - t:.1f} s")
        proc = subprocess.run(
            [sys.executable, __file__, "--child", tmp],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    timings = report["timings_ms"]
    print(f"CTA {args.matrix}x{args.matrix}x{args.slices} @ {args.spacing} mm")
    for stage, ms in timings.items():
        print(f"  {stage:18s} {ms / 1000:7.2f} s")
    print(f"  {'analyze (total)':18s} {report['analyze_s']:7.2f} s")
    print(f"  session create     {report['session_create_s']:7.2f} s")
    print(f"  peak RSS           {report['peak_rss_mb']} MB")
    print(f"  images {report['images']}, findings {report['findings']}")


if __name__ == "__main__":
    main()
