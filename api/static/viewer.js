// Slice viewer: one stored series shown as windowed PNG slices from the server, with the
// AI findings drawn where they lie. Geometry (per-slice Image Position, orientation, pixel
// spacing) comes from /api/series/{uid}/geometry; a finding's LPS point is placed on the
// slice whose plane it is nearest to, in-plane by projecting onto the row/column axes
// (PS3.3 C.7.6.2.1.1). Radiographs: points are in-plane mm from the top-left pixel.
"use strict";

const V = { geo: null, series: null, k: 0, window: "lung", findings: [], selected: null,
            blobs: new Map(), inflight: new Map(), want: null, bitmap: null, shownK: 0,
            custom: null, applied: null, acc: 0 };
const V_BLOBS_MAX = 600; // PNG blobs (~50-200 kB each), decoded only when shown
const HU_WINDOWS = ["lung", "mediastinum", "bone", "brain", "vessel", "auto"];
const VERDICT_COLOURS = { pending: "#f77f00", accepted: "#2a9d8f", edited: "#4ea8de",
                          rejected: "#9a9a9a" };

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                         a[0] * b[1] - a[1] * b[0]];

// custom: [centre, width] set by dragging on the image; a preset button clears it.
function vWindowParam() {
  return V.custom ? `wc=${V.custom[0].toFixed(0)}&ww=${V.custom[1].toFixed(0)}` : `window=${V.window}`;
}
function vKey(k) { return `${V.series}|${vWindowParam()}|${k}`; }

function vFetch(k) {
  const key = vKey(k);
  if (V.blobs.has(key)) return Promise.resolve(V.blobs.get(key));
  if (V.inflight.has(key)) return V.inflight.get(key);
  const url = `/api/series/${V.series}/slices/${k}.png?${vWindowParam()}`;
  const p = fetch(url, { headers: { Authorization: `Bearer ${S.token}` } }).then(async (r) => {
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    const blob = await r.blob();
    blob.window = (r.headers.get("X-Window") || "").split(",").map(Number);
    V.blobs.set(key, blob);
    if (V.blobs.size > V_BLOBS_MAX) V.blobs.delete(V.blobs.keys().next().value);
    return blob;
  }).finally(() => V.inflight.delete(key));
  V.inflight.set(key, p);
  return p;
}

// Neighbours in the scroll direction first, one request at a time, so that scrolling is
// served from memory without flooding a busy server.
async function vPrefetch(k, dir) {
  const order = [];
  for (let i = 1; i <= 6; i++) order.push(k + dir * i);
  order.push(k - dir, k - 2 * dir);
  for (const j of order) {
    if (j < 0 || !V.geo || j >= V.geo.slice_count || vKey(k) !== V.want) continue;
    try { await vFetch(j); } catch (e) { return; }
  }
}

async function vShow(k, dir = 1) {
  if (!V.geo) return;
  V.k = Math.max(0, Math.min(V.geo.slice_count - 1, k));
  $("slice-index").textContent = `${V.k + 1} / ${V.geo.slice_count}`;
  // the Instance Number is what the township console and PACS page by
  $("slice-instance").textContent = `Im ${V.geo.slices[V.k].instance_number}`;
  const key = vKey(V.k);
  V.want = key;
  try {
    const blob = await vFetch(V.k);
    if (V.want !== key) return;
    const bmp = await createImageBitmap(blob);
    if (V.want !== key) { bmp.close(); return; }
    if (V.bitmap) V.bitmap.close();
    V.bitmap = bmp; V.shownK = V.k;
    if (blob.window && blob.window.length === 2) V.applied = blob.window;
    $("window-values").textContent = V.applied ? `C ${V.applied[0]} / W ${V.applied[1]}` : "";
    $("viewer-error").textContent = "";
    vDraw();
    vPrefetch(V.k, dir);
  } catch (e) { $("viewer-error").textContent = e.message; }
}

// Where finding f lies relative to slice k: in-plane pixel (row, col) and the distance
// (mm) of the point from that slice's plane; best = the slice nearest to the point.
function vLocate(f, k) {
  const g = V.geo, p = f.center_lps;
  if (!g || !p) return null;
  if (g.kind === "projection") {
    const sp = (f.attributes && f.attributes.unit === "px") || !g.pixel_spacing
      ? [1, 1] : g.pixel_spacing;
    return { best: 0, dist: 0, row: p[1] / sp[0], col: p[0] / sp[1] };
  }
  if (!g.orientation || !g.pixel_spacing || !g.slices.every((s) => s.position)) {
    const best = g.slices.findIndex((s) => s.sop_instance_uid === f.sop_instance_uid);
    return best < 0 ? null : { best, dist: best === k ? 0 : Infinity, row: null, col: null };
  }
  const r = g.orientation.slice(0, 3), c = g.orientation.slice(3), n = cross(r, c);
  let best = 0, bd = Infinity;
  g.slices.forEach((s, i) => {
    const d = Math.abs(dot(n, sub(p, s.position)));
    if (d < bd) { bd = d; best = i; }
  });
  const v = sub(p, g.slices[k].position);
  return { best, dist: Math.abs(dot(n, v)), row: dot(v, c) / g.pixel_spacing[0],
           col: dot(v, r) / g.pixel_spacing[1] };
}

