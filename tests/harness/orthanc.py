"""Debian's Orthanc as a test peer: a config dict in, a running process and its REST base out.

    with Orthanc({"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}},
                 plugins=[DICOMWEB_PLUGIN]) as server:
        server.store(path)                      # POST /instances
        server.get_json("/studies")
        server.rest_url, server.http_port, server.dicom_port, server.aet

Ports are picked free on loopback (retried if Orthanc loses the race), storage lives
in a fresh temporary folder, readiness is polled on GET /system, and stop() terminates
the process and waits for it. Orthanc accepts HTTP from loopback only
(RemoteAccessAllowed false); its DICOM server is on unless the config turns it off.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .net import LOOPBACK, free_port, poll

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGIN_DIR / "libOrthancDicomWeb.so"       # Debian orthanc-dicomweb
SERVE_FOLDERS_PLUGIN = PLUGIN_DIR / "libServeFolders.so"


class OrthancError(RuntimeError):
    pass


def available() -> str | None:
    """None if Orthanc can run here, else why not."""
    return None if Path(ORTHANC).exists() else f"{ORTHANC} not found (apt-get install orthanc)"


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Orthanc:
    """One Orthanc process. `config` is merged over a safe test base; ports, storage
    folders and plugins are filled in by the launcher (values in `config` win, except
    HttpPort/DicomPort, which are always free ports)."""

    def __init__(self, config: dict[str, Any] | None = None, plugins: list[str | Path] = (),
                 start_timeout: float = 30.0, attempts: int = 3):
        self.extra = dict(config or {})
        self.plugins = [str(p) for p in plugins]
        self.start_timeout = start_timeout
        self.attempts = attempts
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.config: dict[str, Any] = {}
        self.http_port = self.dicom_port = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "Orthanc":
        why = available()
        if why:
            raise OrthancError(why)
        missing = [p for p in self.plugins if not Path(p).exists()]
        if missing:
            raise OrthancError(f"Orthanc plugins not found: {missing}")
        self.workdir = Path(tempfile.mkdtemp(prefix="cfia-orthanc-"))
        last = ""
        for attempt in range(self.attempts):
            self.http_port, self.dicom_port = free_port(), free_port()
            self.config = _merge({
                "Name": "cfia-test",
                "AuthenticationEnabled": False,
                "RemoteAccessAllowed": False,      # HTTP from loopback only
                "DicomAet": "ORTHANC",
                "DicomServerEnabled": True,
                "HttpCompressionEnabled": False,
                "ConcurrentJobs": 1,
                "HttpThreadsCount": 16,
                "StorageCompression": False,
                "StableAge": 1,
            }, self.extra)
            self.config.update({
                "StorageDirectory": str(self.workdir / "db"),
                "IndexDirectory": str(self.workdir / "db"),
                "TemporaryDirectory": str(self.workdir / "tmp"),
                "HttpPort": self.http_port,
                "DicomPort": self.dicom_port,
                "Plugins": self.plugins + list(self.extra.get("Plugins", [])),
            })
            (self.workdir / "tmp").mkdir(exist_ok=True)
            cfg_path = self.workdir / "orthanc.json"
            cfg_path.write_text(json.dumps(self.config, indent=2))
            self.log_path = self.workdir / f"orthanc-{attempt}.log"
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen([ORTHANC, str(cfg_path)], stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=self.workdir)
            try:
                poll(self._ready, self.start_timeout, what=f"Orthanc on port {self.http_port}")
                return self
            except OrthancError as exc:   # exited: most likely lost a port race; retry
                last = str(exc)
            except TimeoutError as exc:
                last = str(exc)
                self._terminate()
        raise OrthancError(f"Orthanc did not start after {self.attempts} attempts: {last}\n{self.log_tail()}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise OrthancError(f"Orthanc exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(self.rest_url + "/system", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        self._terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except (AttributeError, OSError):
            return ""

    # -- REST ------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def aet(self) -> str:
        return self.config.get("DicomAet", "ORTHANC")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, bytes]:
        req = urllib.request.Request(self.rest_url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise OrthancError(f"GET {path}: HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def store(self, dicom: bytes | str | Path) -> dict:
        """POST /instances; returns Orthanc's answer ({"ID", "Status", ...}). Raises on refusal."""
        data = dicom if isinstance(dicom, bytes) else Path(dicom).read_bytes()
        status, body = self.request("POST", "/instances", data, {"Content-Type": "application/dicom"})
        if status != 200:
            raise OrthancError(f"Orthanc refused the instance: HTTP {status}: {body[:500]!r}")
        return json.loads(body)
