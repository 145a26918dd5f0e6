"""Issue 13, points 11, 12 and 15, against real servers, real workers and Debian's Chromium.

- A search killed with SIGKILL is resumable at once on its own host (its dead pid settles it), and a
  study leased by a worker on another host says how long until it is.
- Bound beyond loopback, every route needs the token, which the browser gets from a log-in form as
  an HttpOnly cookie; the worker the dashboard spawns has no storage URL in its arguments.
- A three-objective study's report plots every pair of objectives.
"""
from __future__ import annotations

import http.client
import os
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
from optuna.trial import TrialState

from conftest import run_cli
from test_dashboard import (QUICK, TOKEN, Env, Server, browser, chromium, login, server,  # noqa: F401 (fixtures)
                            wait_for, worker_pids)

TINY_SPACE = str(Path(__file__).resolve().parents[1] / "search" / "tiny_space.yaml")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # "secretpw" in the storage path stands for a password in a PostgreSQL URL: it must not reach `ps`
    from autocnn.storage import open_storage

    e = Env(tmp_path_factory.mktemp("secretpw"))
    open_storage(e.storage, create=True)  # an empty storage: the dashboard refuses a missing one
    yield e
    for proc in e.children:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for name in ("killed", "exposed"):
        for pid in worker_pids(e.storage, name):
            os.kill(pid, 9)


@pytest.fixture(scope="module")
def exposed(env):
    """A dashboard bound beyond loopback with a token (the CLI's own `--host`)."""
    # Bound to every interface (exposed), but tests only ever talk to it through loopback.
    srv = Server(env.storage, env.folder, "--host", "0.0.0.0", "--token", TOKEN)
    srv.url = srv.url.replace("0.0.0.0", "127.0.0.1")
    yield srv
    srv.stop()


# -- point 11: resume right after a crash -------------------------------------------------------------

def test_a_killed_search_is_resumable_at_once_on_its_host(env, server):
    env.crash("killed")  # SIGKILL while a trial trains: its lease and RUNNING trial stay behind
    killed_at = time.monotonic()
    orphan = next(t for t in env.trials("killed") if t.state == TrialState.RUNNING)
    s = server.study("killed")
    # the orphan's heartbeat is fresh for 15 s more, but the lease's pid is dead on this very host
    assert s["state"] == "failed" and s["worker"]["alive"] is False and s["resumable_in_s"] is None, s
    status, body = server.post("/api/autocnn/studies/killed/resume")
    assert time.monotonic() - killed_at < 10  # well inside the heartbeat grace period
    assert status == 202, body
    trials = {t.number: t for t in env.trials("killed")}
    assert trials[orphan.number].state == TrialState.FAIL  # failed on resume...
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].params == orphan.params  # ...and requeued with its parameters
    wait_for(lambda: server.study("killed")["state"] == "finished", 120, what="the resumed study to finish")
    s = server.study("killed")
    assert (s["finished"], s["requested"], s["running"], s["failed"]) == (3, 3, 0, 1)


def test_a_remote_worker_says_how_long_until_resumable(env, server, browser):
    env.create("remote", 2, **QUICK)
    study = optuna.load_study(study_name="remote", storage=env.storage)
    since = datetime.now().isoformat(timespec="seconds")
    study.set_user_attr("autocnn.worker", {"pid": 4242, "host": "another-host", "since": since, "phase": "running"})
    s = server.study("remote")
    assert s["state"] == "running" and 100 <= s["resumable_in_s"] <= 120, s
    status, body = server.post("/api/autocnn/studies/remote/resume")
    assert status == 409 and "pid 4242 on another-host" in body["error"]
    assert "resumable in at most" in body["error"]
    wait = int(body["error"].rsplit("at most ", 1)[1].split()[0])
    assert 100 <= wait <= 120
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/")
    note = page.locator('tr[data-study="remote"] .resumable-in')
    note.wait_for(state="visible", timeout=15_000)
    text = note.inner_text()
    assert text.startswith("resumable in at most ") and 90 <= int(text.split()[4]) <= 120, text
    context.close()


# -- point 12: the token guards every route when exposed ----------------------------------------------

