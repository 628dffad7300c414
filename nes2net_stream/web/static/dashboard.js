// Live dashboard: calls, alerts and one call's timeline from the service's SSE feed.
// The feed resumes after the last stream id it delivered (Last-Event-ID), and events are
// de-duplicated on event_id, so an alert is never shown twice or skipped after a reconnect.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const HISTORY_S = 900;
  const MAX_ENDED = 40;
  const MAX_ALERTS = 200;
  const RISK = {spoof: 3, suspicious: 2, bona_fide: 1};
  const calls = new Map();
  const alerts = [];
  const seen = new Set();
  const view = {
    calls, alerts, selected: null, lastId: null, connects: 0, duplicates: 0,
    thresholds: {suspicious: 0.5, spoof: 0.8}, active: new Map(),
  };
  window.dashboard = view;  // read by the browser tests
  let source = null;
  let dirty = true;

  function call(id) {
    let c = calls.get(id);
    if (!c) {
      c = {id, source: null, channel: null, state: null, running: null, windows: 0,
           points: [], started: null, last: null, ended: false, summary: null, metadata: {}};
      calls.set(id, c);
    }
    return c;
  }

  function fresh(ev) {
    if (!ev.event_id) return true;
    if (seen.has(ev.event_id)) { view.duplicates += 1; return false; }
    seen.add(ev.event_id);
    if (seen.size > 50000) seen.clear();
    return true;
  }

  function onScore(ev) {
    const c = call(ev.call_id);
    c.source = ev.source; c.channel = ev.channel; c.metadata = ev.metadata || {};
    c.state = ev.state; c.last = ev.ts_unix;
    c.running = ev.running.spoof_probability; c.windows = ev.running.windows;
    if (c.started === null) c.started = ev.ts_unix - ev.window.end_s;
    c.points.push([ev.window.end_s, ev.score.spoof_probability, ev.running.spoof_probability]);
    if (c.points.length > 2000) c.points.shift();
  }

  function onAlert(ev) {
    const c = call(ev.call_id);
    c.source = ev.source; c.channel = ev.channel; c.metadata = ev.metadata || {};
    c.last = ev.ts_unix;
    if (ev.type === "summary") {
      c.ended = true; c.summary = ev.summary; c.state = ev.summary.final_state;
      if (c.started === null) c.started = ev.ts_unix - ev.summary.duration_s;
    } else {
      c.state = ev.state;
    }
    if (ev.running) c.running = ev.running.spoof_probability;
    alerts.unshift(ev);
    if (alerts.length > MAX_ALERTS) alerts.pop();
  }

  function onActive(msg) {
    view.active = new Map(msg.calls.map((a) => [a.call_id, a]));
    for (const a of msg.calls) {
      const c = call(a.call_id);
      c.source = c.source || a.source;
      c.started = a.started_unix;
      c.metadata = a.metadata;
    }
  }

  function handle(type, e) {
    if (e.lastEventId) view.lastId = e.lastEventId;
    const data = JSON.parse(e.data);
    if (type === "hello") { view.thresholds = data.thresholds; }
    else if (type === "active") { onActive(data); }
    else if (!fresh(data)) { return; }
    else if (type === "window") { onScore(data); }
    else { onAlert(data); }
    dirty = true;
  }

  function connect() {
    if (source) source.close();
    const url = view.lastId ? N2N.withToken("/v1/events", {last_event_id: view.lastId})
      : N2N.withToken("/v1/events", {history_s: HISTORY_S});
    source = new EventSource(url);
    view.connects += 1;
    for (const type of ["hello", "active", "window", "state", "summary"]) {
      source.addEventListener(type, (e) => handle(type, e));
    }
    source.onopen = () => setFeed("live");
    source.onerror = () => {
      // the browser retries by itself (sending Last-Event-ID); if it gave up, start again
      setFeed("reconnecting");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }
  view.reconnect = connect;

  function setFeed(state) { $("feed").textContent = state; $("feed").dataset.state = state; }

  function isActive(c) { return !c.ended && (view.active.has(c.id) || Date.now() / 1000 - (c.last || 0) < 60); }

  function ordered() {
    const all = [...calls.values()];
    const active = all.filter(isActive)
      .sort((a, b) => (RISK[b.state] || 0) - (RISK[a.state] || 0) || (b.started - a.started));
    const ended = all.filter((c) => !isActive(c)).sort((a, b) => (b.last || 0) - (a.last || 0))
      .slice(0, MAX_ENDED);
    return {active, ended};
  }

  function sourceText(src) {
    if (!src) return "–";
    return src.kind === src.gateway ? src.kind : `${src.kind} · ${src.gateway}`;
  }

  function renderCalls(now) {
    const {active, ended} = ordered();
    const rows = [...active, ...ended].map((c) => {
      const live = isActive(c);
      const duration = c.summary ? c.summary.duration_s : now - (c.started || now);
      const spark = N2N.el("canvas", {class: "spark"});
      const row = N2N.el("tr", {class: (live ? "live " : "ended ") + (c.id === view.selected ? "selected" : ""),
                                "data-call": c.id, "data-state": String(c.state)},
        N2N.el("td", {}, N2N.el("span", {class: "state-chip", "data-state": String(c.state)},
                                live ? N2N.stateLabel(c.state) : "ended · " + N2N.stateLabel(c.state))),
        N2N.el("td", {class: "mono"}, c.id),
        N2N.el("td", {}, sourceText(c.source)),
        N2N.el("td", {class: "mono"}, N2N.fmtDuration(duration)),
        N2N.el("td", {class: "mono pct"}, N2N.pct(c.running)),
        N2N.el("td", {}, spark));
      row.addEventListener("click", () => { view.selected = c.id; dirty = true; });
      return [row, spark, c];
    });
    $("calls").replaceChildren(...rows.map((r) => r[0]));
    for (const [, spark, c] of rows) N2N.sparkline(spark, c.points.slice(-40).map((p) => p[1]), c.state);
    $("no-calls").hidden = rows.length > 0;
    $("n-active").textContent = String(active.length);
    $("n-spoof").textContent = String(active.filter((c) => c.state === "spoof").length);
    $("n-suspicious").textContent = String(active.filter((c) => c.state === "suspicious").length);
  }

  function alertText(ev) {
    if (ev.type === "summary") {
      const s = ev.summary;
      return `call ended (${s.end_reason}): ${N2N.stateLabel(s.final_state)}, ` +
        `${s.windows_scored} windows, max ${N2N.pct(s.max_spoof_probability)}`;
    }
    return `${N2N.stateLabel(ev.previous_state)} → ${N2N.stateLabel(ev.state)} ` +
      `(running ${N2N.pct(ev.running.spoof_probability)})`;
  }

  function renderAlerts() {
    $("alerts").replaceChildren(...alerts.slice(0, 60).map((ev) => {
      const state = ev.type === "summary" ? ev.summary.final_state : ev.state;
      const li = N2N.el("li", {class: "alert-item " + ev.type, "data-state": String(state),
                               "data-call": ev.call_id, "data-event": ev.event_id},
        N2N.el("span", {class: "time mono"}, N2N.fmtTime(ev.ts_unix)),
        N2N.el("span", {class: "who mono"}, ev.call_id),
        N2N.el("span", {class: "what"}, alertText(ev)));
      li.addEventListener("click", () => { view.selected = ev.call_id; dirty = true; });
      return li;
    }));
    $("n-alerts").textContent = String(alerts.length);
  }

  function renderDetail() {
    const c = view.selected && calls.get(view.selected);
    if (!c) return;
    $("detail-id").textContent = c.id;
    $("detail-state").textContent = N2N.stateLabel(c.state);
    $("detail-state").dataset.state = String(c.state);
    N2N.plot($("timeline"), [
      {points: c.points.map((p) => [p[0], p[1]]), color: "#5b6b86", width: 1, dots: true,
       dotColor: (p) => N2N.stateColor(p >= view.thresholds.spoof ? "spoof"
         : p >= view.thresholds.suspicious ? "suspicious" : "bona_fide")},
      {points: c.points.map((p) => [p[0], p[2]]), color: "#e8ecf3", width: 2.5},
    ], {thresholds: view.thresholds});
    const facts = [["source", sourceText(c.source) + (c.source && c.source.remote ? ` (${c.source.remote})` : "")],
      ["channel", c.channel || "–"], ["windows", String(c.points.length)],
      ["running score", N2N.pct(c.running)]];
    if (c.summary) {
      facts.push(["ended", `${c.summary.end_reason}, ${c.summary.speech_s.toFixed(1)} s speech`],
                 ["mean / max", `${N2N.pct(c.summary.mean_spoof_probability)} / ${N2N.pct(c.summary.max_spoof_probability)}`]);
    }
    for (const [k, v] of Object.entries(c.metadata || {}).slice(0, 6)) facts.push([k, String(v)]);
    $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) =>
      [N2N.el("dt", {}, k), N2N.el("dd", {}, v)]));
  }

  function render() {
    if (dirty) {
      dirty = false;
      if (!view.selected) {
        const first = ordered().active[0];
        if (first) view.selected = first.id;
      }
      renderCalls(Date.now() / 1000);
      renderAlerts();
      renderDetail();
    }
  }

  setInterval(() => { dirty = true; }, 1000);  // durations tick
  $("tryit-link").href = N2N.withToken("/tryit");
  connect();
  setInterval(render, 250);
})();
