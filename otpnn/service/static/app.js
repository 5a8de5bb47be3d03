// The dashboard: the jobs list, a job's tree, curves and events, live from GET /live.
// All data comes through the API with the token in a header; a 401 anywhere clears what is
// shown and asks for the token again.

import { Unauthorized, download, follow, json, setToken } from "./api.js";
import { drawCurves } from "./charts.js";
import { buildForm, readForm, showProblems } from "./form.js";
import { drawTree, findJob } from "./tree.js";

const $ = (id) => document.getElementById(id);

const state = {
  jobs: new Map(), // id -> status
  rates: new Map(), // id -> {t, step, rate}: samples/s measured from live steps
  watched: null, // job id shown in the job panel
  tree: null,
  curves: { epochs: [], running: null },
  fine: [], // the watched job's points within epochs
  events: [],
  feed: null, // AbortController of the live feed
  jobsFrame: 0, // a pending redraw of the jobs table
  fields: [],
  formBuilt: false,
};

// -- authentication -------------------------------------------------------------------------
function askToken(message) {
  stopFeed();
  setToken(null);
  state.jobs.clear();
  state.watched = null;
  $("jobs").tBodies[0].replaceChildren();
  $("timeline").replaceChildren();
  $("tree").replaceChildren();
  $("curves").replaceChildren();
  $("job-panel").hidden = true;
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-message").textContent = message || "";
  $("token").value = "";
  $("token").focus();
  setConn("idle", "not connected");
}

async function guard(promise) {
  try {
    return await promise;
  } catch (e) {
    if (e instanceof Unauthorized) {
      askToken("Wrong token: try again.");
      return undefined;
    }
    throw e;
  }
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  setToken($("token").value.trim());
  await open();
});

// -- start ----------------------------------------------------------------------------------
async function open() {
  let jobs;
  try {
    jobs = await json("GET", "/jobs");
  } catch (e) {
    if (e instanceof Unauthorized) {
      askToken($("login").hidden ? "" : "Wrong token: try again.");
      return;
    }
    setMessage(`The service did not answer: ${e.message}`, "error");
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  for (const j of jobs) state.jobs.set(j.id, j);
  renderJobs();
  if (!state.formBuilt) {
    const doc = await guard(json("GET", "/openapi.json"));
    if (!doc) return;
    state.fields = buildForm(doc.components.schemas.JobRequest, $("fields-main"), $("fields-more"));
    state.formBuilt = true;
  }
  const hashed = new URLSearchParams(location.hash.slice(1)).get("job");
  watch(hashed && state.jobs.has(hashed) ? hashed : null);
}

// -- the live feed --------------------------------------------------------------------------
function stopFeed() {
  if (state.feed) state.feed.abort();
  state.feed = null;
}

function startFeed() {
  stopFeed();
  const controller = new AbortController();
  state.feed = controller;
  const path = state.watched ? `/live?job=${encodeURIComponent(state.watched)}` : "/live";
  follow(path, {
    signal: controller.signal,
    onAuth: () => askToken("Wrong token: try again."),
    onState: (s) => setConn(s, { connecting: "connecting…", live: "live", reconnecting: "reconnecting…" }[s]),
    onEvent,
  });
}

function onEvent(name, data) {
  if (name === "hello") {
    state.events = [];
    $("timeline").replaceChildren();
  } else if (name === "status") {
    noteRate(data);
    state.jobs.set(data.id, data);
    scheduleJobs();
    if (data.id === state.watched) renderJobHead();
  } else if (name === "tree") {
    state.tree = data;
    renderTree();
  } else if (name === "curves") {
    state.curves = data;
    const r = data.running;
    const job = state.jobs.get(state.watched);
    if (r && job && job.total_steps) {
      const spe = job.total_steps / job.config.epochs;
      const x = r.epoch - 1 + (r.step - (r.epoch - 1) * spe) / spe;
      if (!state.fine.length || state.fine[state.fine.length - 1].x < x) state.fine.push({ x, ...r });
    }
    renderCurves();
  } else if (name === "events") {
    state.events.push(...data);
    renderEvents(data);
  }
}

function noteRate(status) {
  const now = performance.now();
  const prev = state.rates.get(status.id);
  if (status.state !== "running") {
    state.rates.delete(status.id);
    return;
  }
  if (prev && status.step > prev.step && now > prev.t) {
    const rate = ((status.step - prev.step) * status.config.batch_size * 1000) / (now - prev.t);
    state.rates.set(status.id, { t: now, step: status.step, rate: prev.rate ? 0.7 * prev.rate + 0.3 * rate : rate });
  } else if (!prev || status.step < prev.step) {
    state.rates.set(status.id, { t: now, step: status.step, rate: 0 });
  }
}

// -- the jobs list --------------------------------------------------------------------------
const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

function cell(row, text, cls) {
  const td = row.insertCell();
  if (text instanceof Node) td.append(text);
  else td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function button(label, action, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = cls || "";
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    action().catch((e) => setMessage(e.message, "error"));
  });
  return b;
}

