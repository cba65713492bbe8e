"""`cfia serve` as a subprocess: dcmtk peers, SIGTERM, kill -9 and restart, logs, status."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from listener import JobQueue
from node_helpers import (PATIENT_NAME_PREFIX, FailingQueue, StorageSCP, dead_letter_job, mammogram, poll, push,
                          write)
from peer_helpers import ECHOSCU, STORESCP, STORESCU, DcmtkStoreSCP, require_programs

ROOT = Path(__file__).resolve().parent.parent


class Serve:
    """One `cfia serve` process in its own session (so kill -9 takes its workers too)."""

    def __init__(self, tmp_path: Path, dest_port: int, processor: str, log_format="text",
                 outputs=None, fake_seconds="2", name="serve", ports=None):
        self.spool = tmp_path / "spool"
        self.config = tmp_path / "config.yaml"
        ports = ports or {}
        self.config.write_text(yaml.safe_dump({
            "listener": {"ae_title": "CFIA", "port": ports.get("dicom", 0), "study_quiet_seconds": 5},
            "destinations": [{"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}],
            "spool": {"folder": str(self.spool), "max_retries": 2, "send_backoff_seconds": 0.2,
                      "send_backoff_max_seconds": 1},
            "workers": {"count": 1, "processor": processor, "stop_timeout_seconds": 20},
            "outputs": outputs or {},
            "logging": {"format": log_format, "level": "INFO"},
            "http": {"enabled": True, "port": ports.get("http", 0)},
        }))
        self.log = tmp_path / f"{name}.log"
        # tests/ too: a processor defined in this module (gated_blob) is importable by the workers
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                    "CFIA_FAKE_SECONDS": fake_seconds}
        self.proc = None

    def launch(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cfia.cli", "serve", "--config", str(self.config)],
                                         cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)

    def start(self) -> dict:
        self.launch()
        return poll(self._info, 60, what="cfia serve to start")

    def _info(self):
        assert self.proc.poll() is None, f"cfia serve exited early:\n{self.log.read_text()[-3000:]}"
        try:
            info = json.loads((self.spool / "serve.json").read_text())
        except (OSError, ValueError):
            return None
        return info if info["pid"] == self.proc.pid else None

    def counts(self) -> dict:
        q = JobQueue(self.spool / "queue.sqlite")
        try:
            return q.counts()
        finally:
            q.close()

    def terminate(self, timeout=60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill_all(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill_all()


@pytest.fixture
def serves():
    started = []
    yield started
    for s in started:
        s.cleanup()


def test_serve_with_dcmtk_peers_status_metrics_and_clean_sigterm(tmp_path, serves):
    require_programs(STORESCP, STORESCU, ECHOSCU)
    storescp = DcmtkStoreSCP(tmp_path / "received", ae_title="DEST")
    received = storescp.folder
    try:
        node = Serve(tmp_path, storescp.port, "cfia.bench.processors:blob")
        serves.append(node)
        info = node.start()
        source = mammogram(0)
        path = write(source, tmp_path / "mg.dcm")
        subprocess.run([str(STORESCU), "-aet", "MODALITY", "-aec", "CFIA", "127.0.0.1", str(info["dicom_port"]),
                        str(path)], check=True, capture_output=True, timeout=60)
        poll(lambda: node.counts()["done"] == 1, 120, what="the job to be done")
        assert len(list(received.iterdir())) == 5

        status = subprocess.run([sys.executable, "-m", "cfia.cli", "status", "--config", str(node.config)],
                                cwd=ROOT, env=node.env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "done 1" in status.stdout and "server: running" in status.stdout
        base = f"http://127.0.0.1:{info['http_port']}"
        health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=10).read())
        assert health["status"] == "ok"
        metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        assert "cfia_processed_total 1" in metrics and 'cfia_explain_seconds_count 1' in metrics

        assert node.terminate() == 0
        log = node.log.read_text()
        assert str(source.SOPInstanceUID) in log  # logs carry UIDs ...
        assert PATIENT_NAME_PREFIX not in log and str(source.PatientID) not in log  # ... never the patient
        assert "stopped" in log
    finally:
        storescp.stop()


def gated_blob(cfg):
    """A processor factory that stays "loading its models" until the file named by
    $CFIA_TEST_GATE exists (as a crash-looping or slow model load looks from outside)."""
    import time

    from cfia.bench.processors import blob

    gate = Path(os.environ["CFIA_TEST_GATE"])
    while not gate.exists():
        time.sleep(0.05)
    return blob(cfg)


def _http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_worker_counts_as_alive_only_once_its_processor_is_built(tmp_path, serves):
    """docs/operations.md: /healthz is 200 when every worker is alive. A worker whose
    processor is still loading (or that dies while loading, again and again) takes no
    job: it is not alive for /healthz and cfia_workers_alive until it is ready."""
    gate = tmp_path / "models-loaded"
    node = Serve(tmp_path, 9, "test_serve:gated_blob")
    node.env["CFIA_TEST_GATE"] = str(gate)
    serves.append(node)
    http_port = node.start()["http_port"]
    poll(lambda: "worker started" in node.log.read_text(), 30, what="the worker process")
    status, body = _http_get(http_port, "/healthz")
    assert (status, json.loads(body)["workers_alive"]) == (503, 0), body
    assert "cfia_workers_alive 0" in _http_get(http_port, "/metrics")[1].splitlines()

    gate.touch()
    poll(lambda: _http_get(http_port, "/healthz")[0] == 200, 60, what="/healthz 200 once the worker is ready")
    assert "cfia_workers_alive 1" in _http_get(http_port, "/metrics")[1].splitlines()
    assert node.terminate() == 0
    log = node.log.read_text()  # stopped once: run() and serve()'s finally both call Node.stop
    assert log.count("stopping: no new associations") == 1


@pytest.mark.parametrize("busy", ["http", "dicom"])
def test_a_busy_port_is_named_and_stops_the_start_before_the_workers(tmp_path, serves, busy):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = Serve(tmp_path, 9, "cfia.bench.processors:blob", ports={busy: port})
        serves.append(node)
        node.launch()
        assert node.proc.wait(60) == 1
    log = node.log.read_text()
    assert f"cannot listen on the {busy} port 127.0.0.1:{port}" in log, log
    assert "worker started" not in log and "stopping: no new associations" in log


def test_stop_twice_logs_once(tmp_path, caplog):
    """serve() calls Node.stop again in its finally after run() stopped the node."""
    import logging
    import threading

    from cfia.config import from_dict
    from cfia.serve import Node

    class IdlePool:
        config_error = False

        def check(self):
            pass

        def stop(self, timeout):
            pass

    caplog.set_level(logging.INFO, "cfia.serve")
    node = Node(from_dict({"spool": {"folder": str(tmp_path / "spool")}}, tmp_path))
    node.queue = JobQueue(tmp_path / "q.sqlite")
    node.pool = IdlePool()
    stop = threading.Event()
    stop.set()
    assert node.run(stop) == 0
    node.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "cfia.serve"]
    assert messages == ["stopping: no new associations", "stopped"]


def test_kill_9_mid_job_then_restart_delivers_everything_exactly_once(tmp_path, serves):
    dest = StorageSCP()
    try:
        outputs = {"fractional_seg": False, "parametric_map": False, "gsps": False}
        node = Serve(tmp_path, dest.port, "cfia.bench.processors:slow_blob", log_format="json",
                     outputs=outputs, fake_seconds="1.5")
        serves.append(node)
        info = node.start()
        sources = [mammogram(i) for i in range(3)]
        assert push(info["dicom_port"], sources) == [0x0000] * 3
        poll(lambda: _processing(node.spool), 60, what="a job being processed")
        node.kill_all()

        restarted = Serve(tmp_path, dest.port, "cfia.bench.processors:slow_blob", log_format="json",
                          outputs=outputs, fake_seconds="0.2", name="restart")
        serves.append(restarted)
        restarted.start()
        poll(lambda: restarted.counts()["done"] == 3, 120, what="all jobs done after the restart")
        assert restarted.terminate() == 0
        uids = dest.uids()
        assert len(uids) == 3 * 2 and set(uids.values()) == {1}, uids  # binary SEG + SR per image, once each
        assert restarted.counts()["failed"] == 0
        for line in (tmp_path / "restart.log").read_text().splitlines():
            json.loads(line)  # every log line is one JSON object
    finally:
        dest.stop()


def _processing(spool: Path) -> bool:
    import sqlite3

    db = sqlite3.connect(spool / "queue.sqlite", timeout=10)
    try:
        return db.execute("SELECT count(*) FROM jobs WHERE state = 'running' AND results IS NULL").fetchone()[0] > 0
    finally:
        db.close()


def test_workers_take_the_gpus_in_turn():
    """README: one worker per GPU. `cuda` alone would put every worker on the first."""
    from cfia.workers import gpu_for

    assert [gpu_for(slot, "cuda", 2) for slot in range(4)] == [0, 1, 0, 1]
    assert [gpu_for(slot, "auto", 3) for slot in range(3)] == [0, 1, 2]
    assert gpu_for(1, "cuda", 1) is None and gpu_for(1, "cpu", 4) is None


class _Worker:
    """Stands in for a worker process: dead (exitcode set) or still explaining."""

    def __init__(self, pid: int, exitcode=None):
        self.pid, self.exitcode = pid, exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout=None) -> None:
        pass

    def kill(self) -> None:
        self.exitcode = -9


def _queue_with_job_of(tmp_path, owner: str):
    queue = FailingQueue(tmp_path / "q.sqlite")
    job = queue.add("/spool/a.dcm", "1.2.3", "1.2", "x", "MOD", "b")[0]
    queue.close_batch("b")
    assert queue.claim(owner).attempts == 1
    return queue, job


def test_a_dead_worker_is_replaced_even_while_its_job_cannot_be_requeued(tmp_path):
    """The queue's disk full when a worker dies: the replacement starts at once (the node
    must not stay without workers until space is freed); the requeue follows when it can,
    and the dead worker's attempt counts (its job may be what killed it)."""
    import sqlite3

    from cfia.config import Config
    from cfia.workers import WorkerPool

    queue, job = _queue_with_job_of(tmp_path, "pid4242")
    pool = WorkerPool(Config(), queue)
    spawned = []
    pool._spawn = spawned.append
    pool.processes = [_Worker(4242, exitcode=1)]
    queue.failing = {"requeue_running"}
    with pytest.raises(sqlite3.OperationalError):
        pool.check()
    assert spawned == [0] and queue.get(job).state == "running"
    queue.failing = set()
    pool.check()
    assert spawned == [0] and (queue.get(job).state, queue.get(job).attempts) == ("queued", 1)
    queue.close()


