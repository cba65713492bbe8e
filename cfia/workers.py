"""Worker processes: each builds its processor once (models load once) and runs a
Worker loop; the server starts, watches and stops them.

Workers are spawned, not forked: the server has pynetdicom threads and sockets, and
torch does not survive a fork with threads. A worker dies with its server (Linux
PR_SET_PDEATHSIG, plus a parent check between jobs), so after a `kill -9` of the
server no orphan keeps working on jobs the restarted server will requeue.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

from dicom_out import Backoff
from listener import JobQueue, Spool

from . import logs
from .processors import load_factory
from .routing import routing_from_config
from .worker import Worker

log = logging.getLogger("cfia.workers")

EXIT_CONFIG = 78  # EX_CONFIG: the processor cannot be built; restarting will not help
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent check between jobs remains
        pass


def gpu_for(slot: int, device: str, gpus: int) -> int | None:
    """The GPU a worker slot explains on, in turn, when there are several ("cuda" alone
    would put every worker on the first)."""
    if device not in ("cuda", "auto") or gpus < 2:
        return None
    return slot % gpus


def _use_gpu_of(slot: int, device: str) -> None:
    import torch

    index = gpu_for(slot, device, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if index is not None:
        torch.cuda.set_device(index)  # "cuda" now means this GPU in this process
        log.info("worker on its GPU", extra={"worker_slot": slot, "cuda_device": index})


def worker_for(cfg, processor) -> Worker:
    """The worker the config describes, on its own connection to the spool's queue."""
    spool = Spool(cfg.spool.folder)
    queue = JobQueue(spool.queue_file, quiet_seconds=cfg.listener.study_quiet_seconds)
    return Worker(queue, spool, processor, routing_from_config(cfg), calling_ae=cfg.listener.ae_title,
                  max_retries=cfg.spool.max_retries, outputs=[k for k, on in vars(cfg.outputs).items() if on],
                  backoff=Backoff(cfg.spool.send_backoff_seconds, cfg.spool.send_backoff_max_seconds))


def worker_main(cfg, parent_pid: int, stop_event, slot: int = 0, ready=None) -> None:
    """Entry point of a worker process; `slot` (0 .. workers.count - 1) picks its GPU;
    `ready` (an Event) is set once the processor is built."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())  # finish the job in hand, then exit
    logs.setup(cfg.logging.format, cfg.logging.level)
    os.nice(cfg.workers.nice)  # the listener, at normal priority, must answer C-STOREs promptly
    _use_gpu_of(slot, cfg.explainer.device)
    try:
        processor = load_factory(cfg.workers.processor)(cfg)
    except Exception as exc:
        log.error("cannot build the processor", extra={"processor": cfg.workers.processor,
                                                        "reason": f"{type(exc).__name__}: {exc}"})
        sys.exit(EXIT_CONFIG)
    worker = worker_for(cfg, processor)
    queue = worker.queue
    if ready is not None:
        ready.set()
    log.info("worker ready", extra={"processor": cfg.workers.processor})
    worker.run(lambda: stop_event.is_set() or stopping.is_set() or os.getppid() != parent_pid)
    queue.close()
    log.info("worker stopped")


class WorkerPool:
    def __init__(self, cfg, queue: JobQueue):
        self.cfg = cfg
        self.queue = queue
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()
        self.processes: list = []
        self._slots: dict[int, int] = {}  # pid -> slot, so a replacement keeps its GPU
        self._ready: dict[int, object] = {}  # pid -> Event its worker sets once its processor is built
        self._orphaned: list[int] = []  # pids of dead workers whose jobs are not requeued yet
        self.config_error = False

    def start(self) -> None:
        for slot in range(self.cfg.workers.count):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        ready = self._ctx.Event()
        proc = self._ctx.Process(target=worker_main, args=(self.cfg, os.getpid(), self._stop, slot, ready),
                                 daemon=False)
        proc.start()
        self.processes.append(proc)
        self._slots[proc.pid] = slot
        self._ready[proc.pid] = ready
        log.info("worker started", extra={"worker_pid": proc.pid, "worker_slot": slot})

    def alive(self) -> int:
        """Workers running with their processor built: one that crash-loops while loading
        its models (a process alive a few seconds at a time) takes no job, so it does not count."""
        return sum(p.is_alive() and p.pid in self._ready and self._ready[p.pid].is_set() for p in self.processes)

    def check(self) -> None:
        """Replace workers that died, then give their jobs back to the queue. The
        replacement starts first: a queue that cannot be written (disk full) must not
        leave the node without workers; the next check retries the requeue."""
        for proc in [p for p in self.processes if not p.is_alive()]:
            self.processes.remove(proc)
            self._ready.pop(proc.pid, None)
            self._orphaned.append(proc.pid)
            if proc.exitcode == EXIT_CONFIG:
                self.config_error = True
                continue
            log.error("worker died, restarting", extra={"worker_pid": proc.pid, "exitcode": proc.exitcode})
            self._spawn(self._slots.pop(proc.pid, 0))
        while self._orphaned:
            n = self.queue.requeue_running(f"pid{self._orphaned[0]}")  # the attempt counts: the job may be poison
            log.info("jobs of a dead worker requeued", extra={"worker_pid": self._orphaned.pop(0), "jobs_requeued": n})

    def stop(self, timeout: float) -> None:
        """Ask workers to finish their job in hand; kill and requeue what is left after `timeout`."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.processes:
            if proc.is_alive():
                proc.kill()
                proc.join()
                # Stopped, not killed by its job: the attempt is given back, or a job longer
                # than the stop timeout would be dead-lettered after max_retries + 1 restarts.
                n = self.queue.requeue_running(f"pid{proc.pid}", refund_attempt=True)
                log.warning("worker did not finish in time; its job is requeued",
                            extra={"worker_pid": proc.pid, "jobs_requeued": n})
        self.processes.clear()
        self._ready.clear()

