"""The dashboard web application: optuna-dashboard's UI under `/dashboard` plus autocnn's pages and API.

    app = make_app("sqlite:///studies/autocnn.db")          # a WSGI application
    serve(app, "127.0.0.1", 8080)                           # autocnn.dashboard.server

Routes added to optuna-dashboard's bottle app:

    GET  /                                   studies page          GET /studies/<name>   study page
    GET  /api/autocnn/studies                every study (JSON)    GET /api/autocnn/studies/<name>
    POST /api/autocnn/studies/<name>/resume  body {"trials": N}?   POST .../stop   POST .../export
    GET  /api/autocnn/studies/<name>/export  export status         GET .../export.zip

Every request passes `Guard`. Bound beyond loopback, every route (pages, API, `export.zip`) needs
the token: `Authorization: Bearer T`, `X-Autocnn-Token: T`, or the HttpOnly cookie the log-in form
(`GET /login`, `POST /login` with field `token`) sets; pages without it redirect to `/login`, the
rest answer 401. On loopback a token, when set, guards state changes only. State changes (any method
but GET/HEAD) must be same-origin; on a loopback bind the Host header must name the loopback (DNS rebinding).
"""
from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import math
import os
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import bottle
import optuna_dashboard

from autocnn.dashboard.exports import ARCHIVE, Exports
from autocnn.dashboard.state import DashboardError, check_name, detail, list_studies, row
from autocnn.dashboard.workers import Workers
from autocnn.errors import AutocnnError
from autocnn.storage import DEFAULT_STORAGE, open_storage

STATIC_DIR = Path(__file__).with_name("static")
TOKEN_COOKIE = "autocnn_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOGIN_ROUTES = ("/login",)
PUBLIC_PREFIX = "/autocnn/static/"  # the pages' own CSS and JavaScript, shipped in the package: nothing secret
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


def default_artifact_root(storage_url: str) -> Path:
    """The studies' artifact root (`autocnn.artifacts`): the SQLite file's folder, else ./studies.
    A study's folder `<root>/<name>/` holds its trials' weights, the worker log and the exports."""
    from autocnn.artifacts import artifact_root

    return artifact_root(storage_url)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _clean(obj: Any) -> Any:
    """JSON without NaN/Infinity (browsers' JSON.parse rejects them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _json(status: int, payload: Any) -> str:
    bottle.response.status = status
    bottle.response.content_type = "application/json"
    bottle.response.set_header("Cache-Control", "no-store")
    bottle.response.set_header("X-Content-Type-Options", "nosniff")
    return json.dumps(_clean(payload), default=str)


def api(fn: Callable) -> Callable:
    """A JSON route: returns (status, payload); DashboardError and AutocnnError become error JSON."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            status, payload = fn(*args, **kwargs)
        except DashboardError as err:
            return _json(err.status, {"error": str(err)})
        except AutocnnError as err:
            return _json(409, {"error": str(err)})
        return _json(status, payload)

    return wrapper