def test_a_job_requeued_by_a_clean_stop_gets_its_attempt_back(tmp_path):
    """A job longer than workers.stop_timeout_seconds, stopped max_retries + 1 times,
    must not be dead-lettered as a worker that died."""
    from cfia.config import Config
    from cfia.workers import WorkerPool

    queue, job = _queue_with_job_of(tmp_path, "pid4242")
    pool = WorkerPool(Config(), queue)
    pool.processes = [_Worker(4242)]
    pool.stop(0)
    assert (queue.get(job).state, queue.get(job).attempts) == ("queued", 0)
    queue.close()


def test_a_supervisor_failure_that_repeats_logs_its_traceback_once(tmp_path, caplog):
    """A full disk fails every supervisor round (twice a second) until space is freed:
    one traceback, not one per round."""
    import sqlite3
    import threading

    from cfia.config import from_dict
    from cfia.serve import Node

    stop = threading.Event()

    class FullPool:  # stands in for the worker processes
        config_error = False
        calls = 0

        def check(self):
            FullPool.calls += 1
            if FullPool.calls == 4:
                stop.set()
            raise sqlite3.OperationalError("database or disk is full")

        def stop(self, timeout):
            pass

    node = Node(from_dict({"spool": {"folder": str(tmp_path / "spool")}}, tmp_path))
    node.queue = JobQueue(tmp_path / "q.sqlite")
    node.pool = FullPool()
    assert node.run(stop) == 0
    failures = [r for r in caplog.records if r.getMessage().startswith("supervisor step")]
    assert FullPool.calls == 4 and len(failures) == 1 and failures[0].exc_info


