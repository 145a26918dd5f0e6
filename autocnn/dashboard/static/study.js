// The study page: best trials with genotypes, the best architecture by stage, cost vs accuracy.
"use strict";

(() => {
  const { call, el, message, fmtInt, fmtNum, best, actions, stateBadge, studyPath } = autocnn;
  const name = decodeURIComponent(location.pathname.replace(/^\/studies\//, "").replace(/\/$/, ""));
  document.title = `autocnn — ${name}`;
  document.getElementById("study-name").textContent = name;
  const act = actions(name, () => load());
  document.getElementById("actions").append(act.box);
  let detail = null;

  function fillTable(id, rows) {
    const tbody = document.querySelector(`#${id} tbody`);
    tbody.replaceChildren(...rows);
  }

  function render(d) {
    const s = d.study;
    stateBadge(document.getElementById("state"), s.state);
    document.getElementById("facts").textContent =
      `space ${s.space || "–"} · dataset ${s.dataset || "–"} · backend ${s.backend || "–"} · ` +
      `${s.finished} / ${s.requested ?? "?"} trials (complete ${s.complete}, pruned ${s.pruned}, failed ${s.failed}` +
      `${s.rejected_time ? `; rejected: would not finish ${s.rejected_time}` : ""}) · ` +
      `best ${best(s)} · last activity ${s.last_activity ? s.last_activity.replace("T", " ") : "–"}`;
    act.update({ ...s, export: d.export });
    const links = document.getElementById("links");
    const labels = { history: "History (optuna-dashboard)", analytics: "Importance & analytics",
                     trials: "Trials", trial_table: "Trial table", note: "Note" };
    links.replaceChildren(...Object.entries(labels).map(([k, label]) => el("a", { href: d.links[k], text: label })));

    document.getElementById("best-title").textContent =
      s.pareto_size !== null ? `Pareto front (${s.pareto_size} trials)` : "Best trials";
    fillTable("best", d.best.map((t) => el("tr", { "data-trial": String(t.number) },
      el("td", {}, el("a", { href: t.link, text: `#${t.number}` })),
      el("td", { class: "num", text: (t.values || []).map((v) => fmtNum(v)).join(", ") }),
      el("td", { class: "num", text: fmtNum(t.test_metric) }),
      el("td", { class: "num", text: fmtInt(t.params) }),
      el("td", { class: "num", text: t.flops === null ? "–" : (t.flops / 1e6).toFixed(1) }),
      el("td", { class: "num", text: t.latency_ms == null ? "not measured" : fmtNum(t.latency_ms, 2) }),
      el("td", { class: "genotype", text: t.arch || "–" }))));
    fillTable("stages", d.best_stages.map((st) => el("tr", {},
      el("td", { text: st.section === "head" ? "head" : `${st.section} ${st.index}` }),
      el("td", { text: st.block }),
      el("td", { text: st.attention === "none" ? "none" : `${st.attention} (${st.ratio})` }),
      el("td", { text: st.conv ?? "–" }),
      el("td", { class: "num", text: st.out_chs === 0 ? "same" : String(st.out_chs) }),
      el("td", { class: "num", text: String(st.repeats) }),
      el("td", { class: "num", text: st.stride ?? "–" }),
      el("td", { class: "num", text: st.kernel ?? "–" }),
      el("td", { class: "num", text: st.expansion ?? "–" }))));
    if (d.best_stages_error) message(`best genotype: ${d.best_stages_error}`, true);
    scatter(d.points);
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scatter(points) {
    const key = document.getElementById("x-axis").value;
    const box = document.getElementById("scatter");
    const pts = points.filter((p) => p[key] > 0 && p.value !== null);
    const W = 640, H = 360, L = 60, R = 20, T = 15, B = 45;
    const nodes = [svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
                   svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
                   svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, `${key} (log scale)`),
                   svg("text", { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`,
                                 "text-anchor": "middle" }, "validation metric")];
    if (pts.length) {
      const xs = pts.map((p) => Math.log10(p[key])), ys = pts.map((p) => p.value);
      let [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
      if (x1 - x0 < 1e-9) { x0 -= 0.5; x1 += 0.5; }
      if (y1 - y0 < 1e-9) { y0 -= 0.05; y1 += 0.05; }
      const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
      for (const [v, anchor] of [[x0, "start"], [x1, "end"]])
        nodes.push(svg("text", { x: sx(v), y: H - B + 15, "text-anchor": anchor }, fmtInt(Math.round(10 ** v))));
      for (const v of [y0, y1]) nodes.push(svg("text", { x: L - 5, y: sy(v) + 4, "text-anchor": "end" }, fmtNum(v, 3)));
      for (const p of pts) {
        const c = svg("circle", { class: p.best ? "pt best" : "pt", cx: sx(Math.log10(p[key])), cy: sy(p.value), r: p.best ? 5 : 3.5 });
        c.append(svg("title", {}, `trial ${p.number}: ${fmtNum(p.value)} at ${fmtInt(p[key])} ${key}`));
        nodes.push(c);
      }
    } else {
      nodes.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no complete trial yet"));
    }
    box.replaceChildren(...nodes);
  }

  async function load() {
    try {
      detail = await call("GET", studyPath(name));
      render(detail);
      document.body.dataset.loaded = "true";
    } catch (err) {
      message(err.message, true);
    }
  }

  document.getElementById("x-axis").addEventListener("change", () => detail && scatter(detail.points));
  load();
  setInterval(load, 3000);
})();
