// nes2net-stream pages: shared helpers (token handling, colours, canvas plots). No framework.
"use strict";

const N2N = (() => {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token") || "";

  /** Add ?token= to a same-origin URL when the page was opened with one. */
  function withToken(url, extra) {
    const u = new URL(url, window.location.href);
    if (token) u.searchParams.set("token", token);
    for (const [k, v] of Object.entries(extra || {})) {
      if (v !== null && v !== undefined && v !== "") u.searchParams.set(k, v);
    }
    return u.pathname + u.search;
  }

  function authHeaders(headers) {
    const h = Object.assign({}, headers || {});
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  const COLORS = {
    bona_fide: "#2f9e5f", suspicious: "#e0a100", spoof: "#d9383a", null: "#7b8494",
  };
  const LABELS = {bona_fide: "bona fide", suspicious: "suspicious", spoof: "spoof"};

  function stateColor(state) { return COLORS[state] || COLORS.null; }
  function stateLabel(state) { return LABELS[state] || "no verdict yet"; }

  function fmtDuration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const m = Math.floor(s / 60);
    const h = Math.floor(m / 60);
    const mm = String(m % 60).padStart(h ? 2 : 1, "0");
    return (h ? h + ":" : "") + mm + ":" + String(s % 60).padStart(2, "0");
  }

  function fmtTime(tsUnix) {
    return new Date(tsUnix * 1000).toLocaleTimeString([], {hour12: false});
  }

  function pct(p) { return p === null || p === undefined ? "–" : (100 * p).toFixed(0) + "%"; }

  /** Size a canvas to its CSS box at the device pixel ratio; returns the 2D context. */
  function fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return {ctx, w, h};
  }

  /**
   * Plot score series in [0, 1] against time.
   * series: [{points: [[t, p], ...], color, width, dots}], opts: {thresholds, xLabel, tMin}
   */
  function plot(canvas, series, opts) {
    const o = Object.assign({thresholds: {suspicious: 0.5, spoof: 0.8}, xLabel: "s"}, opts);
    const {ctx, w, h} = fitCanvas(canvas);
    const pad = {l: 38, r: 10, t: 10, b: 22};
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    let tMax = 10;
    let tMin = o.tMin || 0;
    for (const s of series) {
      for (const [t] of s.points) tMax = Math.max(tMax, t);
    }
    if (o.window && tMax - tMin > o.window) tMin = tMax - o.window;
    const x = (t) => pad.l + (pw * (t - tMin)) / Math.max(1e-6, tMax - tMin);
    const y = (p) => pad.t + ph * (1 - p);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#8d96a7";
    ctx.strokeStyle = "#2a3140";
    ctx.lineWidth = 1;
    for (const p of [0, 0.25, 0.5, 0.75, 1]) {
      ctx.beginPath(); ctx.moveTo(pad.l, y(p)); ctx.lineTo(w - pad.r, y(p)); ctx.stroke();
      ctx.fillText((p * 100).toFixed(0) + "%", 4, y(p) + 4);
    }
    const th = o.thresholds || {};
    for (const [name, value] of Object.entries(th)) {
      ctx.strokeStyle = stateColor(name);
      ctx.setLineDash([4, 4]);
      ctx.beginPath(); ctx.moveTo(pad.l, y(value)); ctx.lineTo(w - pad.r, y(value)); ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.fillStyle = "#8d96a7";
    const step = Math.max(1, Math.ceil((tMax - tMin) / 8));
    ctx.textAlign = "center";
    for (let t = Math.ceil(tMin); t <= tMax; t += step) {
      ctx.fillText(t + o.xLabel, Math.min(x(t), w - pad.r - 10), h - 6);
    }
    ctx.textAlign = "left";
    for (const s of series) {
      if (!s.points.length) continue;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width || 2;
      ctx.beginPath();
      s.points.forEach(([t, p], i) => (i ? ctx.lineTo(x(t), y(p)) : ctx.moveTo(x(t), y(p))));
      ctx.stroke();
      if (s.dots) {
        for (const [t, p] of s.points) {
          ctx.fillStyle = s.dotColor ? s.dotColor(p) : s.color;
          ctx.beginPath(); ctx.arc(x(t), y(p), 3, 0, 2 * Math.PI); ctx.fill();
        }
      }
    }
  }

  /** A small line of recent values in [0, 1], coloured by the latest state. */
  function sparkline(canvas, values, state) {
    const {ctx, w, h} = fitCanvas(canvas);
    if (!values.length) return;
    const n = values.length;
    ctx.strokeStyle = stateColor(state);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const px = n === 1 ? w / 2 : (i * (w - 4)) / (n - 1) + 2;
      const py = 2 + (h - 4) * (1 - v);
      return i ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
    });
    ctx.stroke();
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c));
    return e;
  }

  return {token, withToken, authHeaders, stateColor, stateLabel, fmtDuration, fmtTime, pct,
          plot, sparkline, el};
})();
