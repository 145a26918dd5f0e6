"""`autocnn dashboard`: optuna-dashboard plus resume, stop and export of studies, in the browser."""
from __future__ import annotations

import re
import signal
import threading

import click

from autocnn.cli import cli
from autocnn.errors import AutocnnError

TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{8,256}$")


class DashboardOptionError(AutocnnError):
    """A dashboard option that cannot work."""


@cli.command()
@click.option("--storage", default=None, help="SQLAlchemy URL (default sqlite:///studies/autocnn.db).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port.")
@click.option("--token", default=None, envvar="AUTOCNN_DASHBOARD_TOKEN",
              help="Secret every state-changing request must carry (env AUTOCNN_DASHBOARD_TOKEN).")
@click.option("--artifacts", type=click.Path(file_okay=False), default=None,
              help="Artifact root: <root>/<study>/ holds worker logs and exports "
                   "(default: the studies' root, the SQLite file's folder or ./studies).")
def dashboard(storage: str | None, host: str, port: int, token: str | None, artifacts: str | None) -> None:
    """Serve the studies page, study pages and optuna-dashboard (under /dashboard) on one port."""
    from autocnn.dashboard import DashboardServer, make_app
    from autocnn.dashboard.app import is_loopback

    loopback = is_loopback(host)
    if not loopback and not token:
        raise DashboardOptionError(f"--host {host} exposes the dashboard beyond this machine; pass --token SECRET "
                                   "(e.g. from: python -c 'import secrets; print(secrets.token_urlsafe())')")
    if token is not None and not TOKEN_PATTERN.match(token):
        raise DashboardOptionError("--token must be 8-256 characters of letters, digits and . _ ~ -")
    app = make_app(storage, token=token, artifact_root=artifacts, loopback_only=loopback)
    try:
        server = DashboardServer(app, host, port)
    except OSError as err:
        raise DashboardOptionError(f"cannot listen on {host}:{port} ({err.strerror or err}); "
                                   "pick another --port or --host") from None
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    click.echo(f"autocnn dashboard on {server.url}  (storage {app.storage_url}, artifacts {app.artifact_root})",
               err=False)
    if token:
        click.echo(f"log in at {server.url}/login with the token")
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        click.echo("dashboard stopped; workers it started keep running")