// A look may bring many statuses: the table is drawn once per frame.
function scheduleJobs() {
  if (state.jobsFrame) return;
  state.jobsFrame = requestAnimationFrame(() => {
    state.jobsFrame = 0;
    renderJobs();
  });
}

// The job's training algorithm as a person reads it (the config's algorithm and its knob).
function algorithmText(c) {
  if (c.algorithm === "local-sgd") return `local SGD, averaged every ${c.sync_every} steps`;
  if (c.algorithm === "async") return `async SGD, staleness ${c.staleness}`;
  return "synchronous SGD";
}

function renderJobs() {
  const body = $("jobs").tBodies[0];
  const jobs = [...state.jobs.values()].sort((a, b) => b.created - a.created);
  $("no-jobs").hidden = jobs.length > 0;
  body.replaceChildren();
  for (const j of jobs) {
    const row = body.insertRow();
    row.dataset.job = j.id;
    row.dataset.state = j.state;
    row.dataset.step = j.step;
    row.dataset.restarts = j.restarts;
    if (j.id === state.watched) row.classList.add("watched");
    row.addEventListener("click", () => watch(j.id));
    const c = j.config;
    cell(row, j.id, "mono");
    const badge = document.createElement("span");
    badge.className = `state state-${j.state}`;
    badge.textContent = j.state;
    cell(row, badge);
    cell(row, `${[784, ...c.hidden, 10].join("-")} ${c.activation}`).title =
      `${c.dataset}; ${algorithmText(c)}: lr ${c.lr}, momentum ${c.momentum}, batch ${c.batch_size}, ${c.dtype}`;
    cell(row, `${c.backend} × ${c.workers}`);
    const bar = document.createElement("progress");
    bar.max = Math.max(1, j.total_steps);
    bar.value = j.step;
    const wrap = document.createElement("div");
    wrap.className = "progress";
    const label = document.createElement("span");
    label.textContent = `step ${j.step}/${j.total_steps || "?"} · epoch ${j.epoch}/${c.epochs}`;
    wrap.append(bar, label);
    cell(row, wrap);
    const live = state.rates.get(j.id);
    const speed = live && live.rate ? live.rate : j.metrics ? j.metrics.samples_per_second : null;
    cell(row, fmt(speed, 0), "num");
    cell(row, fmt(j.metrics && j.metrics.train_loss, 4), "num");
    cell(row, j.metrics ? `${(j.metrics.test_accuracy * 100).toFixed(2)}%` : "–", "num");
    cell(row, String(j.restarts), "num");
    cell(row, String(j.faults_injected), "num");
    const actions = document.createElement("div");
    actions.className = "actions";
    if (j.state === "queued" || j.state === "running") {
      actions.append(button("cancel", () => cancel(j.id), "cancel"));
    }
    if (j.state === "succeeded" || j.state === "failed") {
      actions.append(button("report", () => download(`/jobs/${j.id}/report`, `${j.id}-report.json`)));
    }
    if (j.state === "succeeded") {
      actions.append(button("model", () => download(`/jobs/${j.id}/model`, `${j.id}-model.safetensors`)));
    }
    cell(row, actions);
    if (j.error) row.title = j.error;
  }
}

async function cancel(id) {
  const status = await guard(json("POST", `/jobs/${id}/cancel`));
  if (status) {
    state.jobs.set(id, status);
    renderJobs();
    setMessage(`job ${id}: cancel requested`);
  }
}

// -- the watched job ------------------------------------------------------------------------
function watch(id) {
  if (id !== state.watched) {
    state.watched = id;
    state.tree = null;
    state.curves = { epochs: [], running: null };
    state.fine = [];
    state.events = [];
    $("timeline").replaceChildren();
    history.replaceState(null, "", id ? `#job=${id}` : "#");
  }
  $("job-panel").hidden = !id;
  if (id) {
    renderJobHead();
    renderCurves();
  }
  renderJobs();
  startFeed();
}

