"""`autocnn dashboard`: a real server on 127.0.0.1 in a subprocess, real workers, Debian's Chromium.

Studies are real: `autocnn train` for a finished one, `autocnn search` for running ones, and
`create_study` (the engine's own) for stopped ones that have not started. Trials train LeNet-5 on
the embedded digits set: about half a second each for quick studies, 1-3 s where a test has to
catch a trial in flight. Screenshots go to each test's tmp_path.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
from optuna.trial import TrialState

from autocnn.search.control import counts_toward_budget
from conftest import assert_user_error, run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
TOKEN = "test-token-0123456789"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
QUICK = dict(epochs=2, limit=200)   # ~0.5 s per trial
MEDIUM = dict(epochs=4, limit=400)  # ~1 s per trial: long enough to catch one in flight


def lenet_space() -> str:
    import autocnn
    from autocnn.search.fixed import FixedSpace

    return FixedSpace.spec_for(autocnn.create_model("lenet5", num_classes=10, in_chans=1, resolution=28).genotype)


def autocnn_exe() -> str:
    return str(Path(sys.executable).with_name("autocnn"))


def request(method: str, url: str, body=None, headers=None, timeout: float = 30) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                         **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            raw, status = res.read(), res.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def worker_pids(storage_url: str, study: str) -> list[int]:
    """Live `autocnn search --resume` processes of one study in one storage (read from /proc; the
    dashboard passes the storage in $AUTOCNN_STORAGE, never in the arguments)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if b"--resume" not in args or study.encode() not in args:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if state != "Z" and b"AUTOCNN_STORAGE=" + storage_url.encode() in environ:
            pids.append(int(proc.name))
    return pids


def login(url: str, token: str) -> str | None:
    """POST the log-in form; the Set-Cookie header of its 303 to `/`, or None when refused (401)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("POST", "/login", body=f"token={token}",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    res = conn.getresponse()
    res.read()
    if res.status == 401:
        return None
    assert res.status == 303 and res.getheader("Location") == "/", res.status
    return res.getheader("Set-Cookie")


class Server:
    """`autocnn dashboard --port 0` in a subprocess; the URL is read from its first output line."""

    def __init__(self, storage_url: str, folder: Path, *extra: str, env: dict | None = None) -> None:
        self.log = folder / f"dashboard-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([autocnn_exe(), "dashboard", "--storage", storage_url, "--port", "0", *extra],
                                         stdout=out, stderr=subprocess.STDOUT, env=env or ENV, cwd=folder)
        line = wait_for(lambda: self._url_line(), 90, what="the dashboard to listen")
        self.url = line.split(" on ", 1)[1].split()[0]

    def _url_line(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"dashboard exited {self.proc.returncode}: {self.log.read_text()}")
        return next((line for line in self.log.read_text().splitlines() if " on http://" in line), None)

    def get(self, path: str, **kw):
        return request("GET", self.url + path, **kw)

    def post(self, path: str, body=None, **kw):
        return request("POST", self.url + path, body, **kw)

    def study(self, name: str) -> dict:
        status, data = self.get("/api/autocnn/studies")
        assert status == 200, data
        return next(s for s in data["studies"] if s["name"] == name)

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=20)


class Env:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.storage = f"sqlite:///{folder / 'studies.db'}"
        self.space = lenet_space()
        self.children: list[subprocess.Popen] = []

    def create(self, name: str, trials: int, *, epochs: int, limit: int) -> None:
        """A stopped study that has not started: the engine's create_study, exactly as `autocnn search` makes it."""
        from autocnn.search.config import SearchConfig
        from autocnn.search.engine import create_study

        create_study(SearchConfig(space=self.space, dataset="digits", trials=trials, epochs=epochs, limit=limit,
                                  resolution=28, sampler="random", pruner="none", study=name, storage=self.storage,
                                  device="cpu"))

    def search(self, name: str, trials: int, *, epochs: int, limit: int) -> subprocess.Popen:
        """A real `autocnn search` in the background (not owned by the dashboard)."""
        with open(self.folder / f"search-{name}.log", "w") as out:
            proc = subprocess.Popen([autocnn_exe(), "search", "--space", self.space, "--dataset", "digits",
                                     "--trials", str(trials), "--epochs", str(epochs), "--limit", str(limit),
                                     "--resolution", "28", "--sampler", "random", "--pruner", "none", "--device",
                                     "cpu", "--study", name, "--storage", self.storage],
                                    stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=self.folder)
        self.children.append(proc)
        return proc

    def crash(self, name: str) -> None:
        """`autocnn search` killed with SIGKILL while a trial is in flight (no finally runs: the worker
        lease and a RUNNING trial are left behind, as after an out-of-memory kill)."""
        proc = self.search(name, 3, **MEDIUM)
        wait_for(lambda: self.finished(name) >= 1 and any(t.state == TrialState.RUNNING for t in self.trials(name)),
                 90, what="a trial in flight after the first one")
        proc.kill()
        proc.wait()

    def trials(self, name: str) -> list:
        try:
            return optuna.load_study(study_name=name, storage=self.storage).get_trials(deepcopy=False)
        except KeyError:  # a background search has not created it yet
            return []

    def finished(self, name: str) -> int:
        """Trials that used the budget, as the dashboard counts them (a candidate pruned untrained, e.g.
        created just as a stop request arrived, is PRUNED but costs nothing)."""
        return sum(counts_toward_budget(t) for t in self.trials(name))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard")
    e = Env(folder)
    result = run_cli("train", "--model", "lenet5", "--dataset", "digits", "--epochs", "2", "--limit", "300",
                     "--resolution", "28", "--device", "cpu", "--study", "trained", "--storage", e.storage, cwd=folder)
    assert result.returncode == 0, result.stderr
    # the crash runs in the background: its 15 s wait for a stale heartbeat overlaps the other tests
    pool = ThreadPoolExecutor(max_workers=1)
    e.crashed = pool.submit(e.crash, "crashed")
    yield e
    pool.shutdown(wait=True)
    for proc in e.children:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for name in ("resumable", "twice", "long", "live", "crashed"):  # workers the dashboard started (their own sessions)
        for pid in worker_pids(e.storage, name):
            os.kill(pid, 9)