def test_an_exposed_dashboard_needs_the_token_on_every_route(env, exposed):
    run = run_cli("train", "--model", "lenet5", "--dataset", "digits", "--epochs", "1", "--limit", "200",
                  "--resolution", "28", "--device", "cpu", "--study", "exposed-trained", "--storage", env.storage,
                  cwd=env.folder)
    assert run.returncode == 0, run.stderr
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = exposed.post("/api/autocnn/studies/exposed-trained/export", headers=auth)
    assert status == 202, body
    wait_for(lambda: exposed.get("/api/autocnn/studies/exposed-trained/export", headers=auth)[1]["status"] == "done",
             120, what="the export")
    api = ["/api/autocnn/studies", "/api/autocnn/studies/exposed-trained",
           "/api/autocnn/studies/exposed-trained/export", "/api/autocnn/studies/exposed-trained/export.zip",
           "/api/studies", "/api/studies/1", "/api/meta"]
    for path in api:
        status, _ = exposed.get(path)
        assert status == 401, (path, status)
        assert exposed.get(path, headers={"Authorization": "Bearer wrong-token-000"})[0] == 401, path
        assert exposed.get(path, headers={"Cookie": f"autocnn_token={TOKEN[:-1]}"})[0] == 401, path
    for path in ["/", "/studies/exposed-trained", "/dashboard", "/dashboard/studies/1", "/?token=" + TOKEN]:
        status, location = head(exposed.url, path)
        assert (status, location) == (303, "/login"), (path, status, location)  # the token in a URL is no key
    for path in ["/api/autocnn/studies/exposed-trained/stop", "/api/autocnn/studies/exposed-trained/resume"]:
        assert exposed.post(path)[0] == 401
    # with the token every route answers; the archive is the trained weights
    assert exposed.get("/api/autocnn/studies", headers=auth)[0] == 200
    status, raw = exposed.get("/api/autocnn/studies/exposed-trained/export.zip", headers=auth)
    assert status == 200 and raw[:2] == b"PK"
    cookie = login(exposed.url, TOKEN).split(";")[0]
    assert exposed.get("/api/studies", headers={"Cookie": cookie})[0] == 200
    assert head(exposed.url, "/", cookie)[0] == 200
    assert login(exposed.url, "wrong-token-000") is None


def head(url: str, path: str, cookie: str | None = None) -> tuple[int, str | None]:
    """GET `path` without following redirects: (status, Location)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    res = conn.getresponse()
    res.read()
    return res.status, res.getheader("Location")


def test_browser_logs_in_with_a_form_and_resumes_without_the_url_in_ps(env, exposed, browser):
    env.create("exposed", 2, **QUICK)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(exposed.url + "/")
    assert page.url == exposed.url + "/login"  # redirected to the form
    page.fill('input[name="token"]', TOKEN)
    page.click('button[type="submit"]')
    page.wait_for_selector('tr[data-study="exposed"]')
    cookie = next(c for c in context.cookies() if c["name"] == "autocnn_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not any(TOKEN in u for u in urls), urls  # the token never travels in a URL
    page.locator('tr[data-study="exposed"] button.resume').click()
    pid = wait_for(lambda: worker_pids(env.storage, "exposed"), 30, what="the worker")[0]
    args = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"secretpw" not in args and b"sqlite" not in args, args
    assert f"AUTOCNN_STORAGE={env.storage}".encode() in environ
    wait_for(lambda: exposed.get("/api/autocnn/studies/exposed", headers={"Cookie": f"autocnn_token={TOKEN}"})[1]
             ["study"]["state"] == "finished", 120, what="the worker to finish the study")
    context.close()


# -- point 15: every pair of objectives -----------------------------------------------------------------

def test_a_three_objective_report_plots_every_pair(tmp_path):
    from PIL import Image

    storage = f"sqlite:///{tmp_path / 'moo.db'}"
    result = run_cli("search", "--space", TINY_SPACE, "--dataset", "digits", "--resolution", "12", "--batch-size",
                     "32", "--pruner", "none", "--device", "cpu", "--limit", "200", "--epochs", "1", "--trials", "6",
                     "--objectives", "accuracy,params,flops", "--sampler", "nsga2", "--study", "three",
                     "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "report"
    result = run_cli("report", "--study", "three", "--storage", storage, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    pairs = ["accuracy_vs_params", "accuracy_vs_flops", "params_vs_flops"]
    assert sorted(p.name for p in out.glob("pareto_front*.png")) == sorted(f"pareto_front_{p}.png" for p in pairs)
    for pair in pairs:
        with Image.open(out / f"pareto_front_{pair}.png") as img:
            assert img.size[0] > 100 and img.size[1] > 100
    page = (out / "index.html").read_text()
    for caption in ("Pareto front accuracy vs params", "Pareto front accuracy vs flops",
                    "Pareto front params vs flops"):
        assert caption in page, caption
