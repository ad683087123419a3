// The usage page: who is in a room right now (refreshed every few seconds), customers → rooms →
// sessions → participants, and a bar chart of participant minutes per customer per day. Plain JS, no
// build step, no library: everything comes from the read API on this origin. Data is only ever put
// into the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "whereby-read-api-token";
const UNRESOLVED = "(unresolved)";
const LIVE_REFRESH_MS = 5000;
const PALETTE = ["#2456d6", "#e8833a", "#2a9d8f", "#c0392b", "#8e44ad", "#7f8c8d", "#d4a017", "#16a085", "#d35400", "#34495e"];

const $ = (id) => document.getElementById(id);
const state = { level: null, trail: [] };

class Unauthorized extends Error {}

// ---------------------------------------------------------------------------------------- the API

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  // Relative URL: the page also works behind a reverse proxy that mounts it under a path.
  const response = await fetch(path + (query.toString() ? "?" + query : ""), { headers });
  if (response.status === 401) {
    $("auth").hidden = false;
    throw new Unauthorized("this server needs its read API token");
  }
  const doc = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(doc.error || "the read API answered " + response.status);
  return doc;
}

function range() {
  return { from: $("from").value, to: $("to").value };
}

function showError(err) {
  const box = $("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = err.message || String(err);
}

// ------------------------------------------------------------------------------------ formatting

const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
const text = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));
const when = (v) => (v ? v.replace("T", " ").replace(/\.\d{3}Z$/, " UTC") : "–");
const customerLabel = (id, name) => (id === null || id === undefined ? UNRESOLVED : name ? name + " (" + id + ")" : id);

// ------------------------------------------------------------------------------------ drill-down

// Each level: a title, its columns, how to fetch a page, and (optionally) what a row opens.
const LEVELS = {
  customers: (range) => ({
    title: "Customers",
    note: range.from || range.to ? "Usage in the chosen range." : "Usage over all time.",
    columns: [
      { label: "Customer", get: (r) => customerLabel(r.customer_id, r.customer_name), open: true },
      { label: "Participant min", get: (r) => r.participant_minutes, num: true },
      { label: "Recorder min", get: (r) => r.recorder_minutes, num: true },
      { label: "Streamer min", get: (r) => r.streamer_minutes, num: true },
      { label: "Assistant min", get: (r) => r.assistant_minutes, num: true },
      { label: "Captioner min", get: (r) => r.captioner_minutes, num: true },
      { label: "Billable min", get: (r) => r.billable_participant_minutes, num: true },
      { label: "Open", get: (r) => r.open_connections, num: true },
      { label: "No join", get: (r) => r.incomplete_connections, num: true },
      { label: "Estimated", get: (r) => r.estimated_connections, num: true },
      { label: "Sessions", get: (r) => r.sessions, num: true },
      { label: "Users", get: (r) => r.unique_users, num: true },
    ],
    fetch: async () => ({ results: (await api("usage/customers", range)).results, cursor: null }),
    rowClass: (r) => (r.customer_id === null ? "unresolved" : ""),
    open: (r) => ({
      key: "rooms",
      label: customerLabel(r.customer_id, r.customer_name),
      filter: r.customer_id === null ? { unresolved: "true" } : { customer_id: r.customer_id },
    }),
  }),
  rooms: (_range, step) => ({
    title: "Rooms of " + step.label,
    note: "All time, as Whereby's Insights.",
    columns: [
      { label: "Room", get: (r) => r.roomName, open: true },
      { label: "Participant min", get: (r) => r.totalParticipantMinutes, num: true },
      { label: "Recorder min", get: (r) => r.totalRecorderMinutes, num: true },
      { label: "Assistant min", get: (r) => r.totalAssistantMinutes, num: true },
      { label: "Captioner min", get: (r) => r.totalCaptionerMinutes, num: true },
      { label: "Open", get: (r) => r.openConnections, num: true },
      { label: "Sessions", get: (r) => r.totalSessions, num: true },
      { label: "Participants", get: (r) => r.totalUniqueParticipants, num: true },
      { label: "Last session", get: (r) => when(r.lastSessionStartedAt) },
    ],
    paged: (cursor) => api("insights/rooms", { ...step.filter, limit: 25, cursor }),
    open: (r) => ({ key: "sessions", label: r.roomName, filter: { roomName: r.roomName } }),
  }),
  sessions: (_range, step) => ({
    title: "Sessions in " + step.label,
    note: "Newest first.",
    columns: [
      { label: "Session", get: (r) => r.roomSessionId, open: true },
      { label: "Started", get: (r) => when(r.startedAt) },
      { label: "Ended", get: (r) => when(r.endedAt) },
      { label: "Participant min", get: (r) => r.totalParticipantMinutes, num: true },
      { label: "Assistant min", get: (r) => r.totalAssistantMinutes, num: true },
      { label: "Participants", get: (r) => r.totalUniqueParticipants, num: true },
      { label: "Open", get: (r) => r.openConnections, num: true },
      { label: "No join", get: (r) => r.incompleteConnections, num: true },
    ],
    paged: (cursor) => api("insights/room-sessions", { ...step.filter, limit: 25, cursor }),
    open: (r) => ({ key: "participants", label: r.roomSessionId, filter: { roomSessionId: r.roomSessionId } }),
  }),
  participants: (_range, step) => ({
    title: "Participants of session " + step.label,
    note: "",
    columns: [
      { label: "Name", get: (r) => text(r.displayName) },
      { label: "User", get: (r) => text(r.userId) },
      { label: "External id", get: (r) => text(r.externalId) },
      { label: "Role", get: (r) => text(r.roleName) },
      { label: "Joined", get: (r) => when(r.joinedAt) },
      { label: "Left", get: (r) => (r.isOpen ? "still in the room" : r.isIncomplete ? "(join lost) " + when(r.leftAt) : when(r.leftAt)) },
      { label: "Ended by", get: (r) => text(r.endSource) },
      { label: "Minutes", get: (r) => r.minutes, num: true },
    ],
    paged: (cursor) => api("insights/participants", { ...step.filter, limit: 25, cursor }),
  }),
};

