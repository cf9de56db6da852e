// CountyRead radiologist page: plain JS, no build step. Text from the server (patient
// names come from DICOM headers, i.e. untrusted input) is only ever set as textContent.
"use strict";

const S = { lang: localStorage.getItem("lang") || "zh", token: sessionStorage.getItem("token"),
            user: sessionStorage.getItem("user"), study: null, critical: null, stream: null,
            detail: null, sel: null, loaded: null, rows: [] };
const $ = (id) => document.getElementById(id);
const t = (k) => L[S.lang][k] || k;
const field = (k) => FIELD[S.lang][k] || k;
const unit = (u) => (u in UNIT ? UNIT[u] : u);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function applyLang() {
  document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
  $("lang").textContent = S.lang === "zh" ? "English" : "中文";
  if (typeof vButtons === "function" && V.geo) vButtons();
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: `Bearer ${S.token}` } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) { logout(); throw new Error(t("wrong_login")); }
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((data && data.detail && JSON.stringify(data.detail)) || r.statusText);
  return data;
}

function show(view) {
  for (const v of ["login-view", "worklist-view", "study-view"]) $(v).hidden = v !== view;
  $("logout").hidden = view === "login-view";
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(S.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

async function login(ev) {
  ev.preventDefault();
  const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
  const r = await fetch("/api/auth/token", { method: "POST", body: form });
  if (!r.ok) { $("login-error").textContent = t("wrong_login"); return; }
  const tok = await r.json();
  S.token = tok.access_token; S.user = tok.username;
  sessionStorage.setItem("token", S.token); sessionStorage.setItem("user", S.user);
  start();
}

function logout() {
  S.token = null; sessionStorage.clear();
  if (S.stream) S.stream.abort();
  show("login-view");
}

// "due in 1h05m" / "overdue by 12m", from the deadline and now (refreshed every 30 s).
function countdown(iso) {
  if (!iso) return { text: "", overdue: false };
  const ms = new Date(iso).getTime() - Date.now(), mins = Math.floor(Math.abs(ms) / 60000);
  const d = Math.floor(mins / 1440), h = Math.floor((mins % 1440) / 60), m = mins % 60;
  const parts = d ? [`${d}${t("unit_d")}`, `${h}${t("unit_h")}`] : h ? [`${h}${t("unit_h")}`,
    `${String(m).padStart(2, "0")}${t("unit_m")}`] : [`${m}${t("unit_m")}`];
  return { text: `${t(ms < 0 ? "overdue" : "remaining")} ${parts.join("")}`, overdue: ms < 0 };
}

function deadlineCell(td, s) {
  const c = countdown(s.deadline_at);
  td.textContent = c.text;
  td.title = fmtTime(s.deadline_at);
  td.className = `deadline${c.overdue || s.overdue ? " overdue" : ""}`;
}

function statusText(s) {
  if (s.status === "not_analyzable") return `${t("not_analyzable_reason")}${s.reason || ""}`;
  return t(s.status === "received" ? "received_s" : s.status);
}

function worklistQuery() {
  const q = new URLSearchParams({ limit: "100" });
  for (const [id, key] of [["f-status", "status"], ["f-modality", "modality"], ["f-urgency", "urgency"]]) {
    if ($(id).value) q.set(key, $(id).value);
  }
  return q.toString();
}

async function loadWorklist() {
  const page = await api("GET", `/api/worklist?${worklistQuery()}`);
  const body = $("worklist").querySelector("tbody");
  body.replaceChildren();
  $("wl-total").textContent = `(${t("total")} ${page.total})`;
  S.rows = page.items;
  for (const s of page.items) {
    const tr = el("tr", undefined, `urgency-${s.urgency || "routine"}`);
    tr.dataset.uid = s.study_uid;
    tr.dataset.status = s.status;
    const status = el("td", statusText(s), `status status-${s.status}`);
    const dl = el("td");
    deadlineCell(dl, s);
    tr.append(el("td", t(s.urgency || "routine"), "urgency"), el("td", s.patient_name || ""),
      el("td", s.source_node_name || s.source_ae || "", "source"),
      el("td", s.modalities), status, el("td", aiText(s), "ai"),
      el("td", fmtTime(s.first_received_at)), dl, el("td", s.claimed_by || ""));
    tr.addEventListener("click", () => openStudy(s.study_uid));
    body.append(tr);
  }
}

// "4B · 2 处发现": the category of the latest analysis and the findings not rejected.
function aiText(s) {
  if (s.ai_category === null && !s.finding_count) return "";
  const cat = s.ai_category ? field(s.ai_category) : "";
  const n = s.finding_count ? `${s.finding_count} ${t("n_findings")}` : t("no_findings");
  return cat ? `${cat} · ${n}` : n;
}

function tickCountdowns() {
  const cells = $("worklist").querySelectorAll("tbody td.deadline");
  S.rows.forEach((s, i) => { if (cells[i]) deadlineCell(cells[i], s); });
}

// EventSource cannot send the Authorization header, so the stream is read with fetch.
async function listen() {
  if (S.stream) S.stream.abort();
  const ctl = new AbortController();
  S.stream = ctl;
  while (!ctl.signal.aborted && S.token) {
    try {
      const r = await fetch("/api/events?max_s=300", {
        headers: { Authorization: `Bearer ${S.token}` }, signal: ctl.signal });
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = block.split("\n").find((l) => l.startsWith("data: "));
          if (data) onEvent(JSON.parse(data.slice(6)));
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

function onEvent(ev) {
  if (S.critical !== null && ev.critical_waiting > S.critical) {
    $("banner").textContent = t("new_critical");
    $("banner").hidden = false;
    setTimeout(() => { $("banner").hidden = true; }, 15000);
  }
  S.critical = ev.critical_waiting;
  if (!$("worklist-view").hidden) loadWorklist();
}

async function keyImage(url, img) {
  const r = await fetch(url, { headers: { Authorization: `Bearer ${S.token}` } });
  if (r.ok) img.src = URL.createObjectURL(await r.blob());
}

function editFinding(f) {
  const d = prompt(t("mean_diameter"), "");
  const cat = prompt(t("category"), f.category || "");
  const body = { verdict: "edited", comment: prompt(t("comment"), "") || null };
  if (d) body.measurements = [...f.measurements.filter((m) => m.name !== "mean_diameter"),
    { name: "mean_diameter", value: Number(d), unit: "mm" }];
  if (cat) body.category = cat;
  if (body.measurements || body.category) review(f.id, body);
}

function findingCard(f, frozen) {
  const card = el("div", undefined, `finding verdict-${f.verdict}`);
  card.dataset.id = f.id;
  card.onclick = (ev) => { if (!ev.target.closest("button")) selectFinding(f.id); };
  if (f.key_image_url) {
    const img = el("img"); img.alt = f.kind; keyImage(f.key_image_url, img); card.append(img);
  }
  const info = el("div");
  const grade = f.attributes.grade ? ` ${t(f.attributes.grade)}` : "";
  info.append(el("h4", `#${f.id} ${field(f.kind)}${grade} — ${t(f.verdict)}`));
  const ul = el("ul");
  if (f.probability !== null) ul.append(el("li", `${t("probability")}: ${(f.probability * 100).toFixed(0)}%`));
  if (f.category) ul.append(el("li", `${t("category")}: ${f.category}`));
  for (const m of f.measurements) {
    ul.append(el("li", `${field(m.name)}: ${m.value} ${unit(m.unit)}`));
  }
  for (const [k, v] of Object.entries(f.attributes)) {
    if (k === "grade" || k === "coordinates") continue;  // grade is in the heading
    ul.append(el("li", `${field(k)}: ${field(String(v))}`));
  }
  if (f.center_lps) ul.append(el("li", `LPS: ${f.center_lps.map((x) => x.toFixed(1)).join(", ")}`));
  info.append(ul);
  if (!frozen) {
    const acts = el("p", undefined, "actions");
    const accept = el("button", `${t("accept")} (A)`); accept.className = "accept";
    accept.onclick = () => review(f.id, { verdict: "accepted" });
    const reject = el("button", `${t("reject")} (R)`); reject.className = "reject";
    reject.onclick = () => review(f.id, { verdict: "rejected" });
    const edit = el("button", `${t("edit")} (E)`); edit.className = "edit";
    edit.onclick = () => editFinding(f);
    acts.append(accept, reject, edit);
    info.append(acts);
  }
  card.append(info);
  return card;
}

// The selected finding: highlighted card, thick marker, viewer on its slice.
function selectFinding(id) {
  const f = S.detail && S.detail.findings.find((x) => x.id === id);
  if (!f) return;
  S.sel = id;
  document.querySelectorAll("#findings .finding").forEach((c) => {
    if (Number(c.dataset.id) === id) c.setAttribute("aria-current", "true");
    else c.removeAttribute("aria-current");
  });
  document.querySelector(`#findings .finding[data-id="${id}"]`)?.scrollIntoView({ block: "nearest" });
  const sel = $("series-select");
  if (f.series_uid && f.series_uid !== V.series
      && [...sel.options].some((o) => o.value === f.series_uid)) {
    sel.value = f.series_uid;
    vOpen(f.series_uid, windowFor(S.detail, f.series_uid)).then(() => vJumpTo(f));
  } else vJumpTo(f);
}

function stepFinding(delta) {
  const list = S.detail ? S.detail.findings : [];
  if (!list.length) return;
  const i = list.findIndex((f) => f.id === S.sel);
  const j = i < 0 ? (delta > 0 ? 0 : list.length - 1) : (i + delta + list.length) % list.length;
  selectFinding(list[j].id);
}

async function review(id, body) {
  try {
    await api("PATCH", `/api/findings/${id}`, body);
    await openStudy(S.study);
    // after a verdict the next undecided finding is the one to look at
    const list = S.detail.findings, i = list.findIndex((f) => f.id === id);
    const next = list.slice(i + 1).concat(list.slice(0, i)).find((f) => f.verdict === "pending");
    if (next) selectFinding(next.id);
  } catch (e) { $("study-error").textContent = e.message; }
}

const NO_PIXELS = new Set(["SR", "KO", "SEG", "PR", "RTSTRUCT", "DOC"]);

function pickSeries(s) {
  const viewable = s.series.filter((x) => !NO_PIXELS.has((x.modality || "").toUpperCase()));
  const sel = $("series-select");
  sel.replaceChildren(...viewable.map((x) => {
    const o = el("option", `${x.modality || ""} ${x.series_number ?? ""} ${x.series_description || ""} (${x.instance_count})`);
    o.value = x.series_uid; return o;
  }));
  sel.hidden = viewable.length < 2;
  const preferred = s.findings.find((f) => f.series_uid)?.series_uid
    || s.analyses[0]?.series_uid || viewable[0]?.series_uid;
  return viewable.some((x) => x.series_uid === preferred) ? preferred : viewable[0]?.series_uid;
}

function windowFor(s, seriesUid) {
  const a = s.analyses.find((x) => x.series_uid === seriesUid);
  return a && a.pipeline === "cta" ? "vessel" : undefined;
}

async function openStudy(uid) {
  const fresh = S.loaded !== uid;
  S.study = uid;
  show("study-view");
  $("study-error").textContent = "";
  const s = await api("GET", `/api/studies/${uid}`);
  S.detail = s;
  const frozen = s.status === "signed" || s.status === "delivered";
  $("study-title").textContent = `${s.patient_name || ""} · ${s.modalities} · ${t(s.urgency || "routine")}`;
  $("study-meta").textContent = `${statusText(s)} · ${t("deadline")}: ${fmtTime(s.deadline_at)} (${countdown(s.deadline_at).text}) · ${t("claimed")}: ${s.claimed_by || t("none")} · rev ${s.revision}`;
  $("study-view").dataset.status = s.status;
  const mine = s.claimed_by === S.user;
  $("claim").hidden = frozen || mine; $("release").hidden = !mine; $("amend").hidden = !frozen;
  $("findings").replaceChildren(...s.findings.map((f) => findingCard(f, frozen || !mine)));
  if (fresh) {
    S.loaded = uid; S.sel = null;
    V.series = null; V.geo = null;
    vSetFindings(s.findings, null);
    renderGallery(s);
    const series = pickSeries(s);
    if (series) { $("series-select").value = series; vOpen(series, windowFor(s, series)); }
    else { $("viewer-error").textContent = t("no_images"); vDraw(); }
  } else {
    vSetFindings(s.findings, S.sel);
  }
  if (S.sel !== null) selectFinding(S.sel);
  const rep = await api("GET", `/api/studies/${uid}/report`);
  fillReport(rep);
  for (const id of ["r-findings", "r-impression", "r-findings-en", "r-impression-en", "save-report", "sign", "regenerate"]) {
    $(id).disabled = frozen || !mine;
  }
  const dl = await api("GET", `/api/studies/${uid}/deliveries`);
  $("deliveries").replaceChildren(...(dl.length ? dl.map((d) => el("li",
    `${d.node_name || d.node_id} (${d.ae_title || ""}) rev ${d.revision}: ${d.state}, ${d.attempts}×${d.last_error ? " — " + d.last_error : ""}`))
    : [el("li", t("none"))]));
}

function fillReport(rep) {
  $("r-findings").value = rep.findings_text; $("r-impression").value = rep.impression_text;
  $("r-findings-en").value = rep.findings_text_en; $("r-impression-en").value = rep.impression_text_en;
  $("report-state").textContent = t(`state_${rep.state}`);
}

async function act(fn) {
  try { await fn(); await openStudy(S.study); } catch (e) { $("study-error").textContent = e.message; }
}

function reportBody() {
  return { findings_text: $("r-findings").value, impression_text: $("r-impression").value,
           findings_text_en: $("r-findings-en").value, impression_text_en: $("r-impression-en").value };
}

function start() {
  $("who").textContent = S.user || "";
  show("worklist-view");
  loadWorklist().catch((e) => { $("login-error").textContent = e.message; });
  listen();
}

$("login-form").addEventListener("submit", login);
$("logout").onclick = logout;
$("lang").onclick = () => {
  S.lang = S.lang === "zh" ? "en" : "zh"; localStorage.setItem("lang", S.lang); applyLang();
  if (!$("worklist-view").hidden) loadWorklist();
  if (!$("study-view").hidden && S.detail) { renderGallery(S.detail); openStudy(S.study); }
};
$("back").onclick = () => { stopVr(); show("worklist-view"); loadWorklist(); };
for (const id of ["f-status", "f-modality", "f-urgency"]) {
  $(id).value = localStorage.getItem(id) || "";
  $(id).onchange = () => { localStorage.setItem(id, $(id).value); loadWorklist(); };
}
$("series-select").onchange = () => {
  const uid = $("series-select").value;
  vOpen(uid, S.detail && windowFor(S.detail, uid));
};
const toggleHelp = (on) => { $("help").hidden = on === undefined ? !$("help").hidden : !on; };
$("help-btn").onclick = () => toggleHelp(true);
$("help-close").onclick = () => toggleHelp(false);

// Review shortcuts: only in the study view, never while typing in the report.
document.addEventListener("keydown", (ev) => {
  if ($("study-view").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target.closest && ev.target.closest("input, textarea, select")) return;
  if (ev.key === "Escape") { toggleHelp(false); return; }
  if (ev.key === "?") { toggleHelp(); return; }
  const steps = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 };
  if (ev.key in steps) { ev.preventDefault(); vStep(steps[ev.key]); return; }
  const key = ev.key.toLowerCase();
  if (key === "j") stepFinding(1);
  else if (key === "k") stepFinding(-1);
  else if ("are".includes(key) && key.length === 1 && S.sel !== null && S.detail
           && S.detail.claimed_by === S.user
           && !["signed", "delivered"].includes(S.detail.status)) {
    const f = S.detail.findings.find((x) => x.id === S.sel);
    if (!f) return;
    if (key === "a") review(f.id, { verdict: "accepted" });
    else if (key === "r") review(f.id, { verdict: "rejected" });
    else editFinding(f);
  } else return;
  ev.preventDefault();
});
setInterval(() => { if (!$("worklist-view").hidden) tickCountdowns(); }, 30000);
vInit();
$("claim").onclick = () => act(() => api("POST", `/api/studies/${S.study}/claim`));
$("release").onclick = () => act(() => api("DELETE", `/api/studies/${S.study}/claim`));
$("amend").onclick = () => act(() => api("POST", `/api/studies/${S.study}/amend`));
$("save-report").onclick = () => act(() => api("PUT", `/api/studies/${S.study}/report`, reportBody()));
$("regenerate").onclick = async () => {
  try { fillReport(await api("GET", `/api/studies/${S.study}/report?regenerate=true`)); }
  catch (e) { $("study-error").textContent = e.message; }
};
$("sign").onclick = () => act(async () => {
  await api("PUT", `/api/studies/${S.study}/report`, reportBody());
  await api("POST", `/api/studies/${S.study}/sign`);
});
applyLang();
if (S.token) start(); else show("login-view");
