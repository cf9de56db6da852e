// Renders of the analyses: CTA MIP / VR / CPR with the stenosis table, the CT coronal
// overview, the marked radiograph. Images need the bearer token, so they are fetched and
// shown from blob URLs.
"use strict";

const G = { vrFrames: [], vrTimer: null, urls: [] };

async function authImage(url, img) {
  const r = await fetch(url, { headers: { Authorization: `Bearer ${S.token}` } });
  if (!r.ok) return;
  const u = URL.createObjectURL(await r.blob());
  G.urls.push(u);
  img.src = u;
}

const imageName = (url) => url.split("/").pop();

// Which renders belong in the gallery, in reading order; per-nodule key images are
// already on the finding cards.
function galleryRank(name) {
  const order = [/^overview/, /^mip_coronal$/, /^mip_sagittal$/, /^mip_axial$/, /^mip_/,
                 /^scpr_/, /^cpr_/, /^dr_key$/];
  const i = order.findIndex((re) => re.test(name));
  return i < 0 ? null : i;
}

function caption(name) {
  if (name.startsWith("overview")) return t("overview");
  if (name === "dr_key") return t("marked_radiograph");
  return name.replace(/^s?cpr_/, (m) => (m === "scpr_" ? "sCPR " : "CPR ")).replace(/_/g, " ");
}

function figure(url, name) {
  const fig = el("figure", undefined, "render");
  fig.dataset.name = name;
  const img = el("img"); img.alt = name; img.title = t("enlarge");
  img.onclick = () => fig.classList.toggle("big");
  authImage(url, img);
  fig.append(img, el("figcaption", caption(name)));
  return fig;
}

function stopVr() {
  if (G.vrTimer) clearInterval(G.vrTimer);
  G.vrTimer = null;
  const b = $("vr-play");
  if (b) b.textContent = t("play");
}

function vrShow(i) {
  const img = $("vr-image"), n = G.vrFrames.length;
  if (!img || !n) return;
  const k = ((i % n) + n) % n;
  $("vr-slider").value = String(k);
  $("vr-angle").textContent = `${t("angle")} ${Math.round((360 * k) / n)}°`;
  const f = G.vrFrames[k];
  if (f.src) img.src = f.src;
  else authImage(f.url, img).then(() => { f.src = img.src; });
}

function vrViewer(urls) {
  G.vrFrames = urls.map((url) => ({ url, src: null }));
  const box = el("div", undefined, "vr");
  box.id = "vr";
  const img = el("img"); img.id = "vr-image"; img.alt = "VR";
  const slider = el("input"); slider.type = "range"; slider.id = "vr-slider";
  slider.min = "0"; slider.max = String(urls.length - 1); slider.value = "0";
  slider.oninput = () => { stopVr(); vrShow(Number(slider.value)); };
  const play = el("button", t("play")); play.id = "vr-play"; play.type = "button";
  play.onclick = () => {
    if (G.vrTimer) { stopVr(); return; }
    play.textContent = t("pause");
    G.vrTimer = setInterval(() => vrShow(Number($("vr-slider").value) + 1), 150);
  };
  const controls = el("p", undefined, "vr-controls");
  controls.append(play, slider, el("span", "", "vr-angle"));
  controls.lastChild.id = "vr-angle";
  box.append(el("h4", t("vr")), img, controls);
  return box;
}

function measurement(f, name) {
  const m = f.measurements.find((x) => x.name === name);
  return m ? `${m.value.toFixed(1)} ${m.unit}` : "";
}

function stenosisTable(findings) {
  const rows = findings.filter((f) => f.kind === "stenosis" || f.kind === "occlusion");
  const table = el("table", undefined, "stenosis");
  table.id = "stenosis-table";
  const head = el("tr");
  for (const k of ["vessel_col", "grade", "stenosis_percent", "min_diameter",
                   "reference_diameter", "length", "method", "verdict"]) head.append(el("th", t(k)));
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  for (const f of rows) {
    const grade = f.attributes.grade || f.category || "";
    const pct = measurement(f, "stenosis_percent")
      || (measurement(f, "residual_lumen") && `${t("residual_lumen")} ${measurement(f, "residual_lumen")}`);
    const tr = el("tr", undefined, `grade-${grade}`);
    tr.dataset.id = f.id;
    tr.append(el("td", f.attributes.vessel || ""), el("td", t(grade)), el("td", pct),
      el("td", measurement(f, "min_diameter")), el("td", measurement(f, "reference_diameter")),
      el("td", measurement(f, "length")), el("td", f.attributes.method || ""),
      el("td", t(f.verdict)));
    tr.onclick = () => selectFinding(f.id);
    table.tBodies[0].append(tr);
  }
  return rows.length ? table : null;
}

function renderGallery(study) {
  stopVr();
  for (const u of G.urls) URL.revokeObjectURL(u);
  G.urls = [];
  const out = [];
  for (const a of study.analyses) {
    const named = a.image_urls.map((u) => [imageName(u), u]);
    const vr = named.filter(([n]) => /^vr_\d+$/.test(n)).sort().map(([, u]) => u);
    const figs = named.filter(([n]) => galleryRank(n) !== null)
      .sort((x, y) => galleryRank(x[0]) - galleryRank(y[0]) || x[0].localeCompare(y[0]))
      .map(([n, u]) => figure(u, n));
    if (!figs.length && !vr.length) continue;
    const sec = el("div", undefined, `renders pipeline-${a.pipeline}`);
    sec.dataset.analysis = a.id;
    if (vr.length) sec.append(vrViewer(vr));
    const grid = el("div", undefined, "render-grid");
    grid.append(...figs);
    sec.append(grid);
    if (a.pipeline === "cta") {
      const tab = stenosisTable(study.findings.filter((f) => f.analysis_id === a.id));
      if (tab) sec.append(el("h4", t("stenosis_table")), tab);
    }
    out.push(sec);
  }
  $("gallery").replaceChildren(...out);
  $("renders-title").hidden = out.length === 0;
  if (G.vrFrames.length && $("vr-image")) vrShow(0);
}
