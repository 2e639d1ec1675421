// dfarm dashboard: live parts of the pages, refreshed from the JSON API (/api/...).
// An element with data-poll="/api/..." and data-render="NAME" is redrawn by
// RENDER[NAME] every POLL_MS with the endpoint's JSON. The queue's table
// (data-stream="/api/events") follows the changes of its jobs from the event
// stream instead, and reads its page again (data-page) only after changes.
"use strict";

const POLL_MS = 2000;
// Milliseconds after a change before the queue's page is read again: changes in
// between are read together.
const REREAD_MS = 3000;
const CSRF = () => document.querySelector('meta[name="csrf-token"]').content;

function esc(value) {
  const div = document.createElement("div");
  div.textContent = value === null || value === undefined ? "-" : String(value);
  return div.innerHTML;
}

function get(data, path) {
  return path.split(".").reduce((o, k) => (o === null || o === undefined ? o : o[k]), data);
}

function fillFields(root, data) {
  root.querySelectorAll("[data-field]").forEach((el) => {
    const value = get(data, el.dataset.field);
    if (value !== undefined) el.textContent = value === null ? "-" : value;
  });
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.floor(seconds), pad = (n) => String(n).padStart(2, "0");
  return `${Math.floor(s / 86400)}+${pad(Math.floor((s % 86400) / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function when(t) {
  if (t === null || t === undefined) return "-";
  const d = new Date(t * 1000), pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getMonth() + 1)}/${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function actionForm(id, action, next) {
  return `<form method="post" action="/jobs/${esc(id)}/${action}" class="inline">` +
    `<input type="hidden" name="csrf" value="${esc(CSRF())}">` +
    `<input type="hidden" name="next" value="${esc(next)}">` +
    `<button type="submit" name="do" value="${action}">${action}</button></form>`;
}

const RENDER = {
  overview(el, data) {
    fillFields(el, data);
    const rows = data.users.map((u) =>
      `<tr><td>${esc(u.user)}</td><td>${Math.round(u.effective_usage)}</td>` +
      `<td>${Math.round(u.share * 100)} %</td><td>${u.idle}</td><td>${u.running}</td>` +
      `<td>${u.running_cpus}</td><td>${u.rank || "-"}</td></tr>`);
    el.querySelector("#users").innerHTML = rows.join("") || '<tr><td colspan="7" class="note">no usage yet</td></tr>';
  },
  workers(el, workers) {
    const rows = workers.map((w) => `<tr data-worker="${esc(w.name)}">` +
      `<td><a href="/workers/${encodeURIComponent(w.name)}">${esc(w.name)}</a></td><td>${esc(w.state)}</td>` +
      `<td>${w.slots_used}/${w.slots_total}</td><td>${w.cpus_used}/${w.metrics.cores}</td>` +
      `<td>${w.metrics.threads}</td><td>${w.metrics.memory_available_mb} MB</td>` +
      `<td>${w.gpus_used}/${w.gpus_total}</td><td>${(w.metrics.load_avg[0] || 0).toFixed(2)}</td>` +
      `<td>${when(w.last_heartbeat)}</td></tr>`);
    el.innerHTML = rows.join("") || '<tr><td colspan="9" class="note">no worker is connected</td></tr>';
  },
  charts(el, data) {
    data.charts.forEach((c) => {
      const fig = el.querySelector(`[data-chart="${c.key}"]`);
      if (!fig) return;
      fig.querySelector("polyline").setAttribute("points", c.points);
      fig.querySelector(".last").textContent = c.last === null ? "-" : +c.last.toPrecision(6);
      fig.querySelector(".max").textContent = +c.max.toPrecision(6);
    });
  },
  queue(table, data) {
    const next = table.dataset.page.replace(/^\/api/, "");
    const rows = data.jobs.map((j) => queueRow(j, next));
    table.tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="9" class="note">no job in the queue</td></tr>';
    Object.entries(data.counts).forEach(([state, n]) => {
      const el = document.querySelector(`[data-count="${state}"]`);
      if (el) el.textContent = n;
    });
    const set = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = value; };
    set("first", data.jobs.length ? data.offset + 1 : 0);
    set("last", data.offset + data.jobs.length);
    set("total", data.total);
  },
  job(el, data) {
    // data: /api/jobs?ids=ID&states=all, the job's dq record (none once it is gone).
    // The page is redrawn whole once the job changes state: its output, files and
    // events come with the new state.
    if (data.length && data[0].state !== el.dataset.state) window.location.reload();
  },
  output(el, data) {
    if (el.textContent !== data.text) el.textContent = data.text;
  },
  sweep(el, data) {
    fillFields(el, data);
    if (String(data.results) !== el.dataset.results || String(data.pending) !== el.dataset.pending) {
      window.location.reload();
    }
  },
};

function actions(j, next) {
  if (!j.mine) return "";
  return (j.state === "held" ? actionForm(j.id, "release", next) : actionForm(j.id, "hold", next)) +
    " " + actionForm(j.id, "remove", next);
}

function queueRow(j, next) {
  const id = j.mine ? `<a href="/jobs/${esc(j.id)}">${esc(j.id)}</a>` : esc(j.id);
  const seconds = j.running_for === null || j.running_for === undefined ? "" : j.running_for;
  return `<tr data-job="${esc(j.id)}" data-mine="${j.mine ? 1 : 0}"><td>${id}</td><td>${esc(j.owner)}</td>` +
    `<td class="state">${esc(j.state)}</td><td class="worker">${esc(j.worker)}</td>` +
    `<td class="running-for" data-seconds="${seconds}">${duration(j.running_for)}</td>` +
    `<td class="position">${esc(j.position)}</td><td class="reason">${esc(j.reason)}</td>` +
    `<td><code>${esc([j.executable, ...j.arguments].join(" "))}</code></td>` +
    `<td class="actions">${actions(j, next)}</td></tr>`;
}

// The queue's table: each pushed change is shown in its row at once; the page
// (places in line, counts, jobs that came or went) is read again a little later.
function followQueue(table) {
  const next = table.dataset.page.replace(/^\/api/, "");
  let timer = null;
  // When the running times (data-seconds) were read.
  let started = Date.now();
  const reread = async () => {
    timer = null;
    try {
      const response = await fetch(table.dataset.page, { headers: { Accept: "application/json" } });
      if (response.status === 401) { window.location.assign("/login"); return; }
      if (response.ok) { RENDER.queue(table, await response.json()); started = Date.now(); }
    } catch (err) {
      // The scheduler is restarting: the stream's reconnection reads the page again.
    }
  };
  const soon = () => { if (timer === null) timer = setTimeout(reread, REREAD_MS); };
  const source = new EventSource(table.dataset.stream);
  let opened = false;
  source.addEventListener("open", () => { if (opened) soon(); opened = true; });
  source.addEventListener("jobs", (event) => {
    JSON.parse(event.data).jobs.forEach((j) => {
      const row = table.querySelector(`tr[data-job="${CSS.escape(j.id)}"]`);
      if (!row) return;
      const state = row.querySelector(".state");
      if (state.textContent !== j.state) {
        row.querySelector(".position").textContent = "-";
        row.querySelector(".reason").textContent = j.reason || "";
        row.querySelector(".actions").innerHTML = ["completed", "removed"].includes(j.state) ? "" : actions(j, next);
      }
      state.textContent = j.state;
      row.querySelector(".worker").textContent = j.worker === null ? "-" : j.worker;
      const running = row.querySelector(".running-for");
      running.dataset.seconds = j.running_for === null ? "" : j.running_for - (Date.now() - started) / 1000;
      running.textContent = duration(j.running_for);
    });
    soon();
  });
  source.addEventListener("resync", reread);
  source.addEventListener("logout", () => { source.close(); window.location.assign("/login"); });
  // Running times tick here, not by asking the scheduler.
  setInterval(() => {
    const elapsed = (Date.now() - started) / 1000;
    table.querySelectorAll(".running-for").forEach((el) => {
      if (el.dataset.seconds !== "") el.textContent = duration(+el.dataset.seconds + elapsed);
    });
  }, 1000);
}

async function poll(el) {
  try {
    const response = await fetch(el.dataset.poll, { headers: { Accept: "application/json" } });
    if (response.status === 401) { window.location.assign("/login"); return; }
    if (response.ok) RENDER[el.dataset.render](el, await response.json());
  } catch (err) {
    // The scheduler is restarting or the network is down: try again next time.
  }
  setTimeout(() => poll(el), POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-poll]").forEach((el) => setTimeout(() => poll(el), POLL_MS));
  document.querySelectorAll("[data-stream]").forEach(followQueue);
});
