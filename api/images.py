"""Serving analysis PNGs without letting a request name a file outside the analysis."""

from __future__ import annotations

import re
from pathlib import Path

from countyread.errors import NotFoundError

# The worker names images with letters, digits, '_' and '-' and adds ".png"; anything
# else (slashes, "..", NUL) is refused before it touches the file system.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def analysis_image_names(artifacts_dir: str | None) -> list[str]:
    if not artifacts_dir:
        return []
    root = Path(artifacts_dir)
    if not root.is_dir():
        return []
    return sorted(p.stem for p in root.glob("*.png") if _NAME_RE.match(p.stem))


def resolve_image(artifacts_dir: str | None, name: str) -> Path:
    """The PNG ``name`` (with or without ``.png``) inside ``artifacts_dir``, validated."""
    stem = name[:-4] if name.endswith(".png") else name
    if not artifacts_dir or not _NAME_RE.match(stem):
        raise NotFoundError("image not found")
    root = Path(artifacts_dir).resolve()
    path = (root / f"{stem}.png").resolve()
    # resolve() follows symlinks: a link pointing out of the analysis folder is refused.
    if path.parent != root or not path.is_file():
        raise NotFoundError("image not found")
    return path