def test_status_and_requeue_on_a_spool_they_cannot_use_answer_in_one_line(tmp_path, capsys):
    """`cfia status` opens the queue read-only: the database file is left as it was (SQLite
    may add its -wal and -shm files beside it, which a read-only file system spares it:
    docs/operations.md). A queue it cannot use is one line `cfia: error: ...` and exit 2,
    never a traceback."""
    from cfia import cli
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    dead_letter_job(spool, queue)
    queue.close()
    config = tmp_path / "config.yaml"
    config.write_text(f"spool:\n  folder: {spool.root}\n")

    def one_error_line() -> str:
        err = capsys.readouterr().err
        assert err.startswith("cfia: error: ") and err.count("\n") == 1, err
        return err

    files = {p.name for p in spool.root.iterdir()}
    before = (spool.queue_file.read_bytes(), spool.queue_file.stat().st_mtime_ns)
    assert cli.main(["status", "--config", str(config)]) == 0
    assert "failed 1" in capsys.readouterr().out
    assert {p.name for p in spool.root.iterdir()} - files <= {"queue.sqlite-wal", "queue.sqlite-shm"}
    assert (spool.queue_file.read_bytes(), spool.queue_file.stat().st_mtime_ns) == before
    spool.queue_file.write_bytes(b"not a database" * 100)
    for command in (["status"], ["requeue", "1"]):
        assert cli.main([*command, "--config", str(config)]) == 2
        assert "not a database" in one_error_line()
    # A spool that cannot be looked into (another user's, 0700) raised from the existence
    # check, a traceback. Tests run as root, who may look anywhere: a name too long to look
    # up is the same OSError from the same call.
    config.write_text(f"spool:\n  folder: {tmp_path / ('x' * 300)}\n")
    for command in (["status"], ["requeue", "1"]):
        assert cli.main([*command, "--config", str(config)]) == 2
        assert "cannot read the job queue" in one_error_line()