function renderCrumbs() {
  const nav = $("crumbs");
  nav.replaceChildren();
  const steps = [{ key: "customers", label: "Customers" }, ...state.trail];
  steps.forEach((step, i) => {
    if (i > 0) {
      const sep = document.createElement("span");
      sep.className = "sep";
      sep.textContent = "›";
      nav.append(sep);
    }
    if (i === steps.length - 1) {
      const here = document.createElement("span");
      here.textContent = step.label;
      nav.append(here);
    } else {
      const back = document.createElement("button");
      back.type = "button";
      back.className = "link";
      back.textContent = step.label;
      back.addEventListener("click", () => {
        state.trail = state.trail.slice(0, i);
        show();
      });
      nav.append(back);
    }
  });
}

function appendRows(level, rows) {
  const body = $("table").tBodies[0];
  for (const row of rows) {
    const tr = document.createElement("tr");
    const cls = level.rowClass ? level.rowClass(row) : "";
    if (cls) tr.className = cls;
    for (const col of level.columns) {
      const td = document.createElement("td");
      const value = col.get(row);
      const shown = col.num ? num(value) : text(value);
      if (col.num) td.className = "num";
      if (col.open && level.open) {
        const link = document.createElement("button");
        link.type = "button";
        link.className = "link";
        link.textContent = shown;
        link.addEventListener("click", () => {
          state.trail.push(level.open(row));
          show();
        });
        td.append(link);
      } else {
        td.textContent = shown;
      }
      tr.append(td);
    }
    body.append(tr);
  }
}