def _body() -> dict:
    raw = bottle.request.body.read(65536) if bottle.request.content_length else b""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise DashboardError(400, "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise DashboardError(400, "the request body must be a JSON object")
    return data


class Dashboard:
    """The WSGI application: `Guard` around optuna-dashboard's bottle app with autocnn's routes added."""

    def __init__(self, storage_url: str, *, token: str | None = None, artifact_root: str | Path | None = None,
                 loopback_only: bool = True) -> None:
        self.storage_url = storage_url
        self.storage = open_storage(storage_url, create=False, heartbeat=True)
        self.artifact_root = Path(artifact_root) if artifact_root else default_artifact_root(storage_url)
        self._root_given = artifact_root is not None
        self.workers = Workers(self.storage, storage_url, self.artifact_dir)
        self.exports = Exports(self.storage, storage_url, self.artifact_dir)
        self.bottle = optuna_dashboard.wsgi(self.storage)
        self._add_routes(self.bottle)
        self.guard = Guard(self.bottle, token=token, loopback_only=loopback_only)

    def __call__(self, environ, start_response):
        return self.guard(environ, start_response)

    def artifact_dir(self, name: str) -> Path:
        """`<root>/<name>`: the root of `--artifacts`, else the study's stored one (where its weights are)."""
        name = check_name(name)
        if self._root_given:
            return self.artifact_root / name
        from autocnn.artifacts import study_artifact_root
        from autocnn.search.config import CONFIG_ATTR, SearchConfig

        try:
            raw = self.storage.get_study_user_attrs(self.storage.get_study_id_from_name(name)).get(CONFIG_ATTR)
        except KeyError:  # no such study (yet): the default root
            raw = None
        return study_artifact_root(SearchConfig.from_dict(raw) if raw else None, self.storage_url) / name

    # -- views ------------------------------------------------------------------------------------
    def studies(self) -> list[dict]:
        self.workers.reap()
        rows = []
        for name in list_studies(self.storage):
            try:
                item = row(self.workers.inspect(name))
            except DashboardError:  # deleted while listing
                continue
            item["export"] = self.exports.status(name) if item["controllable"] else {"status": "none"}
            rows.append(item)
        return rows

    def _add_routes(self, app: bottle.Bottle) -> None:
        page = self._page
        app.route("/", "GET", lambda: page("studies.html"))  # replaces optuna-dashboard's redirect
        app.route("/studies/<name>", "GET", lambda name: page("study.html", name))
        # a form POST from a no-referrer page carries `Origin: null`, which the same-origin check refuses
        app.route("/login", "GET", lambda: page("login.html", headers={"Referrer-Policy": "same-origin"}))
        app.route("/autocnn/static/<filename:path>", "GET", self._static)
        app.route("/api/autocnn/studies", "GET", api(lambda: (200, {"studies": self.studies()})))
        app.route("/api/autocnn/studies/<name>", "GET", api(self._detail))
        app.route("/api/autocnn/studies/<name>/resume", "POST", api(self._resume))
        app.route("/api/autocnn/studies/<name>/stop", "POST", api(self._stop))
        app.route("/api/autocnn/studies/<name>/export", "POST", api(self._export))
        app.route("/api/autocnn/studies/<name>/export", "GET", api(self._export_status))
        app.route("/api/autocnn/studies/<name>/export.zip", "GET", self._export_zip)

    def _page(self, filename: str, name: str | None = None, headers: dict | None = None):
        if name is not None:
            try:
                check_name(name)
            except DashboardError as err:  # plain text: the message quotes the name
                bottle.response.status = 400
                bottle.response.content_type = "text/plain; charset=utf-8"
                bottle.response.set_header("X-Content-Type-Options", "nosniff")
                return str(err)
        return bottle.static_file(filename, root=str(STATIC_DIR), mimetype="text/html",
                                  headers={**PAGE_HEADERS, **(headers or {})})

    def _static(self, filename: str):
        return bottle.static_file(filename, root=str(STATIC_DIR), headers={"X-Content-Type-Options": "nosniff",
                                                                           "Cache-Control": "no-cache"})

    def _detail(self, name: str):
        return 200, {**detail(self.workers.inspect(check_name(name))),
                     "export": self.exports.status(name)}

    def _resume(self, name: str):
        trials = _body().get("trials")
        return 202, self.workers.resume(check_name(name), trials)

    def _stop(self, name: str):
        _body()
        return 202, self.workers.stop(check_name(name))

    def _export(self, name: str):
        _body()
        return 202, self.exports.start(check_name(name))

    def _export_status(self, name: str):
        check_name(name)
        self.workers.inspect(name)  # 404 for an unknown study
        return 200, self.exports.status(name)

    def _export_zip(self, name: str):
        try:
            check_name(name)
        except DashboardError as err:
            return _json(err.status, {"error": str(err)})
        archive = self.exports.archive(name)
        if not archive.is_file():
            return _json(404, {"error": f"study {name!r} has no export yet; POST .../export first"})
        return bottle.static_file(ARCHIVE, root=str(archive.parent), download=f"{name}-best.zip",
                                  mimetype="application/zip")


class Guard:
    """Token, same-origin and Host checks in front of every route (optuna-dashboard's too)."""

    def __init__(self, app, *, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    def _deny(self, start_response, status: str, message: str, headers=()):
        body = json.dumps({"error": message}).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                 *headers])
        return [body]

    def _presented_token(self, environ) -> str | None:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if environ.get("HTTP_X_AUTOCNN_TOKEN"):
            return environ["HTTP_X_AUTOCNN_TOKEN"].strip()
        cookie = SimpleCookie()
        try:
            cookie.load(environ.get("HTTP_COOKIE", ""))
        except Exception:
            return None
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel.value if morsel else None

    def _token_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.token.encode())

    def _login(self, environ, start_response):
        """POST /login (form field `token`): the token becomes an HttpOnly cookie, never part of a URL."""
        try:
            size = min(int(environ.get("CONTENT_LENGTH") or 0), 4096)
        except ValueError:
            size = 0
        form = parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace")) if size else {}
        if not self.token or not self._token_ok((form.get("token") or [None])[0]):
            return self._deny(start_response, "401 Unauthorized", "wrong token")
        cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        start_response("303 See Other", [("Location", "/"), ("Set-Cookie", cookie), ("Content-Length", "0"),
                                         ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer")])
        return [b""]

    def __call__(self, environ, start_response):
        host = environ.get("HTTP_HOST")
        if self.loopback_only and host and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return self._deny(start_response, "403 Forbidden", f"Host {host!r} is not this loopback server")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO") or "/"
        if method not in SAFE_METHODS:
            origin = environ.get("HTTP_ORIGIN")
            if origin and urlsplit(origin).netloc != host:  # "null" (sandboxed frames) is refused too
                return self._deny(start_response, "403 Forbidden", f"cross-origin request from {origin} refused")
        if path in LOGIN_ROUTES or path.startswith(PUBLIC_PREFIX):
            if method == "POST" and path in LOGIN_ROUTES:
                return self._login(environ, start_response)
            return self.app(environ, start_response)  # the form itself
        # exposed beyond loopback, every route needs the token (study data, weights); on loopback, writes only
        needs_token = self.token and (not self.loopback_only or method not in SAFE_METHODS)
        if needs_token and not self._token_ok(self._presented_token(environ)):
            if method in ("GET", "HEAD") and not path.startswith("/api/") and not path.endswith(".zip"):
                start_response("303 See Other", [("Location", "/login"), ("Content-Length", "0"),
                                                 ("Cache-Control", "no-store")])
                return [b""]
            return self._deny(start_response, "401 Unauthorized",
                              "this dashboard needs its token: send 'Authorization: Bearer TOKEN' "
                              "or log in at /login in the browser",
                              headers=[("WWW-Authenticate", 'Bearer realm="autocnn"')])
        return self.app(environ, start_response)


def make_app(storage_url: str | None = None, token: str | None = None, artifact_root: str | Path | None = None,
             *, loopback_only: bool = True) -> Dashboard:
    """The dashboard WSGI app for one storage (default: $AUTOCNN_STORAGE or studies/autocnn.db)."""
    url = storage_url or os.environ.get("AUTOCNN_STORAGE", DEFAULT_STORAGE)
    return Dashboard(url, token=token, artifact_root=artifact_root, loopback_only=loopback_only)