def test_requeue_all_failed_takes_every_failed_job_and_named_ids_go_on_past_a_bad_one(tmp_path, capsys):
    """docs/operations.md: --all-failed requeues every failed job; among named ids one that
    cannot be requeued is reported (exit 2) and the others are requeued."""
    from cfia import cli
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    jobs = [dead_letter_job(spool, queue, uid=f"1.2.3.{i}") for i in range(1, 5)]
    queue.close()
    config = tmp_path / "config.yaml"
    config.write_text(f"spool:\n  folder: {spool.root}\n")

    def states() -> list[str]:
        q = JobQueue(spool.queue_file, read_only=True)
        try:
            return [q.get(j).state for j in jobs]
        finally:
            q.close()

    assert cli.main(["requeue", "--config", str(config), str(jobs[0]), "999", str(jobs[2])]) == 2
    out, err = capsys.readouterr()
    assert "999" in err and out.count("requeued (SOP") == 2
    assert states() == ["queued", "failed", "queued", "failed"]
    assert cli.main(["requeue", "--config", str(config), "--all-failed"]) == 0
    assert capsys.readouterr().out.count("requeued (SOP") == 2
    assert states() == ["queued"] * 4


def test_an_idle_http_client_does_not_hold_a_thread_for_ever():
    """A client that connects to /metrics' port and sends nothing held a handler thread
    for as long as it stayed connected; now it is dropped after the idle timeout."""
    import socket
    import threading

    from cfia import http

    server = http.start("127.0.0.1", 0, lambda: (True, {}), lambda: "", idle_timeout=0.5)
    try:
        before = threading.active_count()
        idle = [socket.create_connection(server.server_address[:2]) for _ in range(5)]
        poll(lambda: threading.active_count() >= before + 5, what="a thread per idle client")
        poll(lambda: threading.active_count() <= before, timeout=10, what="the idle clients' threads ended")
        assert all(s.recv(1) == b"" for s in idle)  # the server hung up on them
        assert _http_get(server.server_address[1], "/healthz")[0] == 200
        for s in idle:
            s.close()
    finally:
        server.shutdown()


