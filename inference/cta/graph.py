"""The centreline graph: skeleton tree edges plus the loop closures the tree left open.

Skeletonisation returns a forest; the real vessel tree has loops (circle of Willis,
both vertebral arteries meeting at the basilar, both subclavians off the arch), which
the forest breaks where two growing fronts met, leaving an end facing another branch a
few millimetres away. Joining those ends back gives a graph on which shortest paths
between anatomical landmarks follow the vessels, whichever way the loops were broken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from inference.cta.centerline import TIP_COS, Skeleton, _branch_directions, _outward, degree

F64 = npt.NDArray[np.float64]
LOOP_REACH_MM = 5.0
LOCAL_HOPS = 12
GAP_REACH_MM = 12.0
#: An end's trunk direction runs from TRUNK_STEPS to TRUNK_SKIP nodes inside: the last
#: nodes of a common carotid cut by an 88 % stenosis curled 3 mm aside and faced away
#: from the other half (seed 610 of training.cta.diagnose).
TRUNK_SKIP = 3
TRUNK_STEPS = 10
#: A fragment cut off from the tree that holds the arch (a basilar artery whose
#: vertebral arteries the network lost in the skull base, an intracranial carotid lost
#: in the carotid canal) is joined from its lowest node to the nearest node of that tree
#: below it, within this reach and 60 degrees of straight down; a midline fragment (the
#: basilar, fed by both vertebral arteries) to the nearest node on each side.
RISE_REACH_MM = 50.0
RISE_MIN_MM = 5.0
RISE_NEAR_MM = 16.0
EDGE_MM = 10.0
MIDLINE_MM = 8.0


@dataclass(frozen=True, slots=True)
class VesselGraph:
    lps: F64  # N x 3
    matrix: csr_matrix  # symmetric, edge weight = length in mm
    degree: npt.NDArray[np.int64]
    #: edges (a, b), a < b, across lumen the mask lost: they lead the naming but carry
    #: no measurable lumen
    virtual: frozenset[tuple[int, int]] = frozenset()

    def neighbours(self, node: int) -> list[int]:
        row = self.matrix.indptr
        return [int(n) for n in self.matrix.indices[row[node] : row[node + 1]]]

    def without(self, removed: set[int] | list[int]) -> csr_matrix:
        keep = np.ones(self.matrix.shape[0])
        keep[list(removed)] = 0.0
        d = coo_matrix((keep, (np.arange(len(keep)), np.arange(len(keep))))).tocsr()
        return (d @ self.matrix @ d).tocsr()

    def shortest(self, a: int, b: int, matrix: csr_matrix | None = None) -> list[int] | None:
        m = self.matrix if matrix is None else matrix
        dist, pred = dijkstra(m, directed=False, indices=a, return_predecessors=True)
        if not np.isfinite(dist[b]):
            return None
        out = [b]
        while out[-1] != a:
            out.append(int(pred[out[-1]]))
        return out[::-1]

    def distances(
        self, a: int, matrix: csr_matrix | None = None
    ) -> tuple[F64, npt.NDArray[np.int32]]:
        m = self.matrix if matrix is None else matrix
        dist, pred = dijkstra(m, directed=False, indices=a, return_predecessors=True)
        return np.asarray(dist), np.asarray(pred)

    def components_without(self, removed: list[int]) -> npt.NDArray[np.int32]:
        _, labels = connected_components(self.without(removed), directed=False)
        return np.asarray(labels)


def build_graph(sk: Skeleton, lps: F64) -> VesselGraph:
    n = len(sk.parent)
    rows, cols, w = [], [], []
    for node, parent in enumerate(sk.parent):
        if parent >= 0:
            rows.append(node)
            cols.append(int(parent))
            w.append(float(np.linalg.norm(lps[node] - lps[parent])) or 1e-3)
    tree_deg = np.zeros(n, dtype=np.int64)
    for r, c in zip(rows, cols, strict=True):
        tree_deg[r] += 1
        tree_deg[c] += 1
    base = coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()
    base = (base + base.T).tocsr()
    if n:
        hops, _ = _hops_near_ends(base, tree_deg)
        kd = cKDTree(lps)
        for e, local in hops.items():
            reach = max(LOOP_REACH_MM, 2.5 * float(sk.radius[e]))
            cand = [c for c in kd.query_ball_point(lps[e], reach) if c != e and c not in local]
            if cand:
                c = min(cand, key=lambda k: float(np.linalg.norm(lps[k] - lps[e])))
                d = float(np.linalg.norm(lps[c] - lps[e])) or 1e-3
                rows += [e, c]
                cols += [c, e]
                w += [d, d]
        # ends facing each other across a longer gap inside one component: a lumen too
        # thin for the mask (severe stenosis) on a vessel that is also fed from above
        ends = np.flatnonzero(tree_deg == 1)
        kids = sk.children()
        deg = degree(sk)
        out = {int(e): _outward(sk, int(e), deg, kids) for e in ends}
        trunk = {int(e): _outward(sk, int(e), deg, kids, TRUNK_SKIP, TRUNK_STEPS) for e in ends}
        for a_i, ea in enumerate(ends):
            for eb in ends[a_i + 1 :]:
                v = lps[eb] - lps[ea]
                d = float(np.linalg.norm(v))
                if d == 0 or d > GAP_REACH_MM:
                    continue
                # _outward works in (k, j, i) index order; compare in the same frame
                u = (sk.points[eb] - sk.points[ea]).astype(np.float64)
                u /= np.linalg.norm(u) + 1e-9
                tips = float(out[int(ea)] @ u) >= 0.5 and float(-out[int(eb)] @ u) >= 0.5
                axes = float(trunk[int(ea)] @ u) >= 0.5 and float(-trunk[int(eb)] @ u) >= 0.5
                if not (tips or axes):
                    continue
                far = dijkstra(base, directed=False, indices=int(ea), limit=3 * d)
                if np.isfinite(far[int(eb)]):
                    continue
                rows += [int(ea), int(eb)]
                cols += [int(eb), int(ea)]
                w += [d, d]
        for end, apex, gap in _apex_joins(sk, lps, base, ends, out, kids, kd):
            rows += [end, apex]
            cols += [apex, end]
            w += [gap, gap]
    m = coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()
    m = m.maximum(m.T).tocsr()
    virtual: set[tuple[int, int]] = set()
    if n:
        m, virtual = _join_rising(m, lps)
    deg = np.diff(m.indptr).astype(np.int64)
    return VesselGraph(lps, m, deg, frozenset(virtual))


def _join_rising(m: csr_matrix, lps: F64) -> tuple[csr_matrix, set[tuple[int, int]]]:
    """Join each fragment to the tree holding the lowest node (see RISE_REACH_MM)."""
    n_comp, comp = connected_components(m, directed=False)
    if n_comp < 2:
        return m, set()
    z = lps[:, 2]
    main = comp[int(np.argmin(z))]
    in_main = comp == main
    # ends at the bottom of the image are cut by the field of view, not by lost lumen
    ends = np.flatnonzero((np.diff(m.indptr) <= 1) & in_main & (z > z.min() + EDGE_MM))
    rows: list[int] = []
    cols: list[int] = []
    w: list[float] = []
    virtual: set[tuple[int, int]] = set()
    for c in range(n_comp):
        members = np.flatnonzero(comp == c)
        if c == main or np.ptp(lps[members], axis=0).max() < RISE_MIN_MM:
            continue
        low = int(members[np.argmin(z[members])])
        for e in _rising_targets(lps, low, ends, np.flatnonzero(in_main)):
            de = float(np.linalg.norm(lps[e] - lps[low])) or 1e-3
            rows += [low, e]
            cols += [e, low]
            w += [de, de]
            virtual.add((min(low, e), max(low, e)))
    if not rows:
        return m, set()
    extra = coo_matrix((w, (rows, cols)), shape=m.shape).tocsr()
    return m.maximum(extra).tocsr(), virtual


def _rising_targets(
    lps: F64, low: int, ends: npt.NDArray[np.int64], nodes: npt.NDArray[np.int64]
) -> list[int]:
    """Where a fragment's lowest node joins the tree below: a midline fragment (the
    basilar) the midline vessel right below it (the vertebral confluence) or else the
    nearest end on each side; any other fragment the nearest end."""

    def below(cand: npt.NDArray[np.int64], reach: float) -> tuple[npt.NDArray[np.int64], F64]:
        v = lps[cand] - lps[low]
        d = np.linalg.norm(v, axis=1)
        # any direction close by (the vertebral loop over the atlas climbs above the
        # point where the network loses it), within 60 degrees of straight down farther
        ok = (d <= reach) & (d > 0) & ((-v[:, 2] >= 0.5 * d) | (d <= RISE_NEAR_MM))
        return cand[ok], v[ok]

    midline = abs(float(lps[low, 0])) < MIDLINE_MM
    if midline:
        mid = nodes[np.abs(lps[nodes, 0]) < MIDLINE_MM / 2]
        cand, v = below(mid, GAP_REACH_MM)
        if len(cand):
            return [int(cand[np.argmin(np.linalg.norm(v, axis=1))])]
    cand, v = below(ends, RISE_REACH_MM)
    best: dict[int, tuple[float, int]] = {}
    for e, ve in zip(cand, v, strict=True):
        side = (1 if ve[0] > 0 else -1) if midline else 0
        de = float(np.linalg.norm(ve))
        if side not in best or de < best[side][0]:
            best[side] = (de, int(e))
    return [e for _, e in best.values()]


def _hops_near_ends(
    base: csr_matrix, tree_deg: npt.NDArray[np.int64]
) -> tuple[dict[int, set[int]], None]:
    """For each end, the nodes within LOCAL_HOPS tree steps (its own branch tip)."""
    out: dict[int, set[int]] = {}
    for e in np.flatnonzero(tree_deg == 1):
        dist = dijkstra(base, directed=False, indices=int(e), unweighted=True, limit=LOCAL_HOPS)
        out[int(e)] = set(np.flatnonzero(np.isfinite(dist)).tolist())
    return out, None


def _apex_joins(
    sk: Skeleton,
    lps: F64,
    base: csr_matrix,
    ends: npt.NDArray[np.int64],
    out: dict[int, F64],
    kids: list[list[int]],
    kd: cKDTree,
) -> list[tuple[int, int, float]]:
    """An end facing the apex of a V across a gap, inside one component.

    An internal carotid cut by its stenosis just above the bifurcation ends facing the
    V the common and external carotids form there, while the tree joins both halves the
    long way round (circle of Willis); without this edge the carotid's way down stops at
    the cut and the common and external carotids go unnamed. Same rule as
    ``centerline._tip_pairs`` (within TIP_COS both ways), for parts the tree already
    joins elsewhere (the tree path at least three times the gap).
    """
    found: list[tuple[int, int, float]] = []
    for e in (int(x) for x in ends):
        best: tuple[int, int, float] | None = None
        for t in kd.query_ball_point(lps[e], GAP_REACH_MM):
            if t == e or len(kids[t]) + (sk.parent[t] >= 0) < 2:
                continue
            # separate parts are centerline.bridge_gaps' to join (where sizes decide)
            if sk.component[t] != sk.component[e]:
                continue
            d = float(np.linalg.norm(lps[t] - lps[e]))
            if d == 0 or (best is not None and d >= best[2]):
                continue
            u = (sk.points[t] - sk.points[e]).astype(np.float64)
            u /= np.linalg.norm(u) + 1e-9
            if float(out[e] @ u) < TIP_COS:
                continue
            dirs = _branch_directions(sk, t, kids)
            m = -np.sum(dirs, axis=0)
            norm = float(np.linalg.norm(m))
            if norm < 1e-6 or any(float(b @ (m / norm)) >= -0.3 for b in dirs):
                continue
            if float(-(m / norm) @ u) < TIP_COS:
                continue
            far = dijkstra(base, directed=False, indices=e, limit=3 * d)
            if np.isfinite(far[t]):
                continue
            best = (e, int(t), d)
        if best is not None:
            found.append(best)
    return found
