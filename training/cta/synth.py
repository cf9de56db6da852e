"""Small synthetic head/neck CTAs for training the vessel model and testing the pipeline.

A stand-in for the project phantom factory (``training.phantoms.cta``) with the same
ground-truth shape: named vessels as centreline points (LPS mm) with a radius per point,
stenoses, occlusions, calcified plaques and the contrast phase. Bone touches the vessels
where it does in patients (transverse foramina around the vertebral arteries, the
carotid canal in the skull base, the skull around the circle of Willis), which is what
the segmentation model has to learn to separate.

Geometry is LPS (PS3.3 C.7.6.2.1.1): +x patient left, +y posterior, +z head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

from countyread.domain import Volume

F64 = npt.NDArray[np.float64]

VESSELS = (
    "CCA_L",
    "CCA_R",
    "ICA_L",
    "ICA_R",
    "ECA_L",
    "ECA_R",
    "VA_L",
    "VA_R",
    "BA",
    "M1_L",
    "M1_R",
    "A1_L",
    "A1_R",
    "P1_L",
    "P1_R",
)
LABEL = {name: i + 1 for i, name in enumerate(VESSELS)}


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Grid and content options; the defaults make a small, fast case."""

    spacing: tuple[float, float, float] = (1.0, 0.8, 0.8)  # slice, row, column mm
    half_width_mm: float = 66.0
    z_range_mm: tuple[float, float] = (-5.0, 190.0)
    phase: str = "arterial"  # arterial | venous | noncontrast
    n_stenoses: int = 2
    occlusion: bool = False
    noise_hu: float = 14.0
    blur_mm: float = 0.45


@dataclass(frozen=True, slots=True)
class Stenosis:
    vessel: str
    center_lps: tuple[float, float, float]
    percent: float  # diameter reduction against the local normal calibre
    length_mm: float
    calcified: bool


@dataclass(frozen=True, slots=True)
class Occlusion:
    vessel: str
    start_lps: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class SynthCTA:
    volume: Volume  # int16 HU
    labels: npt.NDArray[np.uint8]  # LABEL[name] per voxel, 0 elsewhere
    centerlines: dict[str, F64]  # name -> N x 3 LPS mm (only the drawn, patent part)
    radii: dict[str, F64]  # name -> N mm (after stenoses)
    stenoses: tuple[Stenosis, ...] = ()
    occlusions: tuple[Occlusion, ...] = ()
    phase: str = "arterial"
    lumen_hu: float = 0.0
    bone_mask: npt.NDArray[np.bool_] | None = field(default=None)


def _curve(points: list[tuple[float, float, float]], step: float = 0.25) -> F64:
    """A smooth polyline through control points (Catmull-Rom), resampled every ``step`` mm."""
    p = np.asarray(points, dtype=np.float64)
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    dense = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        t = np.linspace(0, 1, 40, endpoint=False)[:, None]
        dense.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    dense.append(p[-1:])
    c = np.vstack(dense)
    seg = np.linalg.norm(np.diff(c, axis=0), axis=1)
    s = np.r_[0, np.cumsum(seg)]
    n = max(2, int(s[-1] / step) + 1)
    target = np.linspace(0, s[-1], n)
    return np.c_[[np.interp(target, s, c[:, i]) for i in range(3)]].T