@pytest.fixture(scope="module")
def server(env):
    srv = Server(env.storage, env.folder)
    yield srv
    assert srv.stop() == 0, srv.log.read_text()  # SIGTERM: clean shutdown, exit 0


@pytest.fixture(scope="module")
def token_server(env):
    srv = Server(env.storage, env.folder, "--token", TOKEN)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; installed with apt when missing (CI machines start bare)."""
    if not CHROMIUM.exists():
        apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "chromium"]):
            if CHROMIUM.exists():
                break
            try:
                subprocess.run(cmd, env=apt, capture_output=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired):
                break
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's Chromium at /usr/bin/chromium and could not install it; "
                    "run as root: apt-get update && apt-get install -y chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need the playwright package: pip install -e '.[dev]' "
                    "(never 'playwright install': Debian's Chromium is used)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(30_000)
    yield p
    context.close()


def row(page, name: str):
    return page.locator(f'tr[data-study="{name}"]')


def wait_state(page, name: str, state: str, timeout_s: float) -> None:
    page.wait_for_function("([name, state]) => { const b = document.querySelector(`tr[data-study=\"${name}\"] span.state`);"
                           " return b !== null && b.dataset.state === state; }", arg=[name, state],
                           timeout=timeout_s * 1000)


def page_finished(page, name: str) -> int:
    return int(row(page, name).locator(".finished").inner_text())


# -- command line -------------------------------------------------------------------------------------

def test_public_bind_without_token_is_refused(env):
    result = run_cli("dashboard", "--host", "0.0.0.0", "--storage", env.storage, cwd=env.folder)
    assert_user_error(result, "--token")


# -- JSON API -----------------------------------------------------------------------------------------

def test_studies_api_lists_the_finished_study(server):
    s = server.study("trained")
    assert s["state"] == "finished" and (s["finished"], s["requested"]) == (1, 1)
    assert s["space"] == "model" and s["dataset"] == "digits" and s["backend"] == "local"
    assert 0.1 < s["best"] <= 1 and s["worker"] is None
    status, detail = server.get("/api/autocnn/studies/trained")
    assert status == 200
    assert detail["best"][0]["arch"].startswith("net-") and detail["best_stages"][0]["block"] == "conv"
    assert detail["links"]["history"] == f"/dashboard/studies/{s['study_id']}"


@pytest.mark.parametrize("name", ["bad name", "-rf", "a;b", "$(id)", ".hidden", "x" * 200])
def test_malformed_study_name_is_400(server, name):
    quoted = urllib.request.quote(name, safe="")
    for method, path in (("POST", "resume"), ("POST", "stop"), ("POST", "export"), ("GET", None)):
        url = f"{server.url}/api/autocnn/studies/{quoted}" + (f"/{path}" if path else "")
        status, body = request(method, url)
        assert status == 400 and "malformed study name" in body["error"], (method, path, status, body)
    with urllib.request.urlopen(f"{server.url}/studies/x") as res:  # the study page of a well-formed name
        assert res.status == 200
    try:
        urllib.request.urlopen(f"{server.url}/studies/{quoted}")
    except urllib.error.HTTPError as err:  # the page route too, as plain text (the message quotes the name)
        assert err.code == 400 and err.headers["Content-Type"].startswith("text/plain")
    else:
        raise AssertionError("the study page accepted a malformed name")


def test_requests_the_api_refuses(server):
    assert server.post("/api/autocnn/studies/no-such-study/resume")[0] == 404
    assert server.get("/api/autocnn/studies/trained/resume")[0] == 405  # state changes only by POST
    assert server.post("/api/autocnn/studies/trained/resume", {"trials": "many"})[0] == 400
    status, body = server.post("/api/autocnn/studies/trained/resume")
    assert status == 409 and "finished" in body["error"]
    status, body = server.post("/api/autocnn/studies/trained/stop", headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in body["error"]
    assert server.get("/api/autocnn/studies", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding


def test_token_protected_server(env, token_server):
    path = "/api/autocnn/studies/trained/stop"
    assert token_server.post(path)[0] == 401
    assert token_server.post(path, headers={"Authorization": "Bearer wrong-token-000"})[0] == 401
    assert token_server.post(path, headers={"X-Autocnn-Token": TOKEN[:-1]})[0] == 401
    # optuna-dashboard's own state-changing routes are behind the token too
    assert request("DELETE", token_server.url + "/api/studies/1")[0] == 401
    status, body = token_server.post(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 202 and body["stop_requested"] is True
    assert token_server.get("/api/autocnn/studies")[0] == 200  # reading needs no token
    # the browser log-in form (POST) answers 303 with an HttpOnly, SameSite=Strict cookie carrying the token
    cookie = login(token_server.url, TOKEN)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert token_server.post(path, headers={"Cookie": cookie.split(";")[0]})[0] == 202
    assert login(token_server.url, "wrong-token-000") is None


def test_a_ray_study_resumes_on_its_cluster(env, server):
    from autocnn.dashboard.workers import worker_command
    from autocnn.search.config import SearchConfig
    from autocnn.search.engine import create_study

    create_study(SearchConfig(space=env.space, trials=2, study="on-ray", storage=env.storage, backend="ray",
                              extra={"ray": {"address": "10.1.2.3:6379", "scheduler": "asha"}}))
    s = server.study("on-ray")
    assert (s["backend"], s["ray_address"], s["state"]) == ("ray", "10.1.2.3:6379", "stopped")
    cmd = worker_command("on-ray", 5, "ray")
    assert cmd[1:] == ["-m", "autocnn", "search", "--resume", "--study", "on-ray",
                       "--backend", "ray", "--trials", "5"]  # the stored options (address included) apply


def test_resume_twice_concurrently_starts_one_worker_then_stop(env, server, token_server):
    env.create("twice", 40, **MEDIUM)
    assert server.study("twice")["state"] == "stopped"
    barrier = threading.Barrier(2)
    results = []

    def click():
        barrier.wait()
        results.append(server.post("/api/autocnn/studies/twice/resume"))

    threads = [threading.Thread(target=click) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for status, _ in results) == [202, 409], results
    started = next(body for status, body in results if status == 202)
    assert "already" in next(body for status, body in results if status == 409)["error"]
    assert server.post("/api/autocnn/studies/twice/resume")[0] == 409  # a later click too
    assert worker_pids(env.storage, "twice") == [started["worker"]["pid"]]

    wait_for(lambda: env.finished("twice") >= 1, 90, what="the first trial")
    # state lives in the storage: another dashboard process (a restart) sees the same worker
    other = token_server.study("twice")
    assert other["state"] == "running" and other["worker"]["pid"] == started["worker"]["pid"]
    status, body = token_server.post("/api/autocnn/studies/twice/resume", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 409 and "already" in body["error"]  # nor can the other dashboard start a second worker
    assert worker_pids(env.storage, "twice") == [started["worker"]["pid"]]  # still exactly one

    status, body = server.post("/api/autocnn/studies/twice/stop")
    assert status == 202 and body["was_running"]
    at_stop = env.finished("twice")
    wait_for(lambda: server.study("twice")["state"] == "stopped", 60, what="state stopped")
    assert not any(t.state == TrialState.RUNNING for t in env.trials("twice"))
    assert env.finished("twice") <= at_stop + 1  # the running trial finished, no new one started
    wait_for(lambda: not worker_pids(env.storage, "twice"), 20, what="the worker to exit")
    assert server.study("twice")["worker"] is None  # the worker cleared its lease


def test_resume_continues_a_crashed_study(env, server):
    env.crashed.result(timeout=120)  # `autocnn search` SIGKILLed mid-trial (started with the module)
    # the orphaned trial's heartbeat goes stale after the storage's grace period (15 s)
    wait_for(lambda: server.study("crashed")["state"] == "failed", 40, what="state failed")
    status, body = server.post("/api/autocnn/studies/crashed/resume", {"trials": 4})  # and raise the budget
    assert status == 202 and body["requested"] == 4
    wait_for(lambda: server.study("crashed")["state"] == "finished", 120, what="the resumed study to finish")
    s = server.study("crashed")
    assert (s["finished"], s["requested"], s["running"]) == (4, 4, 0)
    assert s["failed"] <= 1 and s["worker"] is None  # the killed trial (failed on resume, retried); no worker left


def test_search_completes_while_the_dashboard_polls_live_sqlite(env, server):
    proc = env.search("live", 4, **QUICK)
    statuses, stop = [], threading.Event()

    def poll():  # as the pages do, a little faster: several readers every 0.2 s
        while not stop.wait(0.2):
            statuses.append(server.get("/api/autocnn/studies")[0])
            status, studies = server.get("/api/studies")  # optuna-dashboard's own API
            statuses.append(status)
            for s in studies.get("study_summaries", []) if status == 200 else []:
                if s["study_name"] == "live":
                    statuses.append(server.get(f"/api/studies/{s['study_id']}?after=0")[0])
                    statuses.append(server.get("/api/autocnn/studies/live")[0])

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert proc.wait(timeout=180) == 0, (env.folder / "search-live.log").read_text()
    finally:
        stop.set()
        poller.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    assert [t.state for t in env.trials("live")] == [TrialState.COMPLETE] * 4
    assert server.study("live")["state"] == "finished"


# -- browser ----------------------------------------------------------------------------------------

def test_browser_resume_runs_a_stopped_study_to_its_budget(env, server, page, tmp_path):
    env.create("resumable", 3, **QUICK)
    page.goto(server.url + "/")
    r = row(page, "resumable")
    r.wait_for()
    assert r.locator("span.state").inner_text() == "stopped"
    page.screenshot(path=tmp_path / "studies-before-resume.png", full_page=True)
    seen = [page_finished(page, "resumable")]
    r.locator("button.resume").click()
    wait_state(page, "resumable", "running", 30)
    deadline = time.monotonic() + 120
    while seen[-1] < 3:
        assert time.monotonic() < deadline, f"the complete-trial count did not reach the budget: {seen}"
        page.wait_for_timeout(200)
        seen.append(page_finished(page, "resumable"))
    assert seen[0] == 0 and seen == sorted(seen)  # watched it grow to the budget
    wait_state(page, "resumable", "finished", 30)
    assert r.locator(".requested").inner_text() == "3"
    assert env.finished("resumable") == 3
    page.screenshot(path=tmp_path / "studies-after-resume.png", full_page=True)
    log = env.folder / "resumable" / "worker.log"
    assert log.is_file() and "resumed from the dashboard" in log.read_text()


def test_browser_stop_stops_a_running_study_within_one_trial(env, server, page, tmp_path):
    proc = env.search("long", 40, **MEDIUM)
    wait_for(lambda: env.finished("long") >= 1, 120, what="the first trial of the running study")
    page.goto(server.url + "/")
    r = row(page, "long")
    r.wait_for()
    wait_state(page, "long", "running", 30)
    page.screenshot(path=tmp_path / "studies-running.png", full_page=True)
    r.locator("button.stop").click()
    page.get_by_text("long: stop requested").wait_for()
    at_stop = env.finished("long")  # read after the request was acknowledged
    wait_state(page, "long", "stopped", 60)
    page.screenshot(path=tmp_path / "studies-stopped.png", full_page=True)
    assert proc.wait(timeout=30) == 0
    assert env.finished("long") <= at_stop + 1  # within one trial: the running one finished, no new one
    assert not any(t.state == TrialState.RUNNING for t in env.trials("long"))
    assert page_finished(page, "long") == env.finished("long")


def test_browser_export_best_downloads_a_model_archive(env, server, page, tmp_path):
    export = pytest.importorskip("autocnn.export", reason="autocnn.export is not in this checkout yet")
    try:
        export.export_trial
    except (AttributeError, ImportError):
        pytest.skip("autocnn.export.export_trial is not in this checkout yet")
    page.goto(server.url + "/")
    r = row(page, "trained")
    r.wait_for()
    r.locator("button.export").click()
    status = wait_for(lambda: (lambda s: s if s["status"] in ("done", "error") else None)(
        server.get("/api/autocnn/studies/trained/export")[1]), 240, interval=0.5, what="the export")
    assert status["status"] == "done", status.get("error")
    link = r.locator("a.download")
    link.wait_for(state="visible", timeout=10_000)
    with page.expect_download() as info:
        link.click()
    target = tmp_path / "trained-best.zip"
    info.value.save_as(target)
    page.screenshot(path=tmp_path / "studies-exported.png", full_page=True)
    names = {Path(n).name for n in zipfile.ZipFile(target).namelist()}
    assert {"model.py", "weights.safetensors", "config.json", "README.md"} <= names, names
    assert (env.folder / "trained" / "export-best" / "model.py").is_file()


def test_browser_study_page_and_optuna_dashboard(env, server, page, tmp_path):
    page.goto(server.url + "/studies/trained")
    page.locator("#best tbody tr").first.wait_for()
    assert page.locator("#best tbody tr .genotype").first.inner_text().startswith("net-")
    assert page.locator("#stages tbody tr").count() >= 4  # LeNet-5: conv, pool, conv, pool, head
    assert page.locator("#stages tbody tr").first.locator("td").nth(1).inner_text() == "conv"
    assert page.locator("#scatter circle").count() == 1
    history = page.locator("#links a").first.get_attribute("href")
    assert history.startswith("/dashboard/studies/")
    page.screenshot(path=tmp_path / "study-page.png", full_page=True)
    page.locator("#links a").first.click()  # into optuna-dashboard's own view of the same study
    page.wait_for_url("**/dashboard/studies/**")
    page.get_by_text("trained").first.wait_for()
    page.screenshot(path=tmp_path / "optuna-dashboard.png", full_page=True)