function renderJobHead() {
  const j = state.jobs.get(state.watched);
  if (!j) return;
  $("job-title").textContent = j.id;
  $("job-state").textContent = j.state;
  $("job-state").className = `state state-${j.state}`;
  const target = $("fault-target");
  const wanted = [...Array(j.config.workers).keys()].map((i) => `worker=${i}`).concat(["worker=any", "loader", "coordinator", "pool"]);
  if ([...target.options].map((o) => o.value).join() !== wanted.join()) {
    target.replaceChildren(...wanted.map((v) => new Option(v, v)));
  }
  const at = $("fault-at");
  if (!at.value || document.activeElement !== at) at.placeholder = String(j.step + 1);
}

function renderTree() {
  if (!state.tree || !state.watched) return;
  const job = state.jobs.get(state.watched);
  const running = findJob(state.tree, state.watched);
  $("tree-note").textContent = running ? "" : `This job's tree is not running (${job ? job.state : "unknown"}).`;
  const flashing = drawTree($("tree"), state.tree, state.watched);
  if (flashing) {
    clearTimeout(state.redraw);
    state.redraw = setTimeout(renderTree, 1000); // end the flash without waiting for news
  }
}

function renderCurves() {
  const j = state.jobs.get(state.watched);
  if (!j) return;
  const spe = j.total_steps ? j.total_steps / j.config.epochs : 0;
  drawCurves($("curves"), {
    epochs: state.curves.epochs,
    fine: state.fine,
    epochsTotal: j.config.epochs,
    now: j.state === "running" && spe ? j.step / spe : null,
  });
}

function renderEvents(events) {
  const list = $("timeline");
  for (const e of events) {
    const li = document.createElement("li");
    li.className = `event kind-${e.kind}`;
    li.dataset.kind = e.kind;
    li.dataset.actor = e.actor;
    const time = new Date(e.time * 1000).toLocaleTimeString();
    const recovery = e.recovery_seconds !== undefined ? ` in ${(e.recovery_seconds * 1000).toFixed(1)} ms` : "";
    const pid = e.pid ? ` (pid ${e.pid})` : "";
    const head = document.createElement("span");
    head.className = "what";
    head.textContent = `${time} · step ${e.step} · ${e.kind.replace("_", " ")} · ${e.actor}${pid}`;
    const reason = document.createElement("span");
    reason.className = "why";
    reason.textContent = `${e.reason}${recovery}`;
    li.append(head, reason);
    list.prepend(li);
  }
}

$("fault-kind").addEventListener("change", () => {
  $("fault-slow-label").hidden = $("fault-kind").value !== "slow";
});

$("fault-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const j = state.jobs.get(state.watched);
  if (!j) return;
  const kind = $("fault-kind").value === "slow" ? `slow=${$("fault-seconds").value}` : $("fault-kind").value;
  const at = $("fault-at").value || String(j.step + 1);
  const spec = `${kind}:${$("fault-target").value}@${$("fault-when").value}=${at}`;
  try {
    const status = await guard(json("POST", `/jobs/${j.id}/faults`, { spec }));
    if (status) setFaultMessage(`planned: ${spec}`);
  } catch (e) {
    setFaultMessage(e.message, "error");
  }
});

function setFaultMessage(text, cls) {
  $("fault-message").textContent = text;
  $("fault-message").className = `message ${cls || ""}`;
}

// -- submit ---------------------------------------------------------------------------------
$("submit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const message = $("submit-message");
  try {
    const status = await guard(json("POST", "/jobs", readForm(state.fields)));
    if (!status) return;
    showProblems(state.fields, []);
    message.textContent = `submitted: job ${status.id}`;
    message.className = "message ok";
    state.jobs.set(status.id, status);
    watch(status.id);
  } catch (e) {
    showProblems(state.fields, e.detail);
    message.textContent = e.message;
    message.className = "message error";
  }
});

// -- status line ----------------------------------------------------------------------------
function setConn(s, text) {
  $("conn").dataset.state = s;
  $("conn").textContent = text;
}

function setMessage(text, cls) {
  $("message").textContent = text;
  $("message").className = `message ${cls || ""}`;
}

open();