def _anatomy(rng: np.random.Generator) -> dict[str, tuple[F64, F64]]:
    """Named vessel centrelines and radii with per-case jitter (tortuosity, calibre)."""
    j = lambda s=2.0: rng.normal(0, s)  # noqa: E731
    out: dict[str, tuple[F64, F64]] = {}
    rc, ri, re, rv = (
        rng.uniform(3.0, 3.8),
        rng.uniform(2.2, 2.8),
        rng.uniform(1.5, 2.0),
        rng.uniform(1.5, 2.0),
    )
    for side, sx in (("L", 1.0), ("R", -1.0)):
        bif = (sx * (26 + j()), -6 + j(), 68 + j(4))
        term = (sx * (17 + j(1)), -6 + j(1), 162 + j(2))
        out[f"CCA_{side}"] = (
            _curve([(sx * 22, -12, -5), (sx * (24 + j()), -9, 30), bif]),
            np.array([rc]),
        )
        ica = _curve(
            [
                bif,
                (sx * (27 + j()), 2 + j(), 95),
                (sx * (24 + j()), 4 + j(), 118),
                (sx * 21, 0, 133),
                (sx * (20 + j(1)), -10, 148),
                term,
            ]
        )
        out[f"ICA_{side}"] = (ica, np.array([ri]))
        eca_end = (sx * (36 + j()), -28 + j(), 112 + j(4))
        out[f"ECA_{side}"] = (_curve([bif, (sx * 31, -16, 88), eca_end]), np.array([re]))
        out[f"M1_{side}"] = (
            _curve([term, (sx * 30, -7 + j(1), 165), (sx * 44, -5, 168 + j(1))]),
            np.array([1.4]),
        )
        out[f"A1_{side}"] = (
            _curve([term, (sx * 10, -16, 166), (sx * 2.5, -24, 168)]),
            np.array([1.15]),
        )
        out[f"P1_{side}"] = (
            _curve([(0, 14, 160), (sx * 10, 16, 161), (sx * 20, 24, 163)]),
            np.array([1.2]),
        )
        out[f"VA_{side}"] = (
            _curve(
                [
                    (sx * 16, 22, -5),
                    (sx * 15 + j(0.5), 22, 40),
                    (sx * 14, 22, 112),
                    (sx * 16, 26, 124),
                    (sx * 6, 30, 136),
                    (0.0, 28, 140),
                ]
            ),
            np.array([rv]),
        )
    out["BA"] = (
        _curve([(0.0, 28, 140), (0.0, 22, 150), (0.0, 14, 160)]),
        np.array([rng.uniform(1.5, 1.9)]),
    )
    return out


def _bone(z: F64, y: F64, x: F64, anatomy: dict[str, tuple[F64, F64]]) -> npt.NDArray[np.float32]:
    """Bone HU (0 where no bone) on a broadcast grid chunk."""
    hu = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=np.float32)
    neck = z < 128
    # vertebral bodies (cancellous core, cortical shell) with discs every 18 mm
    rb = np.hypot(x, y - 12)
    disc = np.mod(z, 18.0) < 3.0
    body = neck & (rb < 9.5) & ~disc
    hu = np.where(body, np.where(rb > 8.0, 850.0, 320.0), hu)
    # posterior arch around the canal
    rc = np.hypot(x, y - 32)
    arch = neck & (rc > 8) & (rc < 12.5) & ~disc
    hu = np.where(arch, 700.0, hu)
    # transverse processes with foramina around the vertebral arteries
    lat = np.abs(x)
    tp = (
        neck
        & (lat > 9)
        & (lat < 22)
        & (np.abs(y - 22) < 5.5)
        & (np.mod(z, 18.0) > 7)
        & (np.mod(z, 18.0) < 14)
    )
    hu = np.where(tp, 650.0, hu)
    # skull base slab (clivus / petrous bone) between z 128 and 140
    base = (z >= 126) & (z < 140) & (lat < 52) & (y > -20) & (y < 42)
    hu = np.where(base, 750.0, hu)
    # skull: a 6 mm shell
    rs = np.sqrt(x**2 / 1.0 + (y - 5) ** 2 / 1.15 + (z - 160) ** 2 / 1.2)
    skull = (z > 120) & (rs > 55) & (rs < 61)
    hu = np.where(skull, 1100.0, hu)
    return hu


def _body(z: F64, y: F64, x: F64) -> npt.NDArray[np.bool_]:
    neck = (z < 125) & ((x / 58) ** 2 + ((y - 5) / 52) ** 2 < 1)
    head = (z >= 110) & (x**2 + (y - 5) ** 2 / 1.15 + (z - 160) ** 2 / 1.2 < 64**2)
    return np.asarray(neck | head)


