"""DR nodule triage throughput, end to end on this machine's CPU.

Each image is a phantom chest radiograph written as a DX file at a realistic detector
matrix (default 2500 x 2500, 12 bits stored in 16, ~12 MB), in rotating styles
(window, MONOCHROME1, VOI LUT, no spacing). Timed per image: ``DRNodulePipeline.analyze``
(header selection, read + decode, Modality/VOI LUT, reduction, collimation crop,
letterbox, ONNX inference, decoding, findings, key image). The first image pays session
warm-up and is reported apart. Goal: <= 1 s per image.

    nice -n 10 python -m benchmarks.dr [--images 12] [--matrix 2500] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from countyread.settings import load_settings  # noqa: E402
from inference.dr import DRNodulePipeline  # noqa: E402
from inference.pipeline import SeriesInput, StudyInput  # noqa: E402
from training.dr.dicom import DXStyle, uid, write_chest  # noqa: E402
from training.dr.synth import SynthChest, make_synth_chest  # noqa: E402

STYLES = (
    DXStyle(),
    DXStyle(photometric="MONOCHROME1"),
    DXStyle(voi="lut", spacing="pixel"),
    DXStyle(spacing="none"),
)


def upscale(chest: SynthChest, matrix: int) -> SynthChest:
    zoom = matrix / max(chest.image.shape)
    big = ndimage.zoom(chest.image.astype(np.float32), zoom, order=1)
    image = np.clip(np.round(big), 0, 4095).astype(np.uint16)
    return SynthChest(image, chest.spacing_mm / zoom, chest.view, chest.nodules)


def main() -> int:
    parser = argparse.ArgumentParser(description="DR nodule triage images/s, end to end")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--matrix", type=int, default=2500, help="long side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        studies = []
        for i in range(args.images):
            seed = 930000 + i
            chest = upscale(make_synth_chest(seed), args.matrix)
            style = STYLES[i % len(STYLES)]
            path = write_chest(root / f"{seed}.dcm", chest, seed, style)
            series = SeriesInput(uid(seed, 1, 1), "DX", style.description, "CHEST", (path,))
            studies.append(StudyInput(uid(seed, 1), series.series_uid, (series,)))
        size_mb = sum(s.series[0].paths[0].stat().st_size for s in studies) / 1e6 / len(studies)
        settings = load_settings(
            data_dir=root / "var", environment="test", intra_op_threads=args.threads
        )
        t0 = time.perf_counter()
        pipeline = DRNodulePipeline.create(settings)
        create_s = time.perf_counter() - t0
        walls: list[float] = []
        stages: dict[str, list[float]] = {}
        for study in studies:
            t = time.perf_counter()
            out = pipeline.analyze(study)
            walls.append(time.perf_counter() - t)
            for name, ms in out.result.timings_ms:
                stages.setdefault(name, []).append(ms)
    steady = walls[1:] or walls
    print(
        f"DR benchmark: {args.images} images, {args.matrix} px long side, "
        f"{size_mb:.1f} MB/file, onnxruntime threads {args.threads}, "
        f"provider {pipeline.session.active_provider}"
    )
    print(f"  pipeline create (registry sha256 + session): {create_s * 1000:.0f} ms")
    print(f"  first image: {walls[0] * 1000:.0f} ms")
    print(
        f"  steady state: mean {statistics.mean(steady) * 1000:.0f} ms, "
        f"p95 {np.percentile(steady, 95) * 1000:.0f} ms, "
        f"{1 / statistics.mean(steady):.2f} images/s"
    )
    for name, values in stages.items():
        print(f"    {name:<7} mean {statistics.mean(values[1:] or values):7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
