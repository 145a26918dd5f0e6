// Shared helpers of autocnn's dashboard pages: JSON calls, formatting and the study action buttons.
"use strict";

const autocnn = (() => {
  async function call(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) throw new Error((data && data.error) || `${method} ${path}: HTTP ${res.status}`);
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v; else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function message(text, isError) {
    const box = document.getElementById("message");
    box.textContent = text || "";
    box.className = isError ? "error" : "";
  }

  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fmtNum = (x, d = 4) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

  function best(study) {
    if (study.pareto_size !== null && study.pareto_size !== undefined) return `${study.pareto_size} on the Pareto front`;
    if (study.best === null || study.best === undefined) return "–";
    const metric = study.objectives ? study.objectives[0] : "value";
    return `${fmtNum(study.best)} ${metric}`;
  }

  const studyPath = (name) => `/api/autocnn/studies/${encodeURIComponent(name)}`;

  // Resume (with optional budget), Stop, Export best and the download link, for one study.
  function actions(name, onChange) {
    const budget = el("input", { type: "number", min: "1", class: "budget", "aria-label": `budget of ${name}`,
                                 title: "new trial budget (optional)" });
    const resume = el("button", { type: "button", class: "resume", text: "Resume" });
    const stop = el("button", { type: "button", class: "stop", text: "Stop" });
    const exp = el("button", { type: "button", class: "export", text: "Export best" });
    const download = el("a", { class: "download", hidden: true, text: "Download model (zip)" });
    const resumeWait = el("span", { class: "resumable-in", hidden: true });
    const box = el("div", { class: "actions" }, budget, resume, stop, exp, download, resumeWait);

    async function act(button, what, body, done) {
      button.disabled = true;
      try {
        const data = await call("POST", `${studyPath(name)}/${what}`, body);
        message(done(data));
      } catch (err) {
        message(err.message, true);
      }
      onChange();
    }
    resume.addEventListener("click", () => {
      const raw = budget.value.trim();
      const body = raw ? { trials: Number(raw) } : {};
      act(resume, "resume", body, (d) => `${name}: worker started (pid ${d.worker.pid}), budget ${d.requested} trials`);
    });
    stop.addEventListener("click", () =>
      act(stop, "stop", {}, () => `${name}: stop requested; the running trial finishes, then the workers exit`));
    exp.addEventListener("click", () => act(exp, "export", {}, () => `${name}: exporting the best trial…`));

    let lastExport = null;
    function update(study) {
      const ex0 = study.export || {};
      if (lastExport === "running" && ex0.status === "done") message(`${name}: export ready — download the model archive`);
      if (lastExport === "running" && ex0.status === "error") message(`${name}: export failed: ${ex0.error}`, true);
      lastExport = ex0.status;
      const running = study.state === "running";
      const ok = study.controllable;
      resume.disabled = !ok || running;
      // a worker on another host cannot be checked by pid: say when its lease runs out
      resume.title = running && study.resumable_in_s !== null && study.resumable_in_s !== undefined
        ? `resumable in at most ${Math.ceil(study.resumable_in_s)} s if its worker is gone` : "";
      resumeWait.hidden = !resume.title;
      resumeWait.textContent = resume.title;
      stop.disabled = !ok || !running || study.stop_requested;
      stop.textContent = running && study.stop_requested ? "Stopping…" : "Stop";
      budget.disabled = !ok || running;
      if (!budget.value && study.requested) budget.placeholder = String(study.requested);
      const ex = study.export || {};
      exp.disabled = !ok || !study.complete || ex.status === "running";
      exp.textContent = ex.status === "running" ? "Exporting…" : "Export best";
      exp.title = ex.status === "error" ? `last export failed: ${ex.error}` : "";
      if (ex.status === "done" && ex.zip) {
        download.hidden = false;
        download.href = ex.zip;
        download.setAttribute("download", `${name}-best.zip`);
        download.title = (ex.files || []).join(", ");
      } else {
        download.hidden = true;
      }
    }
    return { box, update };
  }

  function stateBadge(node, state) {
    node.textContent = state;
    node.className = `state state-${state}`;
    node.dataset.state = state;
  }

  return { call, el, message, fmtInt, fmtNum, best, actions, stateBadge, studyPath };
})();
