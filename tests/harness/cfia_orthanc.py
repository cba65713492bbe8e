"""Orthanc and cfia wired to each other on loopback: the Orthanc peer test and the
try-out harness a site starts by hand (tests/orthanc/run.py) both use this.

    with CfiaOrthanc(workdir, cfia_overrides={...}) as stack:
        stack.orthanc.store(path)                    # upload over REST
        stack.push_to_cfia(orthanc_instance_id)      # POST /modalities/cfia/store
        stack.wait_results(study_id, n)              # poll the study over REST

Orthanc (tests/harness/orthanc.py, Debian's Orthanc) starts with a generated config
that declares cfia as the modality `cfia` (AE title, loopback, cfia's port); cfia
(`cfia serve` in a child process, cfia.local_node) sends every result to Orthanc's DICOM
port as its destination `orthanc`. cfia's port is picked free before Orthanc starts; if
cfia then loses it, a new one is picked and Orthanc's modality is updated over REST.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from cfia.local_node import LocalNode, NodeError, merge

from .net import LOOPBACK, free_port, poll
from .orthanc import Orthanc, OrthancError

MODALITY = "cfia"


class CfiaOrthanc:
    def __init__(self, workdir: str | Path, cfia_overrides: Optional[dict] = None,
                 base_config: Optional[Path] = None, orthanc_config: Optional[dict] = None,
                 orthanc_plugins=(), attempts: int = 3):
        self.workdir = Path(workdir)
        self.cfia_overrides = cfia_overrides or {}
        self.base_config = base_config
        self.orthanc_config = orthanc_config or {}
        self.orthanc_plugins = list(orthanc_plugins)
        self.attempts = attempts
        self.orthanc: Optional[Orthanc] = None
        self.node: Optional[LocalNode] = None
        self.cfia_ae = str(merge({"listener": {"ae_title": "CFIA"}}, self.cfia_overrides)["listener"]["ae_title"])

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> "CfiaOrthanc":
        cfia_port = free_port()
        self.orthanc = Orthanc(merge({
            "Name": "cfia-orthanc",
            "DicomModalities": {MODALITY: {"AET": self.cfia_ae, "Host": LOOPBACK, "Port": cfia_port}},
        }, self.orthanc_config), plugins=self.orthanc_plugins).start()
        try:
            last = ""
            for attempt in range(self.attempts):
                if attempt:
                    cfia_port = free_port()
                    self._set_modality_port(cfia_port)
                self.node = LocalNode(self.workdir / f"cfia-{attempt}", overrides=merge(self.cfia_overrides, {
                    "listener": {"host": LOOPBACK, "port": cfia_port},
                    "destinations": [{"name": "orthanc", "ae_title": self.orthanc.aet, "host": LOOPBACK,
                                      "port": self.orthanc.dicom_port}],
                }), base_config=self.base_config)
                try:
                    self.node.start()
                    return self
                except NodeError as exc:   # most likely lost the port race: try another port
                    last = str(exc)
            raise NodeError(f"cfia did not start after {self.attempts} attempts: {last}")
        except BaseException:
            self.stop()
            raise

    def _set_modality_port(self, port: int) -> None:
        body = json.dumps({"AET": self.cfia_ae, "Host": LOOPBACK, "Port": port}).encode()
        status, answer = self.orthanc.request("PUT", f"/modalities/{MODALITY}", body)
        if status != 200:
            raise OrthancError(f"PUT /modalities/{MODALITY}: HTTP {status}: {answer[:300]!r}")

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.orthanc is not None:
            self.orthanc.stop()

    def __enter__(self) -> "CfiaOrthanc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- Orthanc -> cfia -> Orthanc -------------------------------------------------
    def push_to_cfia(self, resources: list[str] | str) -> dict:
        """Orthanc sends instances (or series, studies) to cfia by C-STORE, synchronously."""
        body = json.dumps({"Resources": [resources] if isinstance(resources, str) else list(resources),
                           "Synchronous": True}).encode()
        status, answer = self.orthanc.request("POST", f"/modalities/{MODALITY}/store", body,
                                              {"Content-Type": "application/json"}, timeout=120)
        if status != 200:
            raise OrthancError(f"POST /modalities/{MODALITY}/store: HTTP {status}: {answer[:500]!r}\n"
                               f"{self.orthanc.log_tail()}")
        return json.loads(answer)

    def study_instances(self, study_id: str) -> list[dict]:
        return self.orthanc.get_json(f"/studies/{study_id}/instances")

    def wait_results(self, study_id: str, count: int, timeout: float = 300) -> list[dict]:
        """Poll until the study holds `count` instances besides the source(s); fails early
        with the reason when cfia dead-letters the job or exits."""
        def ready():
            self.node.check_alive()
            letters = self.node.dead_letters()
            if letters:
                raise AssertionError(f"cfia failed the job: {letters[0].get('reason')}")
            instances = self.study_instances(study_id)
            return instances if len(instances) >= count else None

        try:
            return poll(ready, timeout, interval=0.25, what=f"{count} instances in Orthanc study {study_id}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; cfia queue {self.node.counts()}\n{self.node.log_tail()}") from None

    def describe(self) -> dict[str, Any]:
        """Where everything is, for people: URLs, AE titles, ports, folders."""
        return {
            "orthanc": {"explorer": f"{self.orthanc.rest_url}/app/explorer.html", "rest": self.orthanc.rest_url,
                        "ae_title": self.orthanc.aet, "dicom": f"{LOOPBACK}:{self.orthanc.dicom_port}",
                        "modality_for_cfia": MODALITY, "log": str(self.orthanc.log_path)},
            "cfia": {"ae_title": self.node.ae_title, "dicom": f"{LOOPBACK}:{self.node.port}",
                     "config": str(self.node.config_path), "spool": str(self.node.spool),
                     "log": str(self.node.log_path), "destination": f"{self.orthanc.aet}@{LOOPBACK}:{self.orthanc.dicom_port}"},
        }
