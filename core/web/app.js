// Connect diagnostics dashboard. Reads snapshots from /diagnostics/events
// (server-sent events, one a second) and shows them. No libraries, no
// network fetches beyond this server, no actions on the server.
"use strict";

(function () {
  const HISTORY = 120; // points in the charts: two minutes at one a second
  const SVGNS = "http://www.w3.org/2000/svg";
  const history = []; // {t, in, out, p50, p99, rtt}
  let paused = false;
  let last = null; // the last snapshot received
  let source = null;

  const $ = (id) => document.getElementById(id);

  // ---- formatting ----
  function bytes(n) {
    if (!isFinite(n) || n <= 0) return "0 B";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + u[i];
  }
  const rate = (n) => bytes(n) + "/s";
  function num(n) {
    if (!isFinite(n)) return "0";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }
  function micros(us) {
    if (!isFinite(us) || us <= 0) return "–";
    if (us < 1000) return us.toFixed(0) + " µs";
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + " ms";
    return (us / 1e6).toFixed(2) + " s";
  }
  function duration(sec) {
    if (!isFinite(sec) || sec < 0) return "–";
    sec = Math.floor(sec);
    const d = Math.floor(sec / 86400), h = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60, s = sec % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + s + "s";
    return s + "s";
  }
  function ago(ms, now) {
    if (!ms) return "–";
    return duration((now - ms) / 1000) + " ago";
  }
  const short = (id) => (id && id.length > 13 ? id.slice(0, 8) + "…" : id || "–");

  // ---- tables ----
  // cell describes one table cell: its text, an optional raw value (kept
  // in data-value for scripts and tests), a field name, a title.
  function cell(field, text, opts) {
    const td = document.createElement("td");
    td.dataset.field = field;
    td.textContent = text;
    if (opts && opts.value !== undefined) td.dataset.value = String(opts.value);
    if (opts && opts.title) td.title = opts.title;
    if (opts && opts.num) td.className = "num";
    if (opts && opts.cls) td.classList.add(opts.cls);
    return td;
  }
  function fill(tableId, rows, empty, columns) {
    const tbody = $(tableId).tBodies[0];
    const frag = document.createDocumentFragment();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = columns;
      td.className = "empty";
      td.textContent = empty;
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    for (const r of rows) frag.appendChild(r);
    tbody.replaceChildren(frag);
  }
  function row(key, name, cells) {
    const tr = document.createElement("tr");
    tr.dataset[key] = name;
    for (const c of cells) tr.appendChild(c);
    return tr;
  }
  function stateCell(state) {
    const td = cell("state", state || "–");
    td.classList.add("state", "state-" + (state || "unknown").replace(/[^a-z]/g, ""));
    return td;
  }

  function renderClients(snap, now) {
    const filter = $("client-filter").value.trim().toLowerCase();
    const list = snap.clients.filter((c) => !filter ||
      [c.id, c.name, c.remote, c.bearer, c.auth].some((v) => (v || "").toLowerCase().includes(filter)));
    const rows = list.map((c) => row("clientId", c.id, [
      cell("id", short(c.id), { title: c.id, value: c.id, cls: "mono" }),
      cell("name", c.name || "–"),
      cell("bearer", c.bearer, { title: c.bearerType }),
      cell("remote", c.remote, { cls: "mono" }),
      stateCell(c.state),
      cell("connected", ago(c.connectedSinceUnixMillis, now), { value: c.connectedSinceUnixMillis }),
      cell("rtt", c.rttSamples > 0 ? micros(c.rttMinMicros) + " / " + micros(c.rttAvgMicros) + " / " + micros(c.rttMaxMicros) : "–",
        { num: true, value: c.rttAvgMicros, title: c.rttSamples + " keepalive round trips; last " + micros(c.rttLastMicros) }),
      cell("bytesIn", bytes(c.bytesIn), { num: true, value: c.bytesIn }),
      cell("bytesOut", bytes(c.bytesOut), { num: true, value: c.bytesOut }),
      cell("bytesInPerSec", rate(c.bytesInPerSec), { num: true, value: c.bytesInPerSec }),
      cell("bytesOutPerSec", rate(c.bytesOutPerSec), { num: true, value: c.bytesOutPerSec }),
      cell("messages", num(c.messagesIn) + " / " + num(c.messagesOut), { num: true, value: c.messagesIn + c.messagesOut,
        title: num(c.messagesInPerSec) + " in/s, " + num(c.messagesOutPerSec) + " out/s" }),
      cell("sessions", num(c.sessions), { num: true, value: c.sessions }),
      cell("resumes", num(c.resumes), { num: true, value: c.resumes }),
      cell("linkBreaks", num(c.linkBreaks), { num: true, value: c.linkBreaks }),
      cell("replay", bytes(c.replayBufferedBytes), { num: true, value: c.replayBufferedBytes }),
    ]));
    fill("clients-table", rows, filter ? "No client matches the filter." : "No client is connected.", 16);
    let count = String(snap.server.clients);
    if (snap.server.clients > snap.clients.length) count += " (the " + snap.clients.length + " busiest shown)";
    $("clients-count").textContent = count;
  }

  function renderSessions(snap, now) {
    const rows = snap.sessions.map((s) => row("sessionId", s.id, [
      cell("id", short(s.id), { title: s.id, value: s.id, cls: "mono" }),
      cell("service", s.service),
      cell("client", short(s.clientId), { title: s.clientId, value: s.clientId, cls: "mono" }),
      cell("since", ago(s.sinceUnixMillis, now), { value: s.sinceUnixMillis }),
      cell("calls", num(s.calls), { num: true, value: s.calls }),
      cell("subscriptions", num(s.subscriptions), { num: true, value: s.subscriptions }),
      cell("watches", num(s.watches), { num: true, value: s.watches }),
      cell("links", s.links.map((l) => l.name + " (" + l.type + "): " + num(l.messagesIn) + " / " + num(l.messagesOut)).join(", ") || "–"),
    ]));
    fill("sessions-table", rows, "No session is open.", 8);
    let count = String(snap.server.sessions);
    if (snap.server.sessions > snap.sessions.length) count += " (the " + snap.sessions.length + " busiest shown)";
    $("sessions-count").textContent = count;
  }

  function renderServices(snap) {
    const rows = snap.services.map((s) => row("service", s.name, [
      cell("name", s.name),
      cell("version", s.version || "–"),
      stateCell(s.state),
      cell("sessions", num(s.sessions), { num: true, value: s.sessions }),
      cell("calls", num(s.calls), { num: true, value: s.calls }),
      cell("callsPerSec", num(s.callsPerSec), { num: true, value: s.callsPerSec }),
      cell("errors", num(s.errors), { num: true, value: s.errors }),
      cell("events", num(s.events), { num: true, value: s.events }),
      cell("p50", micros(s.latencyP50Micros), { num: true, value: s.latencyP50Micros, title: s.latencyCalls + " calls in the last interval" }),
      cell("p99", micros(s.latencyP99Micros), { num: true, value: s.latencyP99Micros, title: s.latencyCalls + " calls in the last interval" }),
    ]));
    fill("services-table", rows, "No service is configured.", 10);
    // The latency chart's service choice.
    const sel = $("latency-service");
    const names = snap.services.map((s) => s.name);
    const have = Array.from(sel.options).map((o) => o.value);
    if (names.join("\n") !== have.join("\n")) {
      const keep = sel.value;
      sel.replaceChildren(...names.map((n) => { const o = document.createElement("option"); o.value = n; o.textContent = n; return o; }));
      if (names.includes(keep)) sel.value = keep;
      else {
        const busiest = snap.services.slice().sort((a, b) => b.calls - a.calls)[0];
        if (busiest) sel.value = busiest.name;
      }
    }
  }

  function renderBearers(snap) {
    const rows = snap.bearers.map((b) => row("bearer", b.name, [
      cell("name", b.name),
      cell("type", b.type),
      cell("endpoint", b.endpoint || "–", { cls: "mono" }),
      stateCell(b.state),
      cell("clients", num(b.clients), { num: true, value: b.clients }),
      cell("connections", num(b.connections), { num: true, value: b.connections }),
      cell("acceptErrors", num(b.acceptErrors), { num: true, value: b.acceptErrors }),
      cell("bytesIn", bytes(b.bytesIn), { num: true, value: b.bytesIn }),
      cell("bytesOut", bytes(b.bytesOut), { num: true, value: b.bytesOut }),
      cell("bytesInPerSec", rate(b.bytesInPerSec), { num: true, value: b.bytesInPerSec }),
      cell("bytesOutPerSec", rate(b.bytesOutPerSec), { num: true, value: b.bytesOutPerSec }),
    ]));
    fill("bearers-table", rows, "No connection adapter.", 11);
  }

  function renderPlugins(snap, now) {
    const rows = snap.plugins.map((p) => row("plugin", p.kind + ":" + p.name, [
      cell("kind", p.kind),
      cell("name", p.name),
      stateCell(p.state),
      cell("pid", p.pid > 0 ? String(p.pid) : "–", { num: true, value: p.pid }),
      cell("restarts", num(p.restarts), { num: true, value: p.restarts }),
      cell("rss", p.rssBytes > 0 ? bytes(p.rssBytes) : "–", { num: true, value: p.rssBytes }),
      cell("since", ago(p.sinceUnixMillis, now), { value: p.sinceUnixMillis }),
      cell("lastError", p.lastError || "–", { title: p.lastError || "" }),
    ]));
    fill("plugins-table", rows, "No plugin.", 8);
  }

  // ---- charts ----
  function svg(tag, attrs) {
    const el = document.createElementNS(SVGNS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }
  // chart draws series (arrays of numbers, oldest first, HISTORY long at
  // most) into an SVG of 600×160 with a max label and a baseline.
  function chart(id, series, format) {
    const el = $(id);
    const W = 600, H = 160, top = 14, bottom = H - 4, left = 2, right = W - 2;
    let max = 0;
    for (const s of series) for (const v of s.values) if (isFinite(v) && v > max) max = v;
    const scale = max > 0 ? max * 1.1 : 1;
    const parts = [
      svg("line", { x1: left, y1: bottom, x2: right, y2: bottom, class: "axis" }),
      svg("line", { x1: left, y1: top, x2: right, y2: top, class: "grid" }),
    ];
    const label = svg("text", { x: left + 2, y: top - 3, class: "label" });
    label.textContent = "max " + format(max);
    parts.push(label);
    for (const s of series) {
      const n = s.values.length;
      // A missing value (NaN: no calls in that second) breaks the line; a
      // lone point is drawn as a dot.
      let seg = [];
      const flush = () => {
        if (seg.length === 1) {
          const [x, y] = seg[0].split(",");
          parts.push(svg("circle", { cx: x, cy: y, r: 1.8, class: "dot " + s.cls }));
        } else if (seg.length > 1) {
          parts.push(svg("polyline", { points: seg.join(" "), class: "series " + s.cls }));
        }
        seg = [];
      };
      s.values.forEach((v, i) => {
        if (!isFinite(v)) { flush(); return; }
        const x = right - (n - 1 - i) * (right - left) / (HISTORY - 1);
        const y = bottom - v / scale * (bottom - top);
        seg.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      flush();
    }
    el.replaceChildren(...parts);
  }

  function record(snap) {
    const svc = snap.services.find((s) => s.name === $("latency-service").value);
    const withRtt = snap.clients.filter((c) => c.rttSamples > 0);
    history.push({
      in: snap.totals.bytesInPerSec, out: snap.totals.bytesOutPerSec,
      p50: svc && svc.latencyCalls > 0 ? svc.latencyP50Micros : NaN,
      p99: svc && svc.latencyCalls > 0 ? svc.latencyP99Micros : NaN,
      rtt: withRtt.length ? withRtt.reduce((a, c) => a + c.rttAvgMicros, 0) / withRtt.length : NaN,
    });
    while (history.length > HISTORY) history.shift();
  }

  function drawCharts() {
    chart("chart-throughput", [
      { cls: "in", values: history.map((h) => h.in) },
      { cls: "out", values: history.map((h) => h.out) },
    ], rate);
    chart("chart-latency", [
      { cls: "p50", values: history.map((h) => h.p50) },
      { cls: "p99", values: history.map((h) => h.p99) },
      { cls: "rtt", values: history.map((h) => h.rtt) },
    ], micros);
  }

  // ---- the page ----
  function render(snap) {
    const now = snap.server.timeUnixMillis || Date.now();
    $("server-id").textContent = snap.server.id ? "server " + short(snap.server.id) : "–";
    $("server-id").title = snap.server.id;
    $("server-version").textContent = snap.server.version;
    $("uptime").textContent = duration(snap.server.uptimeSeconds);
    $("t-clients").textContent = num(snap.server.clients);
    $("t-connecting").textContent = num(snap.server.connecting);
    $("t-sessions").textContent = num(snap.server.sessions);
    $("t-in").textContent = rate(snap.totals.bytesInPerSec);
    $("t-out").textContent = rate(snap.totals.bytesOutPerSec);
    $("t-msgs").textContent = num(snap.totals.messagesInPerSec + snap.totals.messagesOutPerSec);
    $("t-calls").textContent = num(snap.totals.callsPerSec);
    $("t-errors").textContent = num(snap.totals.callErrors);
    $("t-rss").textContent = bytes(snap.server.rssBytes);
    renderClients(snap, now);
    renderSessions(snap, now);
    renderServices(snap);
    renderBearers(snap);
    renderPlugins(snap, now);
    drawCharts();
    document.body.dataset.updated = String(now);
  }

  function setStatus(text, cls) {
    const st = $("status");
    st.textContent = text;
    st.className = "status " + cls;
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/diagnostics/events");
    source.addEventListener("snapshot", (ev) => {
      let snap;
      try {
        snap = JSON.parse(ev.data);
      } catch (e) {
        setStatus("bad data from the server", "bad");
        return;
      }
      last = snap;
      record(snap);
      if (!paused) {
        render(snap);
        setStatus("live", "ok");
      }
    });
    source.addEventListener("open", () => setStatus(paused ? "paused" : "live", paused ? "paused" : "ok"));
    source.addEventListener("error", () => {
      // EventSource reconnects by itself; say so.
      setStatus("disconnected: retrying…", "bad");
    });
  }

  function togglePause() {
    paused = !paused;
    const b = $("pause");
    b.setAttribute("aria-pressed", String(paused));
    b.textContent = paused ? "Resume" : "Pause";
    setStatus(paused ? "paused" : "live", paused ? "paused" : "ok");
    if (!paused && last) render(last);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("pause").addEventListener("click", togglePause);
    $("client-filter").addEventListener("input", () => { if (last) renderClients(last, last.server.timeUnixMillis || Date.now()); });
    $("latency-service").addEventListener("change", () => { history.length = 0; if (last) drawCharts(); });
    document.addEventListener("keydown", (ev) => {
      const t = ev.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
      if (ev.key === "p" && !ev.ctrlKey && !ev.metaKey && !ev.altKey) togglePause();
      if (ev.key === "/" ) { ev.preventDefault(); $("client-filter").focus(); }
    });
    connect();
  });
})();
