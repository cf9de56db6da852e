"""Slices of a stored series for the web viewer: layout, decoding, windowing, PNG.

A series is laid out once (header pass, no pixel data) and each slice is decoded when
first asked for; both are kept in a memory-bounded LRU so scrolling back and forth costs
one window + PNG encode per slice. Layouts:

- ``volume``: cross-sections sorted along the slice normal exactly as the analysis sorts
  them (:func:`inference.volume.plan_geometry`), duplicates dropped. Acquired slices are
  shown as they are: no tilt correction or gap interpolation, so a slice index is an
  instance the radiologist can cite.
- ``projection``: a radiograph (DX/CR/MG, or one frame without a position); finding
  points are in-plane mm per :mod:`inference.dr.findings`, so the pixel size comes from
  :func:`inference.dr.image.pixel_geometry`.
- ``stack``: images whose geometry the analysis refuses (too few slices, mixed planes,
  missing position): shown in Instance Number order, with the reason as a note.

Grayscale pipeline (PS3.3 C.11): Modality LUT (Rescale Slope/Intercept, or the Modality
LUT Sequence) to HU, a linear window (C.11.2.1.2.1), then MONOCHROME1 inverted on output
(C.7.6.3.1.2: minimum pixel value white).
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array

from countyread.errors import InvalidInputError, NotAnalyzableError
from inference.dr.image import pixel_geometry
from inference.volume import SliceHeader, plan_geometry, read_headers

logger = logging.getLogger(__name__)

#: Window presets as (centre, width) in HU. Lung, mediastinum, bone and brain are the
#: customary CT display windows (e.g. Radiopaedia, "Windowing (CT)"); vessel is our CTA
#: reading window: lumen at 200-400 HU bright, calcium still separable.
PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "vessel": (150.0, 600.0),
}
PROJECTION_MODALITIES = frozenset({"DX", "CR", "MG", "RF", "XA", "PX"})
MAX_SLICE_PIXELS = 40_000_000  # refuse absurd matrices before decoding one


@dataclass(frozen=True, slots=True)
class SliceRef:
    """Where one displayed image lives and where it sits in the patient."""

    path: Path
    frame: int | None
    sop_instance_uid: str
    instance_number: int
    position: tuple[float, float, float] | None
    # Enhanced multi-frame keeps the rescale per frame; None: the dataset's Modality LUT.
    rescale: tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class SeriesLayout:
    """Geometry of a series as the viewer shows it (index = display order)."""

    kind: Literal["volume", "projection", "stack"]
    rows: int
    columns: int
    spacing: tuple[float, float] | None  # (row, column) mm
    orientation: tuple[float, ...] | None  # row direction, column direction (LPS)
    slices: tuple[SliceRef, ...]
    notes: tuple[str, ...]

    @property
    def affine(self) -> npt.NDArray[np.float64] | None:
        """(column, row, slice, 1) -> LPS for a volume, as :class:`countyread.domain.Volume`;
        the per-slice positions stay authoritative where spacing is uneven."""
        if self.kind != "volume" or self.spacing is None or self.orientation is None:
            return None
        first, last = self.slices[0].position, self.slices[-1].position
        if first is None or last is None:
            return None
        row_dir, col_dir = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        normal = np.cross(row_dir, col_dir)
        n = len(self.slices)
        step = float(np.dot(normal, np.subtract(last, first))) / (n - 1) if n > 1 else 1.0
        out = np.eye(4)
        out[:3, 0] = row_dir * self.spacing[1]
        out[:3, 1] = col_dir * self.spacing[0]
        out[:3, 2] = normal * step
        out[:3, 3] = first
        return out


@dataclass(frozen=True, slots=True)
class SlicePixels:
    """One decoded image: Modality-LUT values (HU for CT) and how to display it."""

    values: npt.NDArray[Any]
    invert: bool  # MONOCHROME1, or Presentation LUT Shape INVERSE
    window: tuple[float, float] | None  # the instance's own Window Center/Width

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


def _ref(h: SliceHeader) -> SliceRef:
    rescale = (h.slope, h.intercept) if h.frame is not None else None
    return SliceRef(h.path, h.frame, h.sop_instance_uid, h.instance_number, h.position,
                    rescale)


def _plain_refs(paths: Sequence[Path]) -> tuple[list[SliceRef], Dataset | None]:
    """Every frame of every readable file, in Instance Number order (no geometry checks)."""
    refs: list[SliceRef] = []
    first: Dataset | None = None
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types on corrupt input
            logger.warning("unreadable instance skipped",
                           extra={"file": path.name, "error": type(exc).__name__})
            continue
        if "Rows" not in ds or "Columns" not in ds:
            continue  # no image in it (SR, KOS, presentation state)
        try:
            pos = ds.get("ImagePositionPatient")
            position = (tuple(float(v) for v in pos) if pos is not None and len(pos) == 3
                        else None)
            frames = int(ds.get("NumberOfFrames") or 1)
            number = int(ds.get("InstanceNumber") or 0)
            sop = str(ds.SOPInstanceUID)
        except (AttributeError, TypeError, ValueError):  # malformed DS/IS/UI values
            logger.warning("instance with malformed headers skipped", extra={"file": path.name})
            continue
        first = first or ds
        for f in range(frames):
            refs.append(SliceRef(path, f if frames > 1 else None, sop, number,
                                 position if frames == 1 else None, None))  # type: ignore[arg-type]
    refs.sort(key=lambda r: (r.instance_number, r.sop_instance_uid, r.frame or 0))
    return refs, first


def plan_layout(paths: Sequence[Path], modality: str | None) -> SeriesLayout:
    """Header pass: how the series' images are ordered and placed (no pixel data read)."""
    notes: list[str] = []
    if (modality or "").upper() not in PROJECTION_MODALITIES:
        try:
            headers, _thickness = read_headers(list(paths))
            group, _dist, plan_notes = plan_geometry(headers)
            h = group[0]
            return SeriesLayout("volume", h.shape[0], h.shape[1], h.spacing, h.orientation,
                                tuple(_ref(g) for g in group), tuple(plan_notes))
        except NotAnalyzableError as exc:
            notes.append(f"shown in Instance Number order: {exc}")
        except (AttributeError, TypeError, ValueError) as exc:  # malformed header values
            notes.append(f"shown in Instance Number order: unreadable geometry "
                         f"({type(exc).__name__})")
    refs, first = _plain_refs(paths)
    if not refs or first is None:
        raise NotAnalyzableError("no displayable images in this series")
    projection = (modality or "").upper() in PROJECTION_MODALITIES or (
        len(refs) == 1 and refs[0].position is None)
    if projection:
        geo = pixel_geometry(first)
        return SeriesLayout("projection", int(first.Rows), int(first.Columns),
                            geo.spacing_mm, None, tuple(refs[:1]), tuple(notes))
    ori = first.get("ImageOrientationPatient")
    spacing = first.get("PixelSpacing")
    return SeriesLayout(
        "stack", int(first.Rows), int(first.Columns),
        (float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2
        else None,
        tuple(float(v) for v in ori) if ori is not None and len(ori) == 6 else None,
        tuple(refs), tuple(notes))


def _first(value: Any) -> float | None:
    """First value of a possibly multi-valued DS (Window Center may hold several)."""
    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str)
                     else value)
    except (TypeError, ValueError, IndexError):
        return None


