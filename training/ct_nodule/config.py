"""The TOML training config of the CT nodule network, validated by pydantic."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train_seeds: tuple[int, int]
    held_out_seeds: tuple[int, int]
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

    @property
    def train_list(self) -> list[int]:
        return list(range(self.train_seeds[0], self.train_seeds[1] + 1))

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


class NoduleTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    work_dir: Path
    data: DataConfig
    train: TrainConfig = TrainConfig()
    source: Path = Path("training/configs/ct_nodule.toml")


def load_config(path: Path) -> NoduleTrainingConfig:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return NoduleTrainingConfig.model_validate({**raw, "source": path})
