"""A small threaded WSGI server (the standard library's wsgiref, one thread per request) with clean shutdown.

    server = DashboardServer(app, "127.0.0.1", 0)   # port 0: any free port
    server.start()                                  # serves in a background thread
    print(server.url)
    server.stop()                                   # stops accepting, closes the socket
"""
from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never blocks shutdown
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # the page polls every second: no access log
        pass


class DashboardServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int = 8080) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self.httpd = make_server(host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "DashboardServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="autocnn-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
