"""Load ``name@version`` from a models directory and check every ONNX file's sha256.

Layout: ``<models_dir>/<name>/<version>/model.onnx`` (+ optional ``model.fp16.onnx``),
``card.json`` (a :class:`models.card.ModelCard`) and ``CARD.md``. The default directory
is the shipped ``models/`` package folder; ``Settings.models_dir`` overrides it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from countyread.domain import ModelRef
from countyread.errors import ModelError
from models.card import ModelCard

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent
FP32_FILE = "model.onnx"
FP16_FILE = "model.fp16.onnx"


@dataclass(frozen=True, slots=True)
class ModelArtifact:
    """A verified model version on disk."""

    card: ModelCard
    directory: Path

    @property
    def onnx_path(self) -> Path:
        return self.directory / FP32_FILE

    @property
    def fp16_path(self) -> Path | None:
        path = self.directory / FP16_FILE
        return path if path.is_file() else None

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.card.name, self.card.version, self.card.sha256[FP32_FILE])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``'ct_nodule@1.0.0'`` -> ``('ct_nodule', '1.0.0')``; no ``@`` means the latest."""
    name, _, version = spec.partition("@")
    if not name or "/" in name or ".." in name or "/" in version or ".." in version:
        raise ModelError(f"bad model spec {spec!r}: expected name[@version]")
    return name, version or None


def _version_key(version: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


class ModelRegistry:
    """Finds and verifies model artifacts; cheap to create, verifies on each load."""

    def __init__(self, models_dir: Path | None = None) -> None:
        self.root = (models_dir or SHIPPED_DIR).resolve()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*/card.json"))
        )

    def versions(self, name: str) -> list[str]:
        base = self.root / name
        found = [p.name for p in base.glob("*") if (p / "card.json").is_file()]
        return sorted(found, key=_version_key)

    def read_card(self, name: str, version: str) -> ModelCard:
        path = self.root / name / version / "card.json"
        try:
            card = ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"model {name}@{version} not found under {self.root}") from None
        except ValidationError as exc:
            raise ModelError(f"model card {path} is invalid: {exc.error_count()} errors") from None
        if (card.name, card.version) != (name, version):
            raise ModelError(f"model card {path} names {card.name}@{card.version}")
        return card

    def load(self, spec: str) -> ModelArtifact:
        """Resolve ``name[@version]`` and verify the sha256 of every ONNX file it lists."""
        name, version = parse_spec(spec)
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise ModelError(f"model {name!r} not found under {self.root}")
            version = versions[-1]
        card = self.read_card(name, version)
        directory = self.root / name / version
        self.verify(card, directory)
        logger.info("model verified", extra={"model": f"{name}@{version}"})
        return ModelArtifact(card, directory)

    @staticmethod
    def verify(card: ModelCard, directory: Path) -> None:
        if FP32_FILE not in card.sha256:
            raise ModelError(f"model card of {card.name}@{card.version} lists no {FP32_FILE}")
        for file_name, expected in card.sha256.items():
            path = directory / file_name
            if not path.is_file():
                raise ModelError(f"{card.name}@{card.version}: {file_name} is missing")
            actual = sha256_file(path)
            if actual != expected:
                raise ModelError(
                    f"{card.name}@{card.version}: sha256 mismatch for {file_name} "
                    f"(card {expected[:12]}…, file {actual[:12]}…)"
                )
