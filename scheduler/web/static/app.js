// dfarm dashboard: live parts of the pages, refreshed from the JSON API (/api/...).
// An element with data-poll="/api/..." and data-render="NAME" is redrawn by
// RENDER[NAME] every POLL_MS with the endpoint's JSON.
"use strict";

const POLL_MS = 2000;
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
  queue(el, data) {
    const rows = data.jobs.map((j) => {
      let actions = "";
      if (j.mine) {
        actions = (j.state === "held" ? actionForm(j.id, "release", "/queue") : actionForm(j.id, "hold", "/queue")) +
          " " + actionForm(j.id, "remove", "/queue");
      }
      const id = j.mine ? `<a href="/jobs/${esc(j.id)}">${esc(j.id)}</a>` : esc(j.id);
      return `<tr data-job="${esc(j.id)}"><td>${id}</td><td>${esc(j.owner)}</td>` +
        `<td class="state">${esc(j.state)}</td><td>${esc(j.worker)}</td><td>${duration(j.running_for)}</td>` +
        `<td>${esc(j.position)}</td><td>${esc(j.reason)}</td>` +
        `<td><code>${esc([j.executable, ...j.arguments].join(" "))}</code></td><td>${actions}</td></tr>`;
    });
    el.innerHTML = rows.join("") || '<tr><td colspan="9" class="note">no job in the queue</td></tr>';
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
});