async function show() {
  const step = state.trail[state.trail.length - 1] || { key: "customers" };
  const level = LEVELS[step.key](range(), step);
  state.level = level;
  renderCrumbs();
  $("view-title").textContent = level.title;
  $("view-note").textContent = level.note;
  const head = document.createElement("tr");
  for (const col of level.columns) {
    const th = document.createElement("th");
    th.textContent = col.label;
    if (col.num) th.className = "num";
    head.append(th);
  }
  $("table").tHead.replaceChildren(head);
  $("table").tBodies[0].replaceChildren();
  $("table").dataset.level = step.key;
  $("table").dataset.loaded = "false";
  const more = $("more");
  more.hidden = true;

  const load = async (cursor) => {
    const page = level.paged ? await level.paged(cursor) : await level.fetch();
    if (state.level !== level) return; // the user moved on meanwhile
    appendRows(level, page.results);
    if (!page.results.length && !cursor) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = level.columns.length;
      td.className = "hint";
      td.textContent = "Nothing here yet.";
      tr.append(td);
      $("table").tBodies[0].append(tr);
    }
    more.hidden = !page.cursor;
    more.onclick = () => guarded(() => load(page.cursor));
    $("table").dataset.loaded = "true";
  };
  await guarded(() => load(null));
}

async function guarded(work) {
  try {
    showError(null);
    await work();
  } catch (err) {
    showError(err);
  }
}

// ----------------------------------------------------------------------------------------- chart

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attrs, title) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (title) {
    const t = document.createElementNS(SVG, "title");
    t.textContent = title;
    el.append(t);
  }
  return el;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const step = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

// Stacked bars: one bar per UTC day, one segment per customer (the unresolved bucket included).
function drawChart(rows) {
  const chart = $("chart");
  const legend = $("legend");
  chart.replaceChildren();
  legend.replaceChildren();
  if (!rows.length) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = "No participant minutes in this range yet.";
    chart.append(p);
    return;
  }
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const customers = [];
  for (const r of rows) {
    const key = r.customer_id === null ? "" : r.customer_id;
    if (!customers.some((c) => c.key === key)) customers.push({ key, label: customerLabel(r.customer_id, r.customer_name) });
  }
  customers.forEach((c, i) => (c.color = c.key === "" ? "#9aa3b2" : PALETTE[i % PALETTE.length]));
  const colorOf = Object.fromEntries(customers.map((c) => [c.key, c]));
  const totals = Object.fromEntries(days.map((d) => [d, 0]));
  for (const r of rows) totals[r.day] += r.participant_minutes;
  const top = niceMax(Math.max(...Object.values(totals)));

  const width = 760;
  const height = 260;
  const pad = { left: 48, right: 12, top: 12, bottom: 40 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = plotW / days.length;
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Participant minutes per customer per day" });
  for (let i = 0; i <= 4; i++) {
    const v = (top / 4) * i;
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = num(Math.round(v));
    root.append(label);
  }
  const labelEvery = Math.ceil(days.length / 12);
  days.forEach((day, i) => {
    const x = pad.left + slot * i + (slot - barW) / 2;
    let base = 0;
    for (const r of rows.filter((row) => row.day === day)) {
      const c = colorOf[r.customer_id === null ? "" : r.customer_id];
      const h = (r.participant_minutes / top) * plotH;
      const bar = svg(
        "rect",
        { x, y: y(base + r.participant_minutes), width: barW, height: Math.max(0, h), fill: c.color, class: "bar", "data-day": day, "data-customer": c.label, "data-minutes": r.participant_minutes },
        `${day} · ${c.label}: ${num(r.participant_minutes)} participant minutes`,
      );
      root.append(bar);
      base += r.participant_minutes;
    }
    if (i % labelEvery === 0) {
      const label = svg("text", { x: x + barW / 2, y: height - pad.bottom + 16, "text-anchor": "middle" });
      label.textContent = day.slice(5);
      root.append(label);
    }
  });
  const axis = svg("text", { x: pad.left, y: height - 6 });
  axis.textContent = `UTC days ${days[0]} – ${days[days.length - 1]}; minutes`;
  root.append(axis);
  chart.append(root);

  for (const c of customers) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = c.color;
    li.append(swatch, document.createTextNode(c.label));
    legend.append(li);
  }
}

