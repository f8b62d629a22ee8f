"""A small local web server that keeps a regenerated report page (``selflearn report --serve``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ops.report.html import esc

log = logging.getLogger(__name__)


class ReportServer:
    """A local HTTP server whose page ``regenerate()`` refreshes every ``every`` seconds.

    ``GET /`` returns the latest page; a failed regeneration keeps the last good one.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, port: int, regenerate: Callable[[], str], *, every: float = 5.0,
                 host: str = "127.0.0.1") -> None:
        self.regenerate, self.every = regenerate, every
        self.page = self._render()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html", "/report.html"):
                    body, status = server.page.encode("utf-8"), 200
                elif path == "/favicon.ico":
                    body, status = b"", 204
                else:
                    body, status = b"not found", 404
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("report server: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._threads = [threading.Thread(target=self.httpd.serve_forever, name="report-http",
                                          daemon=True),
                         threading.Thread(target=self._refresh, name="report-regen", daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host  # str for AF_INET
        return f"http://{name}:{port}/"

    def _render(self) -> str:
        try:
            return self.regenerate()
        except Exception as exc:  # noqa: BLE001 - keep serving; show the failure
            log.warning("report regeneration failed: %s", exc)
            previous = getattr(self, "page", None)
            return previous or (
                '<!DOCTYPE html><html><head><meta http-equiv="refresh" content="5">'
                '<link rel="icon" href="data:,"><title>selflearn report</title></head><body>'
                f"<p>report not available yet: {esc(exc)}</p></body></html>")

    def _refresh(self) -> None:
        while not self._stop.wait(self.every):
            self.page = self._render()

    def close(self) -> None:
        """Stop serving and regenerating."""
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=10)

    def __enter__(self) -> ReportServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(port: int, regenerate: Callable[[], str], *, every: float = 5.0,
          host: str = "127.0.0.1") -> ReportServer:
    """Serve ``regenerate()``'s page on ``http://host:port/`` (0: a free port), refreshed."""
    return ReportServer(port, regenerate, every=every, host=host)
