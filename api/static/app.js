// CountyRead radiologist page: plain JS, no build step. Text from the server (patient
// names come from DICOM headers, i.e. untrusted input) is only ever set as textContent.
"use strict";

const L = {
  zh: {
    title: "县域影像AI诊断", login: "登录", logout: "退出", username: "用户名", password: "密码",
    worklist: "工作列表", urgency: "紧急度", patient: "患者", modality: "检查", status: "状态",
    received: "到达", deadline: "时限", claimed: "认领", back: "← 返回列表", claim: "认领",
    release: "释放", amend: "修订", findings: "AI 发现", report: "报告", findings_text: "所见",
    impression_text: "印象", findings_text_en: "Findings (EN)", impression_text_en: "Impression (EN)",
    regenerate: "按发现重新生成", save: "保存草稿", sign: "签发", deliveries: "结果回传",
    accept: "接受", reject: "拒绝", edit: "修改", critical: "危急", urgent: "紧急", routine: "常规",
    ready: "待诊断", in_review: "诊断中", not_analyzable: "无法分析", signed: "已签发",
    delivered: "已回传", received_s: "已接收", queued: "排队", analyzing: "分析中", failed: "失败",
    pending: "待审", accepted: "已接受", rejected: "已拒绝", edited: "已修改", new_critical: "新的危急病例！",
    wrong_login: "用户名或密码错误", probability: "概率", category: "分类", comment: "备注",
    mean_diameter: "平均径(mm)", state_generated: "自动生成草稿", state_draft: "已保存草稿",
    state_signed: "已签发", total: "共", saved: "已保存", none: "无",
  },
  en: {
    title: "County imaging AI review", login: "Log in", logout: "Log out", username: "Username",
    password: "Password", worklist: "Worklist", urgency: "Urgency", patient: "Patient",
    modality: "Modality", status: "Status", received: "Arrived", deadline: "Deadline",
    claimed: "Claimed by", back: "← Back to worklist", claim: "Claim", release: "Release",
    amend: "Amend", findings: "AI findings", report: "Report", findings_text: "Findings (ZH)",
    impression_text: "Impression (ZH)", findings_text_en: "Findings (EN)",
    impression_text_en: "Impression (EN)", regenerate: "Regenerate from findings",
    save: "Save draft", sign: "Sign", deliveries: "Deliveries", accept: "Accept",
    reject: "Reject", edit: "Edit", critical: "Critical", urgent: "Urgent", routine: "Routine",
    ready: "Ready", in_review: "In review", not_analyzable: "Not analyzable", signed: "Signed",
    delivered: "Delivered", received_s: "Received", queued: "Queued", analyzing: "Analyzing",
    failed: "Failed", pending: "Pending", accepted: "Accepted", rejected: "Rejected",
    edited: "Edited", new_critical: "New critical study!", wrong_login: "Wrong username or password",
    probability: "Probability", category: "Category", comment: "Comment",
    mean_diameter: "Mean diameter (mm)", state_generated: "Generated draft",
    state_draft: "Saved draft", state_signed: "Signed", total: "total", saved: "Saved", none: "none",
  },
};

const S = { lang: localStorage.getItem("lang") || "zh", token: sessionStorage.getItem("token"),
            user: sessionStorage.getItem("user"), study: null, critical: null, stream: null };
const $ = (id) => document.getElementById(id);
const t = (k) => L[S.lang][k] || k;

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

async function loadWorklist() {
  const page = await api("GET", "/api/worklist?limit=100");
  const body = $("worklist").querySelector("tbody");
  body.replaceChildren();
  $("wl-total").textContent = `(${t("total")} ${page.total})`;
  for (const s of page.items) {
    const tr = el("tr", undefined, `urgency-${s.urgency || "routine"}`);
    tr.dataset.uid = s.study_uid;
    tr.append(el("td", t(s.urgency || "routine")), el("td", s.patient_name || ""),
      el("td", s.modalities), el("td", t(s.status === "received" ? "received_s" : s.status)),
      el("td", fmtTime(s.first_received_at)),
      el("td", fmtTime(s.deadline_at), s.overdue ? "overdue" : ""), el("td", s.claimed_by || ""));
    tr.addEventListener("click", () => openStudy(s.study_uid));
    body.append(tr);
  }
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

function findingCard(f, frozen) {
  const card = el("div", undefined, `finding verdict-${f.verdict}`);
  card.dataset.id = f.id;
  if (f.key_image_url) {
    const img = el("img"); img.alt = f.kind; keyImage(f.key_image_url, img); card.append(img);
  }
  const info = el("div");
  info.append(el("h4", `#${f.id} ${f.kind} — ${t(f.verdict)}`));
  const ul = el("ul");
  if (f.probability !== null) ul.append(el("li", `${t("probability")}: ${(f.probability * 100).toFixed(0)}%`));
  if (f.category) ul.append(el("li", `${t("category")}: ${f.category}`));
  for (const m of f.measurements) ul.append(el("li", `${m.name}: ${m.value} ${m.unit}`));
  for (const [k, v] of Object.entries(f.attributes)) ul.append(el("li", `${k}: ${v}`));
  if (f.center_lps) ul.append(el("li", `LPS: ${f.center_lps.map((x) => x.toFixed(1)).join(", ")}`));
  info.append(ul);
  if (!frozen) {
    const acts = el("p", undefined, "actions");
    const accept = el("button", t("accept")); accept.className = "accept";
    accept.onclick = () => review(f.id, { verdict: "accepted" });
    const reject = el("button", t("reject")); reject.className = "reject";
    reject.onclick = () => review(f.id, { verdict: "rejected" });
    const edit = el("button", t("edit")); edit.className = "edit";
    edit.onclick = () => {
      const d = prompt(t("mean_diameter"), "");
      const cat = prompt(t("category"), f.category || "");
      const body = { verdict: "edited", comment: prompt(t("comment"), "") || null };
      if (d) body.measurements = [...f.measurements.filter((m) => m.name !== "mean_diameter"),
        { name: "mean_diameter", value: Number(d), unit: "mm" }];
      if (cat) body.category = cat;
      if (body.measurements || body.category) review(f.id, body);
    };
    acts.append(accept, reject, edit);
    info.append(acts);
  }
  card.append(info);
  return card;
}

async function review(id, body) {
  try { await api("PATCH", `/api/findings/${id}`, body); await openStudy(S.study); }
  catch (e) { $("study-error").textContent = e.message; }
}

async function openStudy(uid) {
  S.study = uid;
  show("study-view");
  $("study-error").textContent = "";
  const s = await api("GET", `/api/studies/${uid}`);
  const frozen = s.status === "signed" || s.status === "delivered";
  $("study-title").textContent = `${s.patient_name || ""} · ${s.modalities} · ${t(s.urgency || "routine")}`;
  $("study-meta").textContent = `${t(s.status)}${s.reason ? " — " + s.reason : ""} · ${t("deadline")}: ${fmtTime(s.deadline_at)} · ${t("claimed")}: ${s.claimed_by || t("none")} · rev ${s.revision}`;
  $("study-view").dataset.status = s.status;
  const mine = s.claimed_by === S.user;
  $("claim").hidden = frozen || mine; $("release").hidden = !mine; $("amend").hidden = !frozen;
  $("findings").replaceChildren(...s.findings.map((f) => findingCard(f, frozen || !mine)));
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
};
$("back").onclick = () => { show("worklist-view"); loadWorklist(); };
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