def decode_slice(ref: SliceRef) -> SlicePixels:
    """Decode one image and apply its Modality LUT; int16 where the values fit."""
    ds: Dataset
    try:
        if ref.frame is None:
            ds = pydicom.dcmread(ref.path)
            rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
            if rows * cols > MAX_SLICE_PIXELS:
                raise NotAnalyzableError(f"image matrix {rows}x{cols} is too large to show")
            raw = ds.pixel_array
            if raw.ndim == 3 and str(ds.get("PhotometricInterpretation", "")).startswith("MONO"):
                raw = raw[0]
        else:
            ds = Dataset()
            raw = pixel_array(ref.path, index=ref.frame, ds_out=ds)
    except NotAnalyzableError:
        raise
    except Exception as exc:  # decoders raise many types; the reason reaches the page
        raise NotAnalyzableError(f"pixel data cannot be decoded: {type(exc).__name__}") from exc
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").upper()
    if raw.size == 0:
        raise NotAnalyzableError("the image has no pixels")
    if raw.ndim != 2:
        raise NotAnalyzableError(f"photometric interpretation {photometric} is not grayscale")
    if ref.rescale is not None:
        slope, intercept = ref.rescale
        values = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    else:
        values = apply_modality_lut(raw, ds)
    if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
        values = values.astype(np.int32)
    if values.dtype.kind in "iu" and values.min() >= -32768 and values.max() <= 32767:
        values = values.astype(np.int16)
    else:
        values = values.astype(np.float32)
    lut_shape = str(ds.get("PresentationLUTShape") or "").upper()
    invert = photometric == "MONOCHROME1" or lut_shape == "INVERSE"
    c, w = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    window = (c, w) if c is not None and w is not None and w >= 1 else None
    return SlicePixels(np.ascontiguousarray(values), invert, window)


