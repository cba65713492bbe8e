"""The prebuilt OHIF viewer, served with DICOMweb on the same origin.

OHIF comes from the npm package `@ohif/app` (version pinned in OHIF_VERSION), whose
`dist/` is a static build. `make viewer-deps` packs it into a cache folder outside
git: $CFIA_OHIF_DIR if set, else ~/.cache/cfia/ohif/<version>/package/dist.

OhifServer is one small threaded HTTP server on a free loopback port that
- serves dist/ (unknown paths fall back to index.html: OHIF is a single-page app),
- serves a generated /app-config.js whose DICOMweb data source is this same origin,
- proxies /dicom-web/* (and /wado) to Orthanc's DICOMweb plugin.

Same origin means no CORS, and Orthanc's DicomWeb "Host" must be this server's
host:port (it writes absolute BulkDataURIs from it): start the server first, then
Orthanc with `dicomweb_config(server.origin_host)`, then `server.set_upstream(...)`.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .net import LOOPBACK

OHIF_VERSION = "3.13.2"
DICOMWEB_ROOT = "/dicom-web"
PROXIED = (DICOMWEB_ROOT + "/", "/wado")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "content-encoding"}


def dist_dir() -> Path:
    env = os.environ.get("CFIA_OHIF_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "cfia" / "ohif" / OHIF_VERSION / "package" / "dist"


def available() -> str | None:
    """None if the OHIF build is in place, else why not."""
    index = dist_dir() / "index.html"
    return None if index.exists() else f"OHIF {OHIF_VERSION} not found at {index.parent} (make viewer-deps)"


def dicomweb_config(host: str) -> dict:
    """Orthanc config for its DICOMweb plugin behind this server (`host` = 'ip:port' the browser uses)."""
    return {"DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT + "/", "EnableWado": True, "WadoRoot": "/wado",
                         "Host": host, "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"}}


def app_config(origin: str, extra: dict | None = None) -> str:
    """window.config for OHIF: one DICOMweb data source at `origin`, no prompts, no network
    beyond it. `extra` is merged over the top level."""
    config = {
        "routerBasename": "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        # No onboarding tour popping up over the viewport.
        "customizationService": {"ohif.tours": {"$set": []}},
        "maxNumberOfWebWorkers": 1,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        # Open a SEG without the "Do you want to open this Segmentation?" dialog.
        "disableConfirmationPrompts": True,
        "investigationalUseDialog": {"option": "never"},
        "showErrorDetails": "always",
        "defaultDataSourceName": "orthanc",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "orthanc",
            "configuration": {
                "friendlyName": "Orthanc (cfia test)",
                "name": "orthanc",
                "wadoUriRoot": origin + "/wado",
                "qidoRoot": origin + DICOMWEB_ROOT,
                "wadoRoot": origin + DICOMWEB_ROOT,
                "qidoSupportsIncludeField": False,
                "supportsReject": False,
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": True,
                "staticWado": False,
                "singlepart": "bulkdata,video",
                "omitQuotationForMultipartRequest": True,
                "bulkDataURI": {"enabled": True},
            },
        }],
    }
    config.update(extra or {})
    return "window.config = " + json.dumps(config, indent=2) + ";\n"


class _Handler(SimpleHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json"}

    def log_message(self, fmt, *args):  # one line per request into the server's log list
        self.server.requests.append(fmt % args)

    # -- routing ---------------------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        if path.startswith(PROXIED):
            return self._proxy(method)
        if method == "POST":
            return self.send_error(405)
        if path == "/app-config.js":
            return self._send_bytes(self.server.app_config.encode(), "text/javascript", method)
        local = Path(self.translate_path(self.path))
        if not local.exists():  # single-page app route (/viewer, /segmentation, ...)
            self.path = "/index.html"
        return super().do_GET() if method == "GET" else super().do_HEAD()

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _send_bytes(self, body: bytes, content_type: str, method: str = "GET", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _proxy(self, method: str) -> None:
        upstream = self.server.upstream
        if upstream is None:
            return self.send_error(503, "no DICOMweb upstream yet")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        headers["Host"] = self.server.origin_host   # what Orthanc would see without the proxy
        conn = http.client.HTTPConnection(*upstream, timeout=120)
        try:
            conn.request(method, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            self.server.errors.append(f"{method} {self.path}: {exc}")
            return self.send_error(502, str(exc))
        finally:
            conn.close()
        if resp.status >= 400:
            self.server.errors.append(f"{method} {self.path}: upstream HTTP {resp.status}")
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    app_config = ""
    upstream: tuple[str, int] | None = None
    origin_host = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests: list[str] = []
        self.errors: list[str] = []


class OhifServer:
    """Serves OHIF's dist/ and proxies DICOMweb, on one free loopback port.

        with OhifServer() as web:
            with Orthanc(dicomweb_config(web.origin_host), plugins=[DICOMWEB_PLUGIN]) as orthanc:
                web.set_upstream(orthanc.http_port)
                browser.get(web.viewer_url(study_uid))
    """

    def __init__(self, dist: Path | None = None, config_extra: dict | None = None):
        self.dist = Path(dist or dist_dir())
        self.config_extra = config_extra
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "OhifServer":
        why = available() if self.dist == dist_dir() else (None if (self.dist / "index.html").exists()
                                                           else f"no index.html in {self.dist}")
        if why:
            raise FileNotFoundError(why)
        self._httpd = _Server((LOOPBACK, 0), partial(_Handler, directory=str(self.dist)))
        self._httpd.origin_host = f"{LOOPBACK}:{self._httpd.server_address[1]}"
        self._httpd.app_config = app_config(self.origin, self.config_extra)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ohif-server", daemon=True)
        self._thread.start()
        return self

    def set_upstream(self, orthanc_http_port: int, host: str = LOOPBACK) -> None:
        self._httpd.upstream = (host, orthanc_http_port)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def __enter__(self) -> "OhifServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def origin_host(self) -> str:
        return self._httpd.origin_host

    @property
    def origin(self) -> str:
        return "http://" + self.origin_host

    @property
    def proxy_errors(self) -> list[str]:
        return list(self._httpd.errors)

    def viewer_url(self, study_uid: str, mode: str = "viewer") -> str:
        return f"{self.origin}/{mode}?StudyInstanceUIDs={study_uid}"