def test_health_and_metrics_answer_while_a_store_waits_on_a_locked_queue(tmp_path):
    """/healthz and /metrics read through the C-STORE handlers' connection: while one waited on
    a queue another process held locked, the monitor got no answer at all."""
    import sqlite3
    import threading

    from cfia.config import from_dict
    from cfia.serve import Node
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    node = Node(from_dict({"spool": {"folder": str(spool.root)}, "listener": {"port": 0}}))
    node.queue = JobQueue(spool.queue_file, busy_seconds=30)
    node._reader = JobQueue(spool.queue_file, read_only=True)
    node.intake = type("Intake", (), {"counts": {}})()
    other = sqlite3.connect(spool.queue_file, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock
    store = threading.Thread(target=node.queue.add, args=("/spool/a.dcm", "1.2.3", "1.2", "x", "MOD", "b"), daemon=True)
    store.start()  # waits for SQLite while holding the connection's lock, as a C-STORE handler would
    answers = []
    probe = threading.Thread(target=lambda: answers.append((node.health(), node.metrics())), daemon=True)
    probe.start()
    probe.join(5)
    other.execute("ROLLBACK")
    store.join(30)
    assert answers and answers[0][0][1]["queue"]["pending"] == 0 and "cfia_received_total" in answers[0][1]
    node.queue.close()
    node._reader.close()


def test_a_stopped_node_leaves_no_write_ahead_log(tmp_path):
    """Node.stop closed the writer before /healthz's reader: the last connection, read-only,
    could not remove queue.sqlite-wal, and a stopped node's spool looked half-written."""
    from cfia.config import from_dict
    from cfia.serve import Node
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    node = Node(from_dict({"spool": {"folder": str(spool.root)}, "listener": {"port": 0}}))
    node.queue = JobQueue(spool.queue_file)
    node._reader = JobQueue(spool.queue_file, read_only=True)
    node.queue.add("/spool/a.dcm", "1.2.3", "1.2", "x", "MOD", "b")
    node._reader.counts()
    node.stop()
    assert sorted(p.name for p in spool.root.iterdir() if p.name.startswith("queue")) == [spool.queue_file.name]


def test_a_store_on_a_queue_locked_longer_than_its_busy_time_is_refused_not_held(tmp_path):
    """The listener's connection waited 60 s, longer than senders' timeouts and its own network
    timeout: senders were aborted, and their images were queued after all."""
    import sqlite3
    import time

    import listener
    from listener import Intake, ListenerSettings, Spool, statuses
    from node_helpers import mammogram, push

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file, busy_seconds=0.5)
    server = listener.start(ListenerSettings(port=0), Intake(spool, queue))
    other = sqlite3.connect(spool.queue_file, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        assert push(server.server_address[1], [mammogram(1)]) == [statuses.OUT_OF_RESOURCES]
        assert time.monotonic() - start < 10 and list(spool.incoming.iterdir()) == []
    finally:
        other.execute("ROLLBACK")
        server.shutdown()
        queue.close()


HEAP_CHURN = """
import sys, threading
from cfia.serve import _keep_the_listener_heap_small
if sys.argv[1] == "kept small":
    _keep_the_listener_heap_small()
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
def receive():  # what an association thread does with each dataset it receives
    for _ in range(40):
        dataset = bytearray(9_000_000)
        dataset[::4096] = bytes(len(dataset[::4096]))
        elements = [bytes(2000) for _ in range(800)]
        del dataset, elements
first = bytearray(9_000_000)
del first  # glibc raises its mmap threshold past a dataset's size here
start = rss_mb()
for _ in range(6):
    threads = [threading.Thread(target=receive) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
print(rss_mb() - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_listener_gives_back_what_its_association_threads_freed():
    """glibc kept each association thread's freed datasets in that thread's arena: the idle
    server grew from 88 to 195 MB over 240 detector-size images, and kept growing."""
    grown = int(subprocess.run([sys.executable, "-c", HEAP_CHURN, "kept small"], capture_output=True, text=True,
                               check=True, timeout=120).stdout)
    assert grown < 20, f"the heap grew {grown} MB"