def resolve_window(pixels: SlicePixels, preset: str, wc: float | None,
                   ww: float | None) -> tuple[float, float]:
    """(centre, width): explicit wc/ww, else the preset, else (auto) the instance's own
    window, else the 1st-99th percentile of the image."""
    if wc is not None and ww is not None:
        return wc, ww
    if wc is not None or ww is not None:
        raise InvalidInputError("give both wc and ww, or neither")
    if preset in PRESETS:
        return PRESETS[preset]
    if preset != "auto":
        raise InvalidInputError(f"unknown window {preset!r}")
    if pixels.window is not None:
        return pixels.window
    lo, hi = np.percentile(pixels.values[::4, ::4], (1.0, 99.0))
    return float(lo + hi) / 2.0, max(float(hi - lo), 1.0)


def apply_window(values: npt.NDArray[Any], center: float, width: float,
                 invert: bool = False) -> npt.NDArray[np.uint8]:
    """PS3.3 C.11.2.1.2.1 linear window to 0..255, inverted for MONOCHROME1."""
    if width < 1:
        raise InvalidInputError("window width must be at least 1")
    scale = np.float32(255.0 / (width - 1.0)) if width > 1 else np.float32(255.0)
    offset = np.float32((center - 0.5) - (width - 1.0) / 2.0)
    out = (values.astype(np.float32) - offset) * scale
    np.clip(out, 0.0, 255.0, out=out)
    u8 = np.rint(out).astype(np.uint8)
    return np.subtract(np.uint8(255), u8) if invert else u8


def encode_png(u8: npt.NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    # level 1: a 512x512 slice encodes in a few ms; higher levels save little on CT noise
    Image.fromarray(u8, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


LayoutKey = tuple[str, int, str]  # series UID, instance count, last arrival (new data, new key)


class SeriesCache:
    """LRU of series layouts and decoded slices, bounded by the bytes of pixel data held.

    Thread-safe (FastAPI runs sync endpoints on a thread pool). Loads run outside the
    lock: two first requests for one slice may both decode it, which costs time, not
    correctness.
    """

    def __init__(self, max_bytes: int = 768 * 2**20, max_layouts: int = 64,
                 max_png_bytes: int = 128 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.max_layouts = max_layouts
        self.max_png_bytes = max_png_bytes
        self._layouts: OrderedDict[LayoutKey, SeriesLayout] = OrderedDict()
        self._pixels: OrderedDict[tuple[LayoutKey, int], SlicePixels] = OrderedDict()
        # PNG encoding costs more than windowing (~15-25 ms for a noisy 512^2 slice),
        # so the encoded images of recent (slice, window) pairs are kept too.
        self._pngs: OrderedDict[tuple[LayoutKey, int, float, float], bytes] = OrderedDict()
        self._bytes = 0
        self._png_bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def layout(self, key: LayoutKey, load: Callable[[], SeriesLayout]) -> SeriesLayout:
        with self._lock:
            hit = self._layouts.get(key)
            if hit is not None:
                self._layouts.move_to_end(key)
                return hit
        built = load()
        with self._lock:
            self._layouts[key] = built
            self._layouts.move_to_end(key)
            while len(self._layouts) > self.max_layouts:
                old, _ = self._layouts.popitem(last=False)
                self._drop_series(old)
        return built

    def pixels(self, key: LayoutKey, index: int, ref: SliceRef) -> SlicePixels:
        k = (key, index)
        with self._lock:
            hit = self._pixels.get(k)
            if hit is not None:
                self._pixels.move_to_end(k)
                return hit
        px = decode_slice(ref)
        with self._lock:
            if k not in self._pixels and px.nbytes <= self.max_bytes:
                self._pixels[k] = px
                self._bytes += px.nbytes
                while self._bytes > self.max_bytes:
                    _, old = self._pixels.popitem(last=False)
                    self._bytes -= old.nbytes
        return px

    def png(self, key: LayoutKey, index: int, ref: SliceRef, preset: str, wc: float | None,
            ww: float | None) -> tuple[bytes, tuple[float, float]]:
        """The slice windowed and encoded, and the (centre, width) used."""
        px = self.pixels(key, index, ref)
        centre, width = resolve_window(px, preset, wc, ww)
        k = (key, index, centre, width)
        with self._lock:
            hit = self._pngs.get(k)
            if hit is not None:
                self._pngs.move_to_end(k)
                return hit, (centre, width)
        data = encode_png(apply_window(px.values, centre, width, px.invert))
        with self._lock:
            if k not in self._pngs and len(data) <= self.max_png_bytes:
                self._pngs[k] = data
                self._png_bytes += len(data)
                while self._png_bytes > self.max_png_bytes:
                    _, old = self._pngs.popitem(last=False)
                    self._png_bytes -= len(old)
        return data, (centre, width)

    def _drop_series(self, key: LayoutKey) -> None:
        for k in [k for k in self._pixels if k[0] == key]:
            self._bytes -= self._pixels.pop(k).nbytes
        for p in [p for p in self._pngs if p[0] == key]:
            self._png_bytes -= len(self._pngs.pop(p))