async function loadChart() {
  const doc = await api("usage/customer-days", range());
  drawChart(doc.results);
}

// ------------------------------------------------------------------------------------ live rooms

// Seconds as "4 min 5 s" (negative: the host was there first).
function gap(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const sign = seconds < 0 ? "−" : "";
  const s = Math.round(Math.abs(seconds));
  return sign + (s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s");
}

function cellList(items) {
  const td = document.createElement("td");
  for (const item of items) {
    const div = document.createElement("div");
    div.textContent = item.text;
    if (item.className) div.className = item.className;
    td.append(div);
  }
  return td;
}

function textCell(value, className) {
  const td = document.createElement("td");
  td.textContent = value;
  if (className) td.className = className;
  return td;
}

// One row per room: its sessions' arrival times, and the people in it (stale connections, open far
// longer than any meeting, are listed apart: their `left` was most likely lost).
function drawLive(doc) {
  const body = $("live").tBodies[0];
  body.replaceChildren();
  if (!doc.results.length) {
    const tr = document.createElement("tr");
    const td = textCell("Nobody is in a room right now.", "hint");
    td.colSpan = 7;
    tr.append(td);
    body.append(tr);
  }
  for (const room of doc.results) {
    const tr = document.createElement("tr");
    tr.dataset.room = room.room_name;
    if (!room.present) tr.className = "stale";
    const sessions = room.sessions.length ? room.sessions : [{}];
    tr.append(
      textCell(room.room_name),
      textCell(customerLabel(room.customer_id, room.customer_name)),
      cellList(sessions.map((s) => ({ text: when(s.started_at) }))),
      cellList(sessions.map((s) => ({ text: when(s.first_host_joined_at) }))),
      cellList(sessions.map((s) => ({ text: when(s.first_guest_joined_at) }))),
      cellList(sessions.map((s) => ({ text: gap(s.host_after_guest_s), className: s.host_after_guest_s > 0 ? "late" : "" }))),
      cellList(
        room.participants.map((p) => ({
          text:
            [text(p.display_name), p.role_name || p.party, p.user_id || p.user_key || p.external_id].filter(Boolean).join(" · ") +
            " — since " + when(p.joined_at) + (p.stale ? " (stale)" : ""),
          className: p.stale ? "stale" : "",
        })),
      ),
    );
    body.append(tr);
  }
  const present = doc.results.reduce((n, r) => n + r.present, 0);
  const stale = doc.results.reduce((n, r) => n + r.stale, 0);
  $("live-note").textContent =
    `${present} in ${doc.results.filter((r) => r.present).length} rooms as of ${when(doc.as_of)}` +
    (stale ? `; ${stale} stale (open over ${Math.round(doc.stale_after_s / 3600)} h)` : "") +
    (doc.truncated ? "; list cut short" : "") + ". Refreshed every few seconds.";
  $("live").dataset.loaded = "true";
}

// Its own errors go in its own note: a refresh every few seconds must not clear the page's error box.
let liveBusy = false;
async function loadLive() {
  if (liveBusy || document.hidden) return; // no pile-up, nothing while the tab is hidden
  liveBusy = true;
  try {
    drawLive(await api("live/rooms"));
  } catch (err) {
    $("live-note").textContent = "Could not refresh: " + (err.message || String(err));
  } finally {
    liveBusy = false;
  }
}

// ------------------------------------------------------------------------------------------ start

function refresh() {
  state.trail = [];
  loadLive();
  guarded(loadChart);
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  $("range").addEventListener("submit", (e) => {
    e.preventDefault();
    refresh();
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("auth").hidden = true;
    refresh();
  });
  refresh();
  setInterval(loadLive, LIVE_REFRESH_MS);
});
