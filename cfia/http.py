"""Optional HTTP endpoint: /healthz (200 or 503, JSON) and Prometheus /metrics."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger("cfia.http")


IDLE_TIMEOUT_SECONDS = 10.0


def start(host: str, port: int, health: Callable[[], tuple[bool, dict]], metrics: Callable[[], str],
          idle_timeout: float = IDLE_TIMEOUT_SECONDS):
    """Serve in a daemon thread; returns the server (`.server_address`, `.shutdown()`)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = idle_timeout  # a client that connects and sends nothing would hold a thread for ever

        def do_GET(self):  # noqa: N802 (http.server's naming)
            try:
                if self.path == "/healthz":
                    ok, body = health()
                    self._reply(200 if ok else 503, "application/json", json.dumps(body))
                elif self.path == "/metrics":
                    self._reply(200, "text/plain; version=0.0.4", metrics())
                else:
                    self._reply(404, "text/plain", "not found\n")
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: nothing to tell
                pass
            except Exception:
                log.exception("http handler error")
                self._reply(500, "text/plain", "internal error\n")

        def _reply(self, code: int, kind: str, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet: scrapers poll every few seconds
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="cfia-http", daemon=True).start()
    log.info("http listening", extra={"host": server.server_address[0], "port": server.server_address[1]})
    return server
