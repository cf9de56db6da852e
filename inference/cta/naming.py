"""Vessel naming by anatomy: side from LPS x, level from z, topology from the skeleton tree.

Ends of the skeleton are sorted into caudal ends (origins of the common carotid and
vertebral arteries, anterior and posterior respectively), cranial ends (circle of
Willis: M1 lateral, A1 medial-anterior, P1 posterior) and the rest (external carotid
branches). Named vessels are then tree paths between those ends, cut at the junctions
where their paths meet. A vessel whose parent is present but which cannot be traced is
reported as occluded where it should leave its parent ("a named vessel that stops").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.cta.centerline import Skeleton, degree

F64 = npt.NDArray[np.float64]
SIDES = (("L", 1.0), ("R", -1.0))  # LPS: +x is the patient's left
CAUDAL_BAND_MM = 30.0
CRANIAL_BAND_MM = 30.0
MIN_LENGTH_MM = {"M1": 12.0, "A1": 8.0, "P1": 8.0}


@dataclass(frozen=True, slots=True)
class NamedVessel:
    name: str
    nodes: tuple[int, ...]  # skeleton nodes, proximal to distal


@dataclass(frozen=True, slots=True)
class OcclusionCall:
    vessel: str
    node: int  # last patent skeleton node (or the parent junction)
    reason: str


@dataclass(frozen=True, slots=True)
class Naming:
    vessels: dict[str, NamedVessel]
    occlusions: tuple[OcclusionCall, ...]


def _first_common(a: list[int], b: list[int]) -> int | None:
    """First node of ``a`` that is also on ``b`` (paths given from their distal ends)."""
    on_b = set(b)
    for n in a:
        if n in on_b:
            return n
    return None


def _segment(path: list[int], start: int, stop: int) -> tuple[int, ...]:
    i, j = path.index(start), path.index(stop)
    return tuple(path[i : j + 1]) if i <= j else tuple(path[j : i + 1][::-1])


def _length(lps: F64, nodes: tuple[int, ...] | list[int]) -> float:
    if len(nodes) < 2:
        return 0.0
    p = lps[list(nodes)]
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def name_vessels(sk: Skeleton, lps: F64) -> Naming:
    """Name the skeleton's vessels; ``lps`` is the LPS position of every skeleton node."""
    if len(sk.parent) == 0:
        return Naming({}, ())
    deg = degree(sk)
    ends = [int(e) for e in np.flatnonzero(deg <= 1)]
    z = lps[:, 2]
    zlo, zhi = float(z.min()), float(z.max())
    caudal = [e for e in ends if z[e] < zlo + CAUDAL_BAND_MM]
    cranial = [e for e in ends if z[e] > zhi - CRANIAL_BAND_MM and e not in caudal]
    middle = [e for e in ends if e not in caudal and e not in cranial]

    # caudal ends: per side, the most anterior is the CCA, the most posterior the VA
    origin: dict[str, int] = {}
    for side, sx in SIDES:
        mine = sorted((e for e in caudal if lps[e, 0] * sx > 0), key=lambda e: lps[e, 1])
        if len(mine) >= 2 and lps[mine[-1], 1] - lps[mine[0], 1] > 12.0:
            origin[f"CCA_{side}"], origin[f"VA_{side}"] = mine[0], mine[-1]
        elif mine:
            others = [lps[e, 1] for e in caudal]
            key = "CCA" if lps[mine[0], 1] <= float(np.mean(others)) else "VA"
            origin[f"{key}_{side}"] = mine[0]
    ys_cca = [lps[v, 1] for k, v in origin.items() if k.startswith("CCA")]
    ys_va = [lps[v, 1] for k, v in origin.items() if k.startswith("VA")]
    y_split = (np.mean(ys_cca) + np.mean(ys_va)) / 2 if ys_cca and ys_va else 5.0

    top: dict[str, int] = {}
    for side, sx in SIDES:
        mine = [e for e in cranial if lps[e, 0] * sx > 0]
        post = [e for e in mine if lps[e, 1] > y_split]
        ant = [e for e in mine if lps[e, 1] <= y_split]
        if post:
            top[f"P1_{side}"] = max(post, key=lambda e: abs(lps[e, 0]))
        if ant:
            lateral = max(ant, key=lambda e: abs(lps[e, 0]))
            if abs(lps[lateral, 0]) > 25.0:
                top[f"M1_{side}"] = lateral
        # A1 ends may be joined across the midline (anterior communicating artery), so
        # look at every cranial node, not only the ends
        medial = np.flatnonzero(
            (z > zhi - CRANIAL_BAND_MM)
            & (lps[:, 0] * sx > 0)
            & (np.abs(lps[:, 0]) < 20.0)
            & (lps[:, 1] <= y_split)
        )
        if len(medial):
            top[f"A1_{side}"] = int(
                medial[np.argmin(lps[medial, 1] + 0.5 * np.abs(lps[medial, 0]))]
            )

    vessels: dict[str, NamedVessel] = {}
    occl: list[OcclusionCall] = []

    def add(name: str, nodes: tuple[int, ...]) -> None:
        if len(nodes) >= 2:
            vessels[name] = NamedVessel(name, nodes)

    for side, sx in SIDES:
        cca0 = origin.get(f"CCA_{side}")
        m1 = top.get(f"M1_{side}")
        a1 = top.get(f"A1_{side}")
        terminus = None
        if m1 is not None and a1 is not None:
            pm, pa = sk.path(m1, a1), None
            if pm is not None:
                pa = sk.path(a1, m1)
                chain_down = sk.path(m1, cca0) if cca0 is not None else None
                if chain_down is not None and pa is not None and cca0 is not None:
                    terminus = _first_common(sk.path(a1, cca0) or [], chain_down)
                else:
                    # no carotid below: the junction of M1 and A1 is the highest-degree
                    # node on their path
                    terminus = max(pm, key=lambda n: (deg[n], -abs(lps[n, 0])))
        eca_ends = [
            e
            for e in middle
            if lps[e, 0] * sx > 0 and cca0 is not None and sk.component[e] == sk.component[cca0]
        ]
        chain = sk.path(cca0, m1) if (cca0 is not None and m1 is not None) else None
        if chain is None and cca0 is not None and a1 is not None:
            chain = sk.path(cca0, a1)
            if chain is not None and terminus is None:
                terminus = a1
        if cca0 is not None and chain is not None:
            if terminus is None:
                terminus = chain[-1]
            eca_end = min(eca_ends, key=lambda e: lps[e, 1]) if eca_ends else None
            bif = None
            if eca_end is not None:
                bif = _first_common(sk.path(eca_end, cca0) or [], chain)
            if bif is None or bif == terminus:
                bif = chain[len(chain) // 3]
                occl.append(OcclusionCall(f"ECA_{side}", bif, "external carotid not traced"))
            add(f"CCA_{side}", _segment(chain, cca0, bif))
            add(f"ICA_{side}", _segment(chain, bif, terminus))
            if eca_end is not None:
                path = sk.path(bif, eca_end)
                if path is not None:
                    add(f"ECA_{side}", tuple(path))
        elif cca0 is not None:
            # the carotid does not reach the circle of Willis: ICA occluded
            branch_ends = sorted(eca_ends, key=lambda e: lps[e, 1])
            if len(branch_ends) >= 2:
                eca_end, stump = branch_ends[0], branch_ends[-1]
                path_e = sk.path(cca0, eca_end) or []
                path_s = sk.path(stump, cca0) or []
                bif = _first_common(path_s, path_e)
                if bif is not None:
                    add(f"CCA_{side}", _segment(path_e, cca0, bif))
                    add(f"ECA_{side}", _segment(path_e, bif, eca_end))
                    add(f"ICA_{side}", _segment(path_s[::-1], bif, stump))
                    occl.append(OcclusionCall(f"ICA_{side}", stump, "internal carotid stops"))
            elif branch_ends:
                path_e = sk.path(cca0, branch_ends[0]) or []
                add(f"CCA_{side}", tuple(path_e[: max(2, len(path_e) * 2 // 3)]))
                end = path_e[max(1, len(path_e) * 2 // 3) - 1]
                add(f"ECA_{side}", tuple(path_e[max(1, len(path_e) * 2 // 3) - 1 :]))
                occl.append(OcclusionCall(f"ICA_{side}", end, "internal carotid not traced"))
        if terminus is not None:
            for key, tip_end in ((f"M1_{side}", m1), (f"A1_{side}", a1)):
                if tip_end is None:
                    occl.append(
                        OcclusionCall(key, terminus, "not traced from the carotid terminus")
                    )
                    continue
                path = sk.path(terminus, tip_end)
                if path is not None:
                    add(key, tuple(path))

    # vertebrobasilar system
    p1l, p1r = top.get("P1_L"), top.get("P1_R")
    va = {s: origin.get(f"VA_{s}") for s, _ in SIDES}
    tip = None
    anchor = next((v for v in va.values() if v is not None), None)
    if p1l is not None and p1r is not None and sk.path(p1l, p1r) is not None:
        if anchor is not None and sk.path(p1l, anchor) is not None:
            tip = _first_common(sk.path(p1l, anchor) or [], sk.path(p1r, anchor) or [])
        else:
            pp = sk.path(p1l, p1r) or []
            tip = min(pp, key=lambda n: abs(lps[n, 0]))
    for side, _ in SIDES:
        p1_end = top.get(f"P1_{side}")
        if tip is not None and p1_end is not None:
            path = sk.path(tip, p1_end)
            if path is not None:
                add(f"P1_{side}", tuple(path))
    connected = {
        s: v
        for s, v in va.items()
        if v is not None and tip is not None and sk.path(v, tip) is not None
    }
    if tip is not None and connected:
        paths = {s: sk.path(tip, v) or [] for s, v in connected.items()}
        if len(paths) == 2:
            a, b = paths["L"], paths["R"]
            conf = next((n for n in a[::-1] if n in set(b)), a[0])
        else:
            (only,) = paths.values()
            conf = only[len(only) * 2 // 3]
        base_path = next(iter(paths.values()))
        add(
            "BA",
            _segment(base_path, conf, tip)[::-1]
            if False
            else tuple(reversed(_segment(base_path, tip, conf))),
        )
        for s, path in paths.items():
            add(f"VA_{s}", tuple(reversed(_segment(path, conf, path[-1]))))
        for s, v in va.items():
            if s in connected:
                continue
            if v is not None:
                far = max(
                    (e for e in ends if sk.component[e] == sk.component[v] and e != v),
                    key=lambda e: lps[e, 2],
                    default=None,
                )
                if far is not None:
                    add(f"VA_{s}", tuple(sk.path(v, far) or []))
                    occl.append(OcclusionCall(f"VA_{s}", far, "vertebral artery stops"))
            else:
                occl.append(OcclusionCall(f"VA_{s}", conf, "vertebral artery not traced"))

    for key, min_len in MIN_LENGTH_MM.items():
        for side, _ in SIDES:
            name = f"{key}_{side}"
            if name in vessels and _length(lps, vessels[name].nodes) < min_len:
                occl.append(OcclusionCall(name, vessels[name].nodes[-1], "stops early"))
    # a vessel reported occluded keeps its traced stump; drop duplicate calls
    seen: set[str] = set()
    unique = []
    for call in occl:
        if call.vessel not in seen:
            seen.add(call.vessel)
            unique.append(call)
    return Naming(vessels, tuple(unique))
