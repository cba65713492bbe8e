"""`cfia serve`: wire config to the listener, the worker processes, the sender and
the HTTP endpoint, recover the spool, run until SIGTERM, stop cleanly.

Stop order on SIGTERM/SIGINT: stop accepting associations, let open ones finish
(their images are already spooled and queued), ask workers to finish the job in
hand within workers.stop_timeout_seconds, requeue whatever is still running, exit 0.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import threading
import time

import listener
from listener import Intake, JobQueue, ListenerSettings, Spool

from . import config as config_mod
from . import http, logs, status
from .files import sqlite_path_problem
from .workers import EXIT_CONFIG, WorkerPool

log = logging.getLogger("cfia.serve")

# How often the supervisor deletes old done rows from the queue.
PRUNE_INTERVAL_SECONDS = 3600.0

ASSOCIATION_DRAIN_SECONDS = 10.0

# The C-STORE handlers record jobs on the server's connection, one at a time: a queue another
# process holds locked is answered 0xA700 after this, before senders' timeouts (and the
# listener's own 60 s network timeout) abort them, which then left their images half-accepted.
LISTENER_QUEUE_BUSY_SECONDS = 10.0

# A supervisor step failing again the same way (the queue's disk full) is logged with its
# traceback the first time, then as one short line at most this often.
REPEATED_FAILURE_LOG_SECONDS = 60.0


# A start that fails with one of these is the config's or the install's fault (a spool folder
# the service user cannot create, a port below 1024): a restart cannot help, so EX_CONFIG.
CONFIG_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG)


def _config_fault(exc: OSError) -> bool:
    """A start error a restart cannot mend: a permission, a path, or a host name that does not
    resolve (EAI_NONAME, negative as getaddrinfo's errors are, and kept when the server
    re-raises it as a plain OSError; a resolver that is down, EAI_AGAIN, may answer next time)."""
    return exc.errno in CONFIG_ERRNOS or exc.errno == socket.EAI_NONAME


class SpoolBusy(RuntimeError):
    """Another `cfia serve` already uses this spool folder."""


def listener_settings(cfg) -> ListenerSettings:
    lc = cfg.listener
    ctx = listener.tls_context(lc.tls.certificate, lc.tls.key, lc.tls.ca) if lc.tls.enabled else None
    return ListenerSettings(
        ae_title=lc.ae_title, host=lc.host, port=lc.port,
        allowed_calling_ae_titles=tuple(lc.allowed_calling_ae_titles),
        ignore_other_sop_classes=lc.other_sop_classes == "ignore", ssl_context=ctx,
        max_associations=lc.max_associations, max_dataset_bytes=int(lc.max_dataset_mb * (1 << 20)),
    )


class Node:
    def __init__(self, cfg):
        self.cfg = cfg
        self.spool = Spool(cfg.spool.folder)
        self.queue: JobQueue | None = None
        self._reader: JobQueue | None = None  # /healthz and /metrics: not behind a C-STORE's wait
        self.intake: Intake | None = None
        self.server = None
        self.http = None
        self.pool: WorkerPool | None = None
        self._lock_fd: int | None = None

    def start(self) -> None:
        too_long = sqlite_path_problem(self.spool.queue_file)
        if too_long:  # before the folder is made: SQLite's own error would say only "unable to open"
            raise OSError(errno.ENAMETOOLONG, f"the job queue {too_long}: choose a shorter spool.folder")
        try:
            self.spool.create()
        except OSError as exc:
            failed = exc.filename or self.spool.root  # the folder itself, or one inside it (incoming/)
            raise OSError(exc.errno, f"cannot create the spool folder {failed} (spool.folder {self.spool.root}): "
                                     f"{exc.strerror or exc}") from exc
        self._take_lock()
        self.queue = JobQueue(self.spool.queue_file, quiet_seconds=self.cfg.listener.study_quiet_seconds,
                              busy_seconds=LISTENER_QUEUE_BUSY_SECONDS)
        self._reader = JobQueue(self.spool.queue_file, read_only=True)
        self._recover()
        self.intake = Intake(self.spool, self.queue)
        # Ports first: a busy one stops the start before any worker loads its models (stop() closes
        # what was opened). /healthz answers 503 until the listener and the workers are up.
        hc, lc = self.cfg.http, self.cfg.listener
        if hc.enabled:
            self.http = _bind("http", hc.host, hc.port, lambda: http.start(hc.host, hc.port, self.health, self.metrics))
        settings = listener_settings(self.cfg)
        self.server = _bind("dicom", lc.host, lc.port, lambda: listener.start(settings, self.intake))
        self.pool = WorkerPool(self.cfg, self.queue)
        self.pool.start()
        self._write_info()

    def _take_lock(self) -> None:
        fd = os.open(self.spool.root / status.SERVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(f"another cfia serve uses the spool folder {self.spool.root}") from None
        self._lock_fd = fd

    def _recover(self) -> None:
        """After a crash: give back running jobs, release open batches, drop files
        of stores that were never acknowledged and results of jobs already finished."""
        requeued = self.queue.requeue_running()
        released = self.queue.close_all_batches()
        with self.spool.recovery_lock():  # a `cfia requeue` running now is not sweeping
            orphans = self.spool.orphans(self.queue.paths())
            for path in orphans:
                path.unlink(missing_ok=True)
            stale = self.spool.stale_results(self.queue.live_ids())
            for folder in stale:
                shutil.rmtree(folder, ignore_errors=True)
            self._drop_requeued_sources()
            self._retire_letters_of_live_jobs()
        log.info("spool recovered", extra={"jobs_requeued": requeued, "batches_released": released,
                                           "unacknowledged_files_removed": len(orphans),
                                           "finished_results_removed": len(stale), **self.queue.counts()})

    def _drop_requeued_sources(self) -> None:
        """A requeue that crashed after its commit left a copy of the source in the retired
        folder: dropped once the job is no longer failed, or failed again with its own dead
        letter. One that crashed before its commit left the only copy: kept for the next."""
        for job_id, source in self.spool.retired_sources():
            job = self.queue.get(job_id)
            if not _letter_of(source.parent, job):
                continue
            if job.state != "failed" or (self.spool.dead_letter / str(job_id) / "source.dcm").is_file():
                source.unlink(missing_ok=True)

    def _retire_letters_of_live_jobs(self) -> None:
        """A requeue by a version before 0.2.0 committed the job before it retired its dead-letter
        folder: one that stopped in between left the folder, the image in it, beside a job that
        then went on. Retired now, its copy of the source dropped once the job no longer needs it."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for folder in self.spool.dead_letter.iterdir():
            job = self.queue.get(int(folder.name)) if folder.name.isdigit() and folder.is_dir() else None
            if not _letter_of(folder, job) or job.state == "failed":
                continue
            if job.state != "done" and not self.spool.locate(job.path).exists():
                continue  # the dead letter may hold its only copy
            self.spool.retire_leftover_letter(job.id, stamp)
            log.info("dead letter of a job that went on retired", extra={"job": job.id, "state": job.state})

    def _write_info(self) -> None:
        host, port = self.server.server_address[:2]
        info = {"pid": os.getpid(), "ae_title": self.cfg.listener.ae_title, "host": host, "dicom_port": port,
                "http_port": self.http.server_address[1] if self.http else None, "started_at": time.time()}
        listener.write_durably(self.spool.root / status.SERVE_INFO, json.dumps(info).encode())

    def health(self) -> tuple[bool, dict]:
        alive = self.pool.alive() if self.pool else 0
        counts = self._reader.counts()
        ok = alive == self.cfg.workers.count and self.server is not None
        return ok, {"status": "ok" if ok else "degraded", "workers_alive": alive,
                    "workers_configured": self.cfg.workers.count, "queue": counts}

    def metrics(self) -> str:
        return status.prometheus(self._reader, dict(self.intake.counts), self.pool.alive() if self.pool else 0)

    def prune(self) -> int:
        """Delete queue rows of jobs delivered more than spool.keep_done_days ago."""
        days = self.cfg.spool.keep_done_days
        n = self.queue.prune_done(days * 86400.0) if days > 0 else 0
        if n:
            log.info("old done jobs pruned from the queue", extra={"jobs_pruned": n, "keep_done_days": days})
        return n

    def run(self, stop: threading.Event) -> int:
        """Supervise until `stop` is set; returns the exit code."""
        next_prune = 0.0
        failing = _RepeatedFailure()
        while not stop.wait(0.5):
            try:
                self.pool.check()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
                    self.prune()
                failing.ended()
            except Exception as exc:  # the queue busy or its disk full: keep serving, the next round retries
                failing.log(exc)
            if self.pool.config_error:
                log.error("stopping: the processor cannot be built (see the worker's error)")
                self.stop()
                return EXIT_CONFIG
        self.stop()
        return 0

    def stop(self) -> None:
        """Idempotent: serve() calls it again on the way out, whatever happened; a call with
        nothing left to stop logs nothing (a part that failed to stop is retried)."""
        if all(part is None for part in (self.server, self.pool, self.http, self.queue, self._reader, self._lock_fd)):
            return
        log.info("stopping: no new associations")
        if self.server is not None:
            self.server.shutdown(ASSOCIATION_DRAIN_SECONDS)
            self.server = None
        if self.pool is not None:
            self.pool.stop(self.cfg.workers.stop_timeout_seconds)
            self.pool = None
        if self.http is not None:
            self.http.shutdown()
            self.http = None
        if self._reader is not None:  # before the writer: the last connection closed removes the WAL
            self._reader.close()
            self._reader = None
        if self.queue is not None:
            try:
                counts = self.queue.counts()
            except sqlite3.Error:  # a corrupt queue, the reason this start failed: said there
                counts = {}
            log.info("stopped", extra=counts)
            self.queue.close()
            self.queue = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class _RepeatedFailure:
    """Logs the supervisor's failures: a new one with its traceback, the same one again
    (every half second while a disk is full) as a short line at most every
    REPEATED_FAILURE_LOG_SECONDS, with how often it failed meanwhile."""

    def __init__(self):
        self.what, self.count, self.logged_at = None, 0, 0.0

    def log(self, exc: Exception) -> None:
        what = f"{type(exc).__name__}: {exc}"
        self.count += 1
        if what != self.what:
            log.exception("supervisor step failed, will retry")
        elif time.monotonic() - self.logged_at >= REPEATED_FAILURE_LOG_SECONDS:
            log.error("supervisor step still failing, will retry", extra={"reason": what, "failures": self.count})
        else:
            return
        self.what, self.count, self.logged_at = what, 0, time.monotonic()

    def ended(self) -> None:
        if self.what is not None:
            log.info("supervisor step works again")
            self.what, self.count = None, 0


