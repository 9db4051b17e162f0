// The web view: polls the collector's JSON every few seconds and draws the
// open findings (evidence, a timeline of the signals behind each) and the
// flows of the selected workload. Everything from the cluster is written
// with textContent, never as markup.
"use strict";
const EVERY_MS = Number(new URLSearchParams(location.search).get("every")) || 3000;
const SVG = "http://www.w3.org/2000/svg";
let selected = null; // {namespace, pod, label}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
function num(v) {
  if (Number.isInteger(v)) return String(v);
  return Number(v.toPrecision(4)).toString();
}
function time(ms) {
  return new Date(ms).toISOString().substring(11, 19);
}
function who(w) {
  if (w.pod) return w.namespace + "/" + w.pod + (w.container ? "/" + w.container : "");
  return w.label || "?";
}

function timeline(t) {
  const W = 340, H = 120, L = 30, B = 18;
  const box = svg("svg", { class: "timeline", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  if (!t || !t.points) return box;
  // The axis spans the windows there are and the start, not the whole
  // range asked for, so a young finding is not squeezed to one edge.
  const ts = t.points.map((p) => p.t).concat([t.start]);
  const lo = Math.min(...ts), hi = Math.max(...ts);
  const pad = Math.max(1000, (hi - lo) * 0.05);
  const from = lo - pad, span = hi - lo + 2 * pad;
  const x = (ms) => L + ((ms - from) / span) * (W - L - 6);
  const series = [["open", "open"], ["failed", "failed"], ["dns_timeouts", "dns"]];
  const max = Math.max(1, ...t.points.flatMap((p) => series.map(([k]) => p[k])));
  const y = (v) => H - B - (v / max) * (H - B - 8);
  box.append(svg("line", { x1: L, y1: H - B, x2: W - 6, y2: H - B, stroke: "#ccd" }));
  const lbl = (tx, ty, s, anchor) => {
    const e = svg("text", { x: tx, y: ty, "text-anchor": anchor || "start" });
    e.textContent = s;
    box.append(e);
  };
  lbl(L - 4, 12, num(max), "end");
  lbl(L - 4, H - B, "0", "end");
  lbl(L, H - 4, time(lo));
  lbl(W - 6, H - 4, time(hi), "end");
  const sx = x(t.start);
  box.append(svg("line", { class: "start", x1: sx, y1: 4, x2: sx, y2: H - B }));
  lbl(sx + 3, 12, "start " + time(t.start));
  for (const p of t.points.filter((p) => p.restart)) {
    box.append(svg("line", { class: "restart", x1: x(p.t), y1: 4, x2: x(p.t), y2: H - B, "data-restart": p.t }));
  }
  for (const [k, cls] of series) {
    if (!t.points.some((p) => p[k] > 0)) continue;
    const pts = t.points.map((p) => `${x(p.t).toFixed(1)},${y(p[k]).toFixed(1)}`).join(" ");
    box.append(svg("polyline", { class: cls, points: pts, "data-series": k }));
  }
  return box;
}

function finding(f) {
  const card = el("article", { class: "finding " + f.severity, "data-kind": f.kind });
  const left = el("div");
  const head = el("div", {}, el("span", { class: "kind" }, f.kind), " ", el("span", { class: "sev" }, f.severity + " · " + f.confidence + " confidence"));
  left.append(head, el("p", { class: "summary" }, f.summary));
  const meta = [who(f.subject)];
  if (f.destination) meta.push("→ " + f.destination);
  if (f.dns_name) meta.push("name " + f.dns_name);
  meta.push("since " + time(f.since) + " UTC", "on " + f.nodes.join(", "));
  left.append(el("p", { class: "meta" }, meta.join(" · ")));
  const ev = el("table", { class: "evidence" });
  for (const e of f.evidence) {
    ev.append(el("tr", {}, el("td", { class: "key" }, e.key || "-"), el("td", { class: "num" }, num(e.value) + " " + e.unit), el("td", {}, e.fact + (e.about ? " (" + e.about + ")" : ""))));
  }
  left.append(ev);
  if (f.next_step) left.append(el("p", { class: "meta" }, "Next: " + f.next_step));
  const right = el("div", {}, timeline(f.timeline), el("div", { class: "legend" }, el("span", { class: "l-open" }, "— open sockets"), el("span", { class: "l-failed" }, "— failed connects"), el("span", { class: "l-dns" }, "-- DNS timeouts"), el("span", { class: "l-restart" }, "| listener restarted")));
  card.append(left, right);
  card.addEventListener("click", () => {
    selected = f.subject;
    refresh();
  });
  if (selected && who(selected) === who(f.subject)) card.classList.add("selected");
  return card;
}

async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401 || r.status === 403) {
    location.replace("/ui");
    throw new Error("signed out");
  }
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
  return r.json();
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const d = await getJson("/ui/api/findings");
    if (!selected && d.findings.length) selected = d.findings[0].subject;
    const list = document.getElementById("findings");
    list.replaceChildren(...d.findings.map(finding));
    if (!d.findings.length) list.append(el("p", { class: "hint" }, "No open finding in the last 15 minutes."));
    document.getElementById("count").textContent = `(${d.open}${d.shown < d.open ? ", " + d.shown + " shown" : ""})`;
    if (selected) {
      const q = new URLSearchParams({ namespace: selected.namespace || "", pod: selected.pod || "" });
      const fl = await getJson("/ui/api/flows?" + q);
      document.getElementById("workload").textContent = who(selected);
      // The hint asked for a selection; now it only says when there is nothing to show.
      const hint = document.getElementById("flows-hint");
      hint.textContent = fl.rows.length ? "" : "No flow of this workload in the last 15 minutes.";
      hint.hidden = fl.rows.length > 0;
      document.querySelector("#flows tbody").replaceChildren(...fl.rows.map((r) => el("tr", {}, el("td", {}, r.destination), el("td", { class: "num" }, num(r.connects_ok)), el("td", { class: "num" }, num(r.connects_failed)), el("td", { class: "num" }, num(r.open)), el("td", { class: "num" }, num(r.p99_ms) + " ms"), el("td", {}, r.nodes.join(", ")))));
    }
    status.className = "";
    status.textContent = `updated ${time(d.now)} UTC · ${d.windows} windows read` + (d.dropped_windows ? ` · ${d.dropped_windows} dropped by agents` : "");
  } catch (e) {
    status.className = "stale";
    status.textContent = "not updated: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  refresh();
  setInterval(refresh, EVERY_MS);
});
