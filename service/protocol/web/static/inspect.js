// The distribution inspector: asks the native predict route for a row's curve and draws it.
// Plain browser JavaScript and inline SVG, no library: the page loads nothing but this
// origin's files. Every drawn element carries the numbers it was drawn from (data-*
// attributes), and window.inspector holds the last requests and answers, so a test (or a
// curious person in the console) can compare the picture with the API.
"use strict";

(() => {
  const QUANTILES = [0.1, 0.25, 0.5, 0.75, 0.9];
  const INTERVALS = [[0, 3], [3, 10], [10, 30], [30, 60], [60, null]];
  const POINTS = 301;
  const W = 900;
  const H = 340;
  const M = { left: 64, right: 24, top: 70, bottom: 40 };
  const SVG = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "watchtime-token";

  const state = { rows: null, models: [], drawn: null, busy: false, again: false };
  window.inspector = state;

  const $ = (id) => document.getElementById(id);

  function setStatus(text, error = false) {
    const el = $("status");
    el.textContent = text;
    el.className = error ? "error" : "";
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  async function api(path, body) {
    const init = body === undefined
      ? { headers: headers() }
      : { method: "POST", headers: headers(), body: JSON.stringify(body) };
    const response = await fetch(path, init);
    const text = await response.text();
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (_) {
      doc = { error: text.slice(0, 200) };
    }
    if (!response.ok) {
      const where = doc.field ? ` (${doc.field})` : "";
      throw new Error(`${path}: ${response.status} ${doc.error || ""}${where}`);
    }
    return doc;
  }

  const predictPath = (name) => `/v1/models/${encodeURIComponent(name)}/predict`;

  // ------------------------------------------------------------------ numbers and text

  function fmt(x, digits = 3) {
    if (x === null || x === undefined) return "-";
    if (!Number.isFinite(x)) return String(x);
    if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
    return Number(x.toPrecision(digits)).toString();
  }

  const seconds = (x) => `${fmt(x)} s`;

  function niceCeil(x) {
    const p = 10 ** Math.floor(Math.log10(x));
    for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  function ticks(max, count = 8) {
    const step = niceCeil(max / count);
    const out = [];
    for (let v = 0; v <= max * 1.0000001; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  // ------------------------------------------------------------------ SVG helpers

  function el(name, attrs = {}, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scales(maxS, maxY) {
    const px0 = M.left;
    const px1 = W - M.right;
    const py0 = H - M.bottom;
    const py1 = M.top;
    return {
      x: (t) => px0 + (t / maxS) * (px1 - px0),
      y: (v) => py0 - (v / maxY) * (py0 - py1),
      attrs: { t0: 0, t1: maxS, px0, px1, v0: 0, v1: maxY, py0, py1 },
    };
  }

  function axes(svg, s, maxS, maxY, yLabel) {
    const g = el("g", { class: "axis" });
    for (const t of ticks(maxS)) {
      const x = s.x(t);
      g.append(el("line", { class: "grid", x1: x, x2: x, y1: s.y(0), y2: s.y(maxY) }));
      g.append(el("text", { x, y: H - M.bottom + 16, "text-anchor": "middle" }, `${t}`));
    }
    for (const v of ticks(maxY, 5)) {
      const y = s.y(v);
      g.append(el("line", { class: "grid", x1: s.x(0), x2: s.x(maxS), y1: y, y2: y }));
      g.append(el("text", { x: M.left - 6, y: y + 4, "text-anchor": "end" }, fmt(v, 2)));
    }
    g.append(el("line", { x1: s.x(0), x2: s.x(maxS), y1: s.y(0), y2: s.y(0) }));
    g.append(el("line", { x1: s.x(0), x2: s.x(0), y1: s.y(0), y2: s.y(maxY) }));
    g.append(el("text", { x: (s.x(0) + s.x(maxS)) / 2, y: H - 6, "text-anchor": "middle" },
      "watch time (s)"));
    g.append(el("text", { x: 12, y: M.top - 10 }, yLabel));
    svg.append(g);
  }

  function seriesPath(t, y, step, s) {
    const parts = [];
    for (let i = 0; i < t.length; i += 1) {
      const x = s.x(t[i]).toFixed(3);
      const v = s.y(y[i]).toFixed(3);
      if (i === 0) {
        parts.push(`M${x},${v}`);
      } else if (step) {
        // the step value y[i-1] holds on [t[i-1], t[i]), then the curve moves to y[i]
        parts.push(`H${x}`, `V${v}`);
      } else {
        parts.push(`L${x},${v}`);
      }
    }
    if (step) parts.push(`H${s.x(t[t.length - 1]).toFixed(3)}`);
    return parts.join(" ");
  }

  function vline(svg, s, maxS, cls, value, label, slot, data) {
    const shown = Math.min(Math.max(value, 0), maxS);
    const x = s.x(shown);
    const g = el("g", { class: `marker ${cls}`, ...data });
    g.append(el("line", { x1: x, x2: x, y1: s.y(0), y2: M.top - 4 - 11 * slot }));
    const beyond = value > maxS ? " \u2192" : "";
    const anchor = x > W - 140 ? "end" : "start";
    const dx = anchor === "end" ? -3 : 3;
    g.append(el("text", { x: x + dx, y: M.top - 6 - 11 * slot, "text-anchor": anchor },
      `${label} ${seconds(value)}${beyond}`));
    svg.append(g);
  }

  // ------------------------------------------------------------------ drawing

  function drawPlot(svg, drawn, which) {
    svg.replaceChildren();
    const { maxS, series, observed } = drawn;
    const values = series.map((sr) => sr.answer.curve[which][0]);
    let maxY = 1;
    if (which === "pdf") {
      maxY = Math.max(1e-12, ...values.map((v) => Math.max(...v))) * 1.08;
    }
    const s = scales(maxS, maxY);
    Object.entries(s.attrs).forEach(([k, v]) => svg.setAttribute(`data-${k}`, v));

    if (which === "pdf") {
      // interval bands, with every model's mass of each
      INTERVALS.forEach(([lo, hi], j) => {
        const x0 = s.x(Math.min(lo, maxS));
        const x1 = s.x(Math.min(hi === null ? maxS : hi, maxS));
        if (x1 <= x0) return;
        svg.append(el("rect", { class: `band ${j % 2 ? "odd" : "even"}`, x: x0, y: s.y(maxY),
          width: x1 - x0, height: s.y(0) - s.y(maxY) }));
        if (x1 - x0 < 70 * series.length) return; // too narrow to label: the table has it
        const masses = series.map((sr) => fmt(sr.answer.intervals.mass[0][j], 2)).join(" | ");
        svg.append(el("text", { class: "band-label", x: x0 + 3, y: s.y(maxY) + 12,
          "data-interval": j, "data-lo": lo, "data-hi": hi === null ? "inf" : hi },
          `${lo}\u2013${hi === null ? "\u221e" : hi} s: ${masses}`));
      });
      // the quick-skip mass: the area below each model's threshold
      const threshold = series[0].answer.quick_skip_threshold_s;
      svg.append(el("rect", { class: "skip", x: s.x(0), y: s.y(maxY),
        width: Math.max(0, s.x(Math.min(threshold, maxS)) - s.x(0)),
        height: s.y(0) - s.y(maxY) }));
    }
    axes(svg, s, maxS, maxY, which === "pdf" ? "density (1/s)" : "P(T \u2264 t)");

    let slot = 0;
    series.forEach((sr) => {
      const a = sr.answer;
      const curve = a.curve;
      const y = curve[which][0];
      const step = which === "pdf" && curve.density === "step";
      svg.append(el("path", {
        class: `series ${sr.key}`,
        d: seriesPath(curve.t_s, y, step, s),
        "data-model": sr.model,
        "data-kind": which,
        "data-density": which === "pdf" ? curve.density : "cdf",
        "data-t": curve.t_s.join(","),
        "data-y": y.join(","),
      }));
      if (which === "pdf") {
        // atoms are not density: a stem at their place, labelled with their mass
        curve.atoms.at_s[0].forEach((at, j) => {
          const mass = curve.atoms.mass[0][j];
          if (!(mass > 0) || at > maxS) return;
          const x = s.x(at) + (sr.key === "b" ? 4 : 0);
          const top = s.y(maxY * (sr.key === "b" ? 0.45 : 0.6));
          const g = el("g", { class: `atom ${sr.key}`, "data-model": sr.model, "data-at": at,
            "data-mass": mass });
          g.append(el("line", { x1: x, x2: x, y1: s.y(0), y2: top }));
          g.append(el("circle", { cx: x, cy: top, r: 3.5 }));
          g.append(el("text", { x: x + 6, y: top + 4 }, `atom: P(T = ${fmt(at)} s) = ${fmt(mass, 3)}`));
          svg.append(g);
        });
      }
      const cls = sr.key;
      const data = (kind, value) => ({ "data-model": sr.model, "data-marker": kind,
        "data-value": value });
      const name = series.length > 1 ? `${sr.model} ` : "";
      vline(svg, s, maxS, `${cls} mean`, a.expected_watch_time_s[0], `${name}mean`, slot++,
        data("mean", a.expected_watch_time_s[0]));
      vline(svg, s, maxS, `${cls} point`, a.point_s[0], `${name}point_s`, slot++,
        data("point_s", a.point_s[0]));
      if (which === "cdf") {
        a.quantiles.levels.forEach((q, j) => {
          const v = a.quantiles.values_s[0][j];
          const g = el("g", { class: `marker ${cls} quantile`, ...data(`q${q}`, v),
            "data-level": q });
          g.append(el("line", { x1: s.x(Math.min(v, maxS)), x2: s.x(Math.min(v, maxS)),
            y1: s.y(0), y2: s.y(q) }));
          g.append(el("line", { x1: s.x(0), x2: s.x(Math.min(v, maxS)), y1: s.y(q), y2: s.y(q) }));
          const b = sr.key === "b";
          g.append(el("text", { x: s.x(Math.min(v, maxS)) + (b ? -3 : 3), y: s.y(q) + (b ? 12 : -3),
            "text-anchor": b ? "end" : "start" }, `q${Math.round(q * 100)} ${seconds(v)}`));
          svg.append(g);
        });
      } else {
        const thr = a.quick_skip_threshold_s;
        svg.append(el("text", { class: "skip-label", x: s.x(0) + 4,
          y: s.y(0) - 8 - (sr.key === "b" ? 14 : 0), ...data("quick_skip_prob",
            a.quick_skip_prob[0]) }, `${name}P(T \u2264 ${fmt(thr)} s) = ${fmt(a.quick_skip_prob[0])}`));
      }
    });
    if (observed !== null && observed !== undefined) {
      vline(svg, s, maxS, "observed", observed, "observed", slot++,
        { "data-marker": "observed", "data-value": observed });
    }
  }

  function table(drawn) {
    const { series } = drawn;
    const head = [["", ""], ...series.map((sr) => [sr.model, `swatch-${sr.key}`])];
    const rows = [
      ["family", (a) => a.family],
      ["density drawn as", (a) => a.curve.density],
      ["mean E[T]", (a) => seconds(a.expected_watch_time_s[0])],
      ["point_s", (a) => seconds(a.point_s[0])],
      ["std", (a) => seconds(a.std_s[0])],
      ["quick skip", (a) => `P(T \u2264 ${fmt(a.quick_skip_threshold_s)} s) = ${fmt(a.quick_skip_prob[0])}`],
      ...QUANTILES.map((q, j) => [`quantile ${q}`, (a) => seconds(a.quantiles.values_s[0][j])]),
      ...INTERVALS.map(([lo, hi], j) => [`P(${lo} \u2264 T \u2264 ${hi === null ? "\u221e" : hi} s)`,
        (a) => fmt(a.intervals.mass[0][j])]),
      ["atoms", (a) => a.curve.atoms.at_s[0].map((at, j) =>
        `${fmt(a.curve.atoms.mass[0][j])} at ${fmt(at)} s`).join(", ") || "none"],
    ];
    const tableEl = document.createElement("table");
    const tr = document.createElement("tr");
    head.forEach(([text, cls]) => {
      const th = document.createElement("th");
      th.textContent = text;
      th.className = cls;
      tr.append(th);
    });
    tableEl.append(tr);
    rows.forEach(([label, get]) => {
      const row = document.createElement("tr");
      const th = document.createElement("td");
      th.textContent = label;
      row.append(th);
      series.forEach((sr) => {
        const td = document.createElement("td");
        td.textContent = get(sr.answer);
        row.append(td);
      });
      tableEl.append(row);
    });
    const notes = series.map((sr) => {
      const p = document.createElement("p");
      p.className = "note";
      p.textContent = `${sr.model} (${sr.answer.curve.density}): ${sr.answer.curve.note}`;
      return p;
    });
    $("numbers").replaceChildren(tableEl, ...notes);
  }

  // ------------------------------------------------------------------ the row

  function firstRow(doc) {
    if (doc && typeof doc === "object" && !Array.isArray(doc)) {
      if (Array.isArray(doc.instances)) return doc.instances[0];
      if (doc.features && typeof doc.features === "object") {
        return Object.fromEntries(Object.entries(doc.features).map(([k, v]) => [k, v[0]]));
      }
      return doc;
    }
    throw new Error("expected a JSON object");
  }

  function chosenRow() {
    if (state.pasted) return { row: state.pasted, observed: null, label: "pasted row" };
    const i = Number($("row").value);
    return { row: state.rows.rows[i], observed: state.rows.watch_time_s[i], label: `row ${i}` };
  }

  async function draw() {
    if (state.busy) {
      state.again = true; // drawn once the current drawing is done: the last choice wins
      return;
    }
    state.busy = true;
    try {
      const names = [$("model-a").value, $("model-b").value].filter((n, i, all) =>
        n && all.indexOf(n) === i);
      const { row, observed, label } = chosenRow();
      setStatus(`Asking ${names.join(" and ")} about ${label}...`);
      let maxS = Number($("max-s").value);
      if (!(maxS > 0)) {
        // auto: a little past where every model has 95 % of the mass (10 s to an hour)
        const probes = await Promise.all(names.map((n) =>
          api(predictPath(n), { instances: [row], quantiles: [0.95] })));
        const q95 = Math.max(...probes.map((p) => p.quantiles.values_s[0][0]));
        maxS = niceCeil(Math.min(Math.max(q95 * 1.3, 10), 3600));
      }
      const body = {
        instances: [row],
        quantiles: QUANTILES,
        intervals: INTERVALS,
        curve: { points: POINTS, max_s: maxS },
      };
      const answers = await Promise.all(names.map((n) => api(predictPath(n), body)));
      const series = names.map((n, i) => ({ model: n, key: i ? "b" : "a", request: body,
        answer: answers[i] }));
      state.drawn = { maxS, row, observed, label, series };
      drawPlot($("pdf-plot"), state.drawn, "pdf");
      drawPlot($("cdf-plot"), state.drawn, "cdf");
      table(state.drawn);
      const seen = observed === null || observed === undefined ? "" :
        `; observed watch time ${seconds(observed)}`;
      setStatus(`${label}: ${names.join(" vs ")}, 0 to ${maxS} s${seen}`);
      delete document.body.dataset.error;
      document.body.dataset.drawn = String((Number(document.body.dataset.drawn) || 0) + 1);
    } catch (err) {
      setStatus(String(err.message || err), true);
      document.body.dataset.error = String(err.message || err);
    } finally {
      state.busy = false;
      if (state.again) {
        state.again = false;
        draw();
      }
    }
  }

  // ------------------------------------------------------------------ start-up

  function option(value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  }

  async function start() {
    try {
      const [models, rows] = await Promise.all([api("/v1/models"), api("/v1/inspect/rows")]);
      state.models = models.models;
      state.rows = rows;
      const a = $("model-a");
      const b = $("model-b");
      a.replaceChildren();
      b.replaceChildren(option("", "(none)"));
      for (const m of models.models) {
        const text = `${m.name} (${m.family}, v${m.version})`;
        a.append(option(m.name, text));
        b.append(option(m.name, text));
      }
      a.value = models.default || models.models[0].name;
      const r = $("row");
      r.replaceChildren(...rows.rows.map((row, i) => option(String(i),
        `row ${i}: watched ${fmt(rows.watch_time_s[i])} s of ` +
        `${row.duration_ms === null ? "?" : fmt(row.duration_ms / 1000)} s (video ${row.video_id})`)));
      const f = $("attribution");
      f.textContent = `Rows: ${rows.notice} ${rows.dataset}. ${rows.citation} ` +
        `Licence: ${rows.license} (${rows.license_url}).`;
      await draw();
    } catch (err) {
      setStatus(String(err.message || err), true);
      document.body.dataset.error = String(err.message || err);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["model-a", "model-b", "row"]) {
      $(id).addEventListener("change", () => {
        if (id === "row") state.pasted = null;
        draw();
      });
    }
    const token = $("token");
    token.value = sessionStorage.getItem(TOKEN_KEY) || "";
    token.addEventListener("change", () => {
      sessionStorage.setItem(TOKEN_KEY, token.value.trim());
      start();
    });
    $("max-s").addEventListener("change", draw);
    $("draw").addEventListener("click", draw);
    $("use-paste").addEventListener("click", () => {
      try {
        state.pasted = firstRow(JSON.parse($("paste").value));
      } catch (err) {
        setStatus(`pasted JSON: ${err.message || err}`, true);
        return;
      }
      draw();
    });
    start();
  });
})();