def _letter_of(folder, job) -> bool:
    """Whether a dead-letter folder is this job's: its reason.json names the job's instance."""
    return job is not None and Spool.letter_instance(folder) == job.sop_instance_uid


def _bind(which: str, host: str, port: int, start):
    """`start()`, its OSError (port in use, address not available) naming the server and address."""
    try:
        return start()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on the {which} port {host}:{port}: {exc.strerror or exc}") from exc


# glibc's mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8


def _keep_the_listener_heap_small() -> None:
    """glibc raises its mmap threshold to the largest block freed so far: after one received
    mammogram (~9 MB), every dataset was allocated in the arena of the association thread that
    received it, and that arena kept the freed space (one per thread, up to 8 per core). The
    idle server grew from 88 to 195 MB over 240 detector-size images and kept climbing. A fixed
    threshold (which also stops the raising) and two arenas hold it near 93 MB. Only this
    process: the spawned workers start a fresh interpreter, and explaining runs twice as slow
    with a 128 kB threshold. Not glibc: nothing to do."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def serve(cfg, config_path: str | None = None) -> int:
    _keep_the_listener_heap_small()  # before any thread starts
    logs.setup(cfg.logging.format, cfg.logging.level)
    log.info("effective config", extra={"config_file": config_path or "(built-in defaults)",
                                        "config": json.dumps(config_mod.to_dict(cfg), sort_keys=True)})
    if not any(vars(cfg.outputs).values()):
        log.error("cannot start", extra={"reason": "outputs: every output is off, so images would be "
                                                   "explained and nothing sent; turn at least one on"})
        return EXIT_CONFIG
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    node = Node(cfg)
    try:
        node.start()
    except SpoolBusy as exc:
        log.error(str(exc))
        return 1
    except OSError as exc:  # port in use or not allowed, spool folder not writable
        log.error("cannot start", extra={"reason": f"{type(exc).__name__}: {exc}"})
        node.stop()
        return EXIT_CONFIG if _config_fault(exc) else 1
    except sqlite3.Error as exc:  # the queue file (or its -wal) another user's, or read-only
        log.error("cannot start", extra={"reason": f"queue {node.spool.queue_file}: {type(exc).__name__}: {exc}"})
        node.stop()
        permanent = ("unable to open", "readonly", "not a database", "malformed")  # "locked" may pass
        return EXIT_CONFIG if any(s in str(exc) for s in permanent) else 1
    try:
        return node.run(stop)
    finally:  # an error in the supervisor must not leave workers (non-daemon) holding the process
        node.stop()
