"""The HTTP endpoint's replies: /metrics in Prometheus' text format (its content type),
/healthz 200 or 503 as JSON, and any other path 404."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from cfia import http


def _get(server, path):
    host, port = server.server_address[:2]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_health_and_other_paths():
    healthy = {"ok": True}
    server = http.start("127.0.0.1", 0, lambda: (healthy["ok"], {"ok": healthy["ok"]}),
                        lambda: "# TYPE cfia_received_total counter\ncfia_received_total 3\n")
    try:
        code, kind, body = _get(server, "/metrics")
        assert code == 200 and kind.startswith("text/plain") and "version=0.0.4" in kind
        assert "cfia_received_total 3" in body
        assert _get(server, "/healthz")[:2] == (200, "application/json")
        healthy["ok"] = False
        code, kind, body = _get(server, "/healthz")
        assert code == 503 and json.loads(body) == {"ok": False}
        assert _get(server, "/nothing")[0] == 404
        assert _get(server, "/metrics/")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
