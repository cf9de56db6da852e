"""Model cards: the pydantic description shipped beside every ONNX file (``card.json``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SYNTHETIC_STATEMENT = "trained on synthetic data; not clinically validated"


class InputSpec(BaseModel):
    """What one network input expects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: list[int | str] = Field(description="e.g. ['batch', 1, 32, 32, 32]")
    spacing_mm: list[float] = Field(description="voxel spacing (z, y, x) of a patch")
    intensity: str = Field(description="how HU are mapped to network input")


class TrainingData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="'phantom' or a dataset name")
    seeds: list[int] = Field(default_factory=list)
    held_out_seeds: list[int] = Field(default_factory=list)
    config: str = Field(description="path of the training config, relative to the repo")
    notes: str = ""


class ModelCard(BaseModel):
    """Everything a reviewer needs to know about one shipped model version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    task: str
    inputs: list[InputSpec]
    outputs: list[str]
    classes: list[str]
    training_data: TrainingData
    metrics: dict[str, float] = Field(description="held-out metrics, e.g. cpm")
    sha256: dict[str, str] = Field(description="file name -> sha256 hex of each ONNX file")
    reproduce: str = Field(description="the exact command that rebuilds this model")
    statement: str = SYNTHETIC_STATEMENT
    opset: int = 17
    parity_max_abs_error: float | None = None
    fp16_max_abs_error: float | None = None
    operating_threshold: float = 0.5

    def markdown(self) -> str:
        """The human version written to ``CARD.md``."""
        lines = [
            f"# {self.name} {self.version}",
            "",
            f"**{self.statement}**",
            "",
            f"Task: {self.task}",
            "",
            "## Inputs",
        ]
        for spec in self.inputs:
            lines.append(
                f"- `{spec.name}` shape {spec.shape}, spacing {spec.spacing_mm} mm, "
                f"{spec.intensity}"
            )
        lines += ["", "## Outputs", *[f"- `{o}`" for o in self.outputs]]
        lines += ["", f"Classes: {', '.join(self.classes)}", ""]
        td = self.training_data
        lines += [
            "## Training data",
            f"- source: {td.source}, config `{td.config}`",
            f"- training seeds: {_seed_text(td.seeds)}",
            f"- held-out seeds (never trained on): {_seed_text(td.held_out_seeds)}",
        ]
        if td.notes:
            lines.append(f"- {td.notes}")
        lines += ["", "## Held-out metrics"]
        lines += [f"- {k}: {v:.4g}" for k, v in sorted(self.metrics.items())]
        lines += ["", f"Operating threshold: {self.operating_threshold}", "", "## Export"]
        lines.append(f"- ONNX opset {self.opset}")
        if self.parity_max_abs_error is not None:
            lines.append(
                f"- parity torch vs onnxruntime: max abs error {self.parity_max_abs_error:.2e}"
            )
        if self.fp16_max_abs_error is not None:
            lines.append(f"- fp16 variant vs fp32: max abs error {self.fp16_max_abs_error:.2e}")
        lines += ["", "## sha256"]
        lines += [f"- `{f}`: `{h}`" for f, h in sorted(self.sha256.items())]
        lines += ["", "## Reproduce", "", "```", self.reproduce, "```", ""]
        return "\n".join(lines)


def _seed_text(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 3:
        return f"{seeds[0]}..{seeds[-1]} ({len(seeds)})"
    return ", ".join(str(s) for s in seeds)
