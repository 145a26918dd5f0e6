"""autocnn's dashboard: optuna-dashboard's UI plus pages and a JSON API to resume, stop and export studies.

    from autocnn.dashboard import DashboardServer, make_app
    server = DashboardServer(make_app("sqlite:///studies/autocnn.db"), "127.0.0.1", 8080).start()

`autocnn dashboard` runs the same from the command line; see docs/dashboard.md.
"""
from autocnn.dashboard.app import Dashboard, make_app
from autocnn.dashboard.server import DashboardServer

__all__ = ["Dashboard", "DashboardServer", "make_app"]
