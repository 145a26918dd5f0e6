// The studies page: one row per study, refreshed every 1.5 s from GET /api/autocnn/studies.
"use strict";

(() => {
  const { call, el, message, fmtInt, best, actions, stateBadge } = autocnn;
  const tbody = document.querySelector("#studies tbody");
  const rows = new Map();
  let lastError = null;

  function makeRow(study) {
    const cells = {};
    const tr = el("tr", { "data-study": study.name });
    const link = el("a", { href: `/studies/${encodeURIComponent(study.name)}`, text: study.name });
    for (const key of ["name", "space", "dataset", "backend", "state", "trials", "best", "last", "actions"]) {
      cells[key] = el("td", { class: key });
      tr.append(cells[key]);
    }
    cells.name.append(link);
    cells.stateBadge = el("span", { class: "state" });
    cells.state.append(cells.stateBadge);
    cells.finished = el("span", { class: "finished" });
    cells.requested = el("span", { class: "requested" });
    cells.trials.append(cells.finished, " / ", cells.requested);
    cells.trials.classList.add("num");
    const act = actions(study.name, refresh);
    cells.actions.append(act.box);
    return { tr, cells, act };
  }

  function fill(entry, s) {
    const c = entry.cells;
    c.space.textContent = s.space || "–";
    c.dataset.textContent = s.dataset || "–";
    c.backend.textContent = s.backend ? (s.ray_address ? `${s.backend} @ ${s.ray_address}` : s.backend) : "–";
    stateBadge(c.stateBadge, s.state);
    c.finished.textContent = String(s.finished);
    c.requested.textContent = s.requested === null ? "?" : String(s.requested);
    c.trials.title = `complete ${s.complete}, pruned ${s.pruned} (rejected by constraints ${s.rejected - s.rejected_time}, ` +
      `rejected: would not finish ${s.rejected_time}), failed ${s.failed}, running ${s.running}`;
    c.best.textContent = best(s);
    c.last.textContent = s.last_activity ? s.last_activity.replace("T", " ") : "–";
    entry.act.update(s);
  }

  async function refresh() {
    let data;
    try {
      data = await call("GET", "/api/autocnn/studies");
    } catch (err) {
      if (lastError !== err.message) message(`cannot read the studies: ${err.message}`, true);
      lastError = err.message;
      return;
    }
    if (lastError) message("");
    lastError = null;
    const seen = new Set();
    for (const s of data.studies) {
      seen.add(s.name);
      let entry = rows.get(s.name);
      if (!entry) {
        entry = makeRow(s);
        rows.set(s.name, entry);
        tbody.append(entry.tr);
      }
      fill(entry, s);
    }
    for (const [name, entry] of rows) {
      if (!seen.has(name)) { entry.tr.remove(); rows.delete(name); }
    }
    document.getElementById("empty").hidden = data.studies.length > 0;
    document.body.dataset.loaded = "true";
  }

  refresh();
  setInterval(refresh, 1500);
})();
