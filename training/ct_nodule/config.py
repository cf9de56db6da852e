"""The TOML training config of the CT nodule network, validated by pydantic."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train_seeds: tuple[int, int]
    held_out_seeds: tuple[int, int]
    # the operating threshold is chosen here, not on the held-out seeds it is reported on
    validation_seeds: tuple[int, int] | None = None
    # false positives per scan allowed above the operating threshold on those seeds
    threshold_fp_per_scan: float = Field(default=0.25, ge=0.0)
    threshold_floor: float = Field(default=0.5, ge=0.0, lt=1.0)  # never choose below this
    matrix: int = 256
    pixel_spacing_mm: tuple[float, float] = (1.2, 1.4)
    slice_thickness_mm: tuple[float, ...] = (1.25, 2.0, 2.5)
    n_nodules: int = 8
    nodule_size_mm: tuple[float, float] = (3.0, 40.0)
    mass_fraction: float = 0.08
    negatives_per_case: int = 90
    max_negatives_per_case: int = 40  # subsample at load time: CPU training budget
    jitter_copies: int = 3
    workers: int = 2
    # hard-negative mining: a reference ONNX model scores every stored negative, and
    # ``hard_negatives_per_case`` of the highest-scoring ones are always kept at load time
    hard_negative_model: Path | None = None
    hard_negatives_per_case: int = 0
    # the ranked head of the candidate list that negatives are drawn from first: the
    # inference cap when 1.1.0/1.2.0 were built (fixed here so that raising the cap in
    # inference/ct_nodule/candidates.py leaves those recipes reproducible)
    head_ranks: int = Field(default=400, ge=1)
    # every negative ranked below this is stored (and scored) too: mining for a larger
    # inference cap needs the candidates beyond the current one (0: head and tail only)
    mine_ranks: int = Field(default=0, ge=0)

    @property
    def train_list(self) -> list[int]:
        return list(range(self.train_seeds[0], self.train_seeds[1] + 1))

    @property
    def validation_list(self) -> list[int]:
        if self.validation_seeds is None:
            return []
        return list(range(self.validation_seeds[0], self.validation_seeds[1] + 1))

    @property
    def held_out_list(self) -> list[int]:
        return list(range(self.held_out_seeds[0], self.held_out_seeds[1] + 1))


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=6, ge=1)
    batch_size: int = 32
    learning_rate: float = 3e-3
    seg_weight: float = 1.0
    seed: int = 7
    threads: int = 2
    # warm start from a shipped ONNX NoduleNet (batch norm folded into the convolutions)
    init_from: Path | None = None
    intensity_jitter: float = 0.0  # +- HU-scale gain/offset applied to patches (x [-1, 1])
    # segmentation targets of the positives from this ONNX NoduleNet's mask (probability
    # > 0.5) instead of the phantom truth: refine.py and measure.py were tuned on that
    # model's masks, so a fine-tune that only needs a better classifier keeps them
    mask_teacher: Path | None = None


class RealSource(BaseModel):
    """A labelled real-data source for training (``[[real]]`` tables in the TOML).

    ``luna16``: ``root`` holds the ``.mhd`` series (subset folders allowed), ``labels`` the
    annotations.csv. ``nifti``: ``root`` holds images, ``labels`` a folder of label maps
    with the same file names (connected components are the nodules).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["luna16", "nifti"]
    root: Path
    labels: Path
    max_cases: int | None = Field(default=None, ge=1)


class NoduleTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    work_dir: Path
    data: DataConfig
    train: TrainConfig = TrainConfig()
    real: tuple[RealSource, ...] = ()
    source: Path = Path("training/configs/ct_nodule.toml")


def load_config(path: Path) -> NoduleTrainingConfig:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return NoduleTrainingConfig.model_validate({**raw, "source": path})