function vRadiusMm(f) {
  const m = Object.fromEntries(f.measurements.map((x) => [x.name, x.value]));
  const d = m.long_axis || m.mean_diameter || m.diameter || m.reference_diameter || 8;
  return d / 2 + 3;
}

function vDraw() {
  const cv = $("viewer-canvas"), g = V.geo, ctx = cv.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height);
  const markers = [];
  if (!g || !V.bitmap) { cv.dataset.markers = "[]"; delete cv.dataset.slice; return; }
  const k = V.shownK; // markers belong to the slice on screen, not the one on its way
  const sp = g.pixel_spacing || [1, 1];
  const scale = Math.min(cv.width / (g.columns * sp[1]), cv.height / (g.rows * sp[0]));
  const w = g.columns * sp[1] * scale, h = g.rows * sp[0] * scale;
  const ox = (cv.width - w) / 2, oy = (cv.height - h) / 2;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(V.bitmap, ox, oy, w, h);
  for (const f of V.findings) {
    if (f.series_uid && f.series_uid !== V.series) continue;
    const loc = vLocate(f, k);
    const rmm = vRadiusMm(f);
    if (!loc || loc.row === null || loc.dist > Math.max(rmm - 3, 1)) continue;
    const x = ox + (loc.col + 0.5) * sp[1] * scale, y = oy + (loc.row + 0.5) * sp[0] * scale;
    const r = Math.max(rmm * scale, 8), solid = loc.best === k;
    ctx.strokeStyle = VERDICT_COLOURS[f.verdict] || "#f77f00";
    ctx.lineWidth = f.id === V.selected ? 4 : 2;
    ctx.setLineDash(solid ? [] : [6, 4]);
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = ctx.strokeStyle; ctx.font = "bold 14px sans-serif";
    ctx.fillText(`#${f.id}`, x + r * 0.75, y - r * 0.75);
    markers.push({ id: f.id, x: Math.round(x), y: Math.round(y), r: Math.round(r), solid });
  }
  cv.dataset.markers = JSON.stringify(markers);
  cv.dataset.slice = String(k);
}

function vButtons() {
  const names = V.geo && V.geo.kind !== "projection" ? HU_WINDOWS : ["auto"];
  $("window-buttons").replaceChildren(...names.map((n) => {
    const b = el("button", t(n), "wl-btn"); b.type = "button"; b.dataset.window = n;
    b.setAttribute("aria-pressed", String(!V.custom && n === V.window));
    b.onclick = () => { V.window = n; V.custom = null; vButtons(); vShow(V.k); };
    return b;
  }));
}

async function vOpen(seriesUid, preferredWindow) {
  if (V.series === seriesUid && V.geo) return;
  V.series = seriesUid; V.geo = null; V.want = null; V.custom = null;
  if (V.bitmap) { V.bitmap.close(); V.bitmap = null; }
  $("viewer-notes").textContent = ""; $("viewer-error").textContent = "";
  vDraw();
  try {
    V.geo = await api("GET", `/api/series/${seriesUid}/geometry`);
  } catch (e) { $("viewer-error").textContent = e.message; return; }
  if (V.series !== seriesUid) return;
  V.window = V.geo.kind === "projection" ? "auto" : (preferredWindow || V.geo.default_window);
  $("viewer-notes").textContent = V.geo.notes.join("; ");
  vButtons();
  const first = V.findings.filter((f) => !f.series_uid || f.series_uid === seriesUid)
    .map((f) => vLocate(f, 0)).find((l) => l);
  await vShow(first ? first.best : Math.floor(V.geo.slice_count / 2));
}

function vSetFindings(findings, selected) {
  V.findings = findings.filter((f) => f.center_lps); V.selected = selected;
  vDraw();
}

function vJumpTo(f) {
  V.selected = f.id;
  if (f.series_uid && f.series_uid !== V.series) return;
  const loc = vLocate(f, V.k);
  if (loc) vShow(loc.best); else vDraw();
}

function vStep(delta) { if (V.geo) vShow(V.k + delta, delta >= 0 ? 1 : -1); }

// Drag on the image: right/left widens/narrows the window, down/up raises/lowers the
// centre (the usual console convention). At most one request in flight while dragging.
function vDragWindow() {
  const cv = $("viewer-canvas");
  let drag = null, busy = false;
  cv.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0 || !V.applied) return;
    drag = { x: ev.clientX, y: ev.clientY, c: V.applied[0], w: V.applied[1] };
  });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", async (ev) => {
    if (!drag || busy || !V.geo) return;
    const k = Math.max(drag.w / 256, 1);
    V.custom = [drag.c + (ev.clientY - drag.y) * k, Math.max(1, drag.w + (ev.clientX - drag.x) * k)];
    vButtons();
    busy = true;
    try { await vShow(V.k); } finally { busy = false; }
  });
}

function vInit() {
  $("viewer-canvas").addEventListener("wheel", (ev) => {
    ev.preventDefault();
    // trackpads send many small deltas, a mouse wheel ~100 per notch: one slice per 80
    V.acc += ev.deltaMode === 0 ? ev.deltaY : ev.deltaY * 80;
    const steps = Math.trunc(V.acc / 80);
    if (steps) { V.acc -= steps * 80; vStep(steps); }
  }, { passive: false });
  vDragWindow();
}