def make_synthetic_cta(seed: int, config: SynthConfig | None = None) -> SynthCTA:
    """Deterministic head/neck CTA phantom with truth; see :class:`SynthConfig`."""
    cfg = config or SynthConfig()
    rng = np.random.default_rng(seed)
    anatomy = _anatomy(rng)
    # stenoses on distinct vessels
    candidates = ["ICA_L", "ICA_R", "CCA_L", "CCA_R", "VA_L", "VA_R", "BA", "M1_L", "M1_R", "ECA_L"]
    chosen = list(rng.choice(candidates, size=min(cfg.n_stenoses, len(candidates)), replace=False))
    occluded: str | None = None
    if cfg.occlusion:
        occluded = str(rng.choice(["ICA_L", "ICA_R", "VA_L", "M1_R"]))
        chosen = [c for c in chosen if c != occluded]
    radii: dict[str, F64] = {}
    centerlines: dict[str, F64] = {}
    stenoses: list[Stenosis] = []
    occlusions: list[Occlusion] = []
    for name, (pts, r) in anatomy.items():
        n = len(pts)
        s = np.r_[0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
        rad = np.full(n, float(r[0]))
        if name.startswith(("M1", "A1", "P1", "ECA")):
            rad *= np.linspace(1.0, 0.85, n)
        if name in chosen:
            pct = float(rng.choice([rng.uniform(25, 48), rng.uniform(52, 68), rng.uniform(72, 92)]))
            length = float(rng.uniform(4, 9))
            at = float(rng.uniform(0.3, 0.7) * s[-1])
            bump = np.clip(1 - np.abs(s - at) / (length / 2), 0, 1)
            bump = 0.5 - 0.5 * np.cos(np.pi * bump)
            rad = rad * (1 - pct / 100 * bump)
            k = int(np.argmin(np.abs(s - at)))
            calc = bool(rng.random() < 0.5)
            stenoses.append(Stenosis(name, tuple(pts[k]), pct, length, calc))  # type: ignore[arg-type]
        if name == occluded:
            at = float(rng.uniform(0.2, 0.4) * s[-1])
            keep = s < at
            k = int(np.argmax(~keep))
            occlusions.append(Occlusion(name, tuple(pts[k])))  # type: ignore[arg-type]
            pts, rad = pts[keep], rad[keep]
        centerlines[name] = pts
        radii[name] = rad

    dz, dy, dx = cfg.spacing
    hw = cfg.half_width_mm
    nz = int((cfg.z_range_mm[1] - cfg.z_range_mm[0]) / dz) + 1
    ny, nx = int(2 * hw / dy) + 1, int(2 * hw / dx) + 1
    origin = np.array([-hw, -hw, cfg.z_range_mm[0]])
    zc = origin[2] + dz * np.arange(nz)
    yc = origin[1] + dy * np.arange(ny)
    xc = origin[0] + dx * np.arange(nx)

    if cfg.phase == "arterial":
        lumen = float(rng.uniform(280, 480))
        vein = 80.0
    elif cfg.phase == "venous":
        lumen, vein = float(rng.uniform(130, 170)), float(rng.uniform(170, 210))
    else:
        lumen, vein = 45.0, 45.0

    occ = np.zeros((nz, ny, nx), dtype=np.float32)
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    vox = np.array([dx, dy, dz])
    for name, pts in centerlines.items():
        if len(pts) < 2:
            continue
        rad = radii[name]
        tree = cKDTree(pts)
        lo = np.floor((pts.min(0) - rad.max() - 2 - origin) / vox).astype(int)
        hi = np.ceil((pts.max(0) + rad.max() + 2 - origin) / vox).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [nx, ny, nz])
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.meshgrid(
            zc[lo[2] : hi[2]], yc[lo[1] : hi[1]], xc[lo[0] : hi[0]], indexing="ij"
        )
        q = np.c_[xx.ravel(), yy.ravel(), zz.ravel()]
        d, i = tree.query(q, distance_upper_bound=float(rad.max() + 2))
        ok = np.isfinite(d)
        depth = np.full(len(q), -10.0)
        depth[ok] = rad[i[ok]] - d[ok]
        o = np.clip(depth / min(dx, dy, dz) + 0.5, 0, 1).reshape(zz.shape).astype(np.float32)
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        lab = labels[sl]
        lab[(o >= 0.5) & (lab == 0)] = LABEL[name]
        np.maximum(occ[sl], o, out=occ[sl])

    hu = np.empty((nz, ny, nx), dtype=np.float32)
    bone = np.zeros((nz, ny, nx), dtype=bool)
    # calcified plaques: small bright blobs at the vessel wall beside the narrowing
    plaque_pts = []
    for st in stenoses:
        if st.calcified:
            pts, rad = centerlines[st.vessel], radii[st.vessel]
            k = int(np.argmin(np.linalg.norm(pts - np.asarray(st.center_lps), axis=1)))
            t = pts[min(k + 2, len(pts) - 1)] - pts[max(k - 2, 0)]
            t /= np.linalg.norm(t) + 1e-9
            nrm = np.cross(t, [0.3, 0.9, 0.1])
            nrm /= np.linalg.norm(nrm)
            r0 = anatomy[st.vessel][1][0]
            plaque_pts.append(pts[k] + nrm * (r0 * 0.9 + 0.6))
    yy2, xx2 = np.meshgrid(yc, xc, indexing="ij")
    for k0 in range(0, nz, 32):
        k1 = min(nz, k0 + 32)
        z3 = zc[k0:k1, None, None]
        b = _bone(z3, yy2[None], xx2[None], anatomy)
        body = _body(z3, yy2[None], xx2[None])
        base = np.where(body, 40.0, -1000.0).astype(np.float32)
        base = np.where(b > 0, b, base)
        bone[k0:k1] = b > 0
        hu[k0:k1] = base
    # jugular veins (bright in venous phase: the trap for a contrast check)
    for sx in (1.0, -1.0):
        r = np.hypot(xx2 - sx * 38, yy2 - 2)
        vm = (r < 5.0)[None] & (zc[:, None, None] < 120)
        hu[vm & ~bone] = vein
    # vessels carve through bone (foramina, canals): the lumen replaces the bone
    hu = hu * (1 - occ) + lumen * occ
    for p in plaque_pts:
        # only a small box around each plaque (full-volume distances cost gigabytes)
        ks = (np.abs(zc - p[2]) < 2.0).nonzero()[0]
        js = (np.abs(yc - p[1]) < 2.0).nonzero()[0]
        is_ = (np.abs(xc - p[0]) < 2.0).nonzero()[0]
        if not (len(ks) and len(js) and len(is_)):
            continue
        d2 = (
            (zc[ks][:, None, None] - p[2]) ** 2
            + (yc[js][None, :, None] - p[1]) ** 2
            + (xc[is_][None, None, :] - p[0]) ** 2
        )
        box = hu[ks[0] : ks[-1] + 1, js[0] : js[-1] + 1, is_[0] : is_[-1] + 1]
        box[d2 < 1.4**2] = 950.0
    if cfg.blur_mm > 0:
        hu = ndimage.gaussian_filter(
            hu, sigma=[cfg.blur_mm / s for s in cfg.spacing], mode="nearest"
        )
    hu += rng.normal(0, cfg.noise_hu, hu.shape).astype(np.float32)
    affine = np.eye(4)
    affine[0, 0], affine[1, 1], affine[2, 2] = dx, dy, dz
    affine[:3, 3] = origin
    vol = Volume(np.clip(np.round(hu), -1024, 3071).astype(np.int16), affine)
    return SynthCTA(
        vol, labels, centerlines, radii, tuple(stenoses), tuple(occlusions), cfg.phase, lumen, bone
    )
