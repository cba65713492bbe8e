"""`cfia serve` as a child process on loopback: for `cfia demo`, the peer tests and the
Orthanc try-out harness (tests/orthanc/).

    with LocalNode(workdir, overrides={"destinations": [...]}) as node:
        node.port, node.ae_title          # where to push
        node.counts()                     # the job queue's counts by state

The node's config is a base config file (default: the shipped config.yaml) with the
given overrides merged over it, relative paths already resolved against the base
file's folder, written to `workdir/config.yaml`; the spool is `workdir/spool` unless
overridden. It listens on 127.0.0.1 on a port the OS picks (port 0; the real one is
read back from the spool's serve.json), so nothing collides with other nodes.
The child runs in its own session: stop() sends SIGTERM (the node's clean stop) and,
if it does not exit in time, kills the whole process group (server and workers).
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from . import config as config_mod
from . import status
from .install import CHECKOUT as PACKAGE_ROOT
from .install import SHIPPED_CONFIG


class NodeError(RuntimeError):
    """The node did not start, or died; the message ends with its log's tail."""


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, recursively for mappings; lists and scalars replace."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "return_to_sender":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def effective_config(base: Optional[Path], overrides: dict) -> dict:
    """The base config (validated, paths absolute) with `overrides` merged over it,
    validated again; returned as plain data ready to be written as YAML. No `base`: the
    shipped config, or the built-in defaults where there is none; a `base` that cannot be
    read is a ConfigError (as for `cfia serve`), never the defaults."""
    if base:
        base = Path(base)
        cfg = config_mod.load(base)
    else:
        base = SHIPPED_CONFIG
        cfg = config_mod.load(base) if base.exists() else config_mod.Config()
    raw = config_mod.to_dict(cfg)
    merged = merge(raw, overrides)
    config_mod.from_dict(merged, base=base.parent)  # raises ConfigError naming a bad override
    return merged


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call `check` until it returns something truthy; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class LocalNode:
    def __init__(self, workdir: str | Path, overrides: Optional[dict] = None, base_config: Optional[Path] = None,
                 python: str = sys.executable, env: Optional[dict] = None, log_name: str = "serve.log"):
        self.workdir = Path(workdir).resolve()  # serve runs with it as cwd: a relative path would not resolve twice
        self.workdir.mkdir(parents=True, exist_ok=True)
        defaults = {"listener": {"host": "127.0.0.1", "port": 0},
                    "spool": {"folder": str(self.workdir / "spool")},
                    "http": {"enabled": False}}
        self.config = effective_config(base_config, merge(defaults, overrides or {}))
        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.spool = Path(self.config["spool"]["folder"])
        self.log_path = self.workdir / log_name
        pythonpath = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
        self.python = python
        self.process: Optional[subprocess.Popen] = None
        self.info: dict = {}

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> dict:
        """Start `cfia serve`; returns its serve.json (pid, ae_title, host, dicom_port)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "cfia.cli", "serve", "--config", str(self.config_path)],
                cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.info = wait_for(self._serve_info, timeout, "cfia serve to start")
        except TimeoutError as exc:
            self.stop()
            raise NodeError(f"{exc}\n{self.log_tail()}") from None
        return self.info

    def _serve_info(self) -> Optional[dict]:
        self.check_alive()
        info = status.read_serve_info(self.spool)
        return info if info and info.get("pid") == self.process.pid else None

    def check_alive(self) -> None:
        """NodeError if the node has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise NodeError(f"cfia serve exited with status {self.process.returncode}\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM, wait up to `timeout`, then kill the process group. Returns the exit status."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # workers are in the same session: none may outlive the demo or the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)
        return proc.returncode

    def __enter__(self) -> "LocalNode":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what it is doing ---------------------------------------------------------
    @property
    def host(self) -> str:
        return self.info.get("host", "127.0.0.1")

    @property
    def port(self) -> int:
        return int(self.info["dicom_port"])

    @property
    def ae_title(self) -> str:
        return str(self.config["listener"]["ae_title"])

    @property
    def enabled_outputs(self) -> list[str]:
        return [name for name, on in self.config["outputs"].items() if on]

    def counts(self) -> dict[str, int]:
        from listener import JobQueue

        queue = JobQueue(self.spool / "queue.sqlite")
        try:
            return queue.counts()
        finally:
            queue.close()

    def dead_letters(self) -> list[dict]:
        """reason.json of every dead-lettered job."""
        found = []
        for path in sorted((self.spool / "dead-letter").glob("*/reason.json")):
            if not path.parent.name.isdigit():   # <job>.requeued-<time>: sent back to the queue
                continue
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
