"""The worker: takes a job from the queue, runs the processor, stores the results,
sends them, and records each step, so a crash at any point resumes at that step.

    claim -> read + decode source -> processor -> results on disk (set_results)
          -> send to every destination (add_delivered each) -> finish -> delete files

A processing failure is retried `max_retries` times with backoff, then the job moves
to the dead-letter folder with its reason; an image that cannot be decoded, that is not
a readable grayscale mammogram (dicom_io.ImageReadError), or that cannot carry result
objects (dicom_out.UnsupportedSource: not a single-frame MG image, no pixel spacing, a
header the builders cannot use) goes there at once (none gets better with retries). A
destination that is down is retried with backoff forever: nothing is lost. A
destination that answers with a failure status is retried `max_retries` times, then it
is given up on; the time a destination was down does not count toward that; one that
does not accept a SOP class at all, or rejects the association, is given up on at once.
A destination given up on is not sent to again; the others are still sent to, and once
no destination is pending the job is dead-lettered naming each one given up on. Every
destination is tried on each pass, except one whose last send found it unavailable
within the send backoff (a worker-local hold-off: one that hangs must not cost every
job a timeout). The source is deleted only after the results were delivered everywhere.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pydicom
from pydicom.dataset import Dataset

from dicom_out import (STORED, Backoff, Destination, DestinationRejected, DestinationUnavailable,
                       UnsupportedSource)
from dicom_out import send as dicom_send
from dicom_out.sender import CONTEXT_REJECTED, StoreRefused
from listener import Job, JobQueue, Spool

from . import logs
from .dicom_io import ImageReadError, implant_in_view, pixel_data_problem
from .processors import Processor
from .routing import Routing

log = logging.getLogger("cfia.worker")

QUEUE_RETRY_SECONDS = 2.0  # after the queue could not be written (disk full, locked for a minute)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

Sender = Callable[..., dict[str, int]]


class UndecodableImage(Exception):
    """The source's pixel data cannot be decoded: a permanent failure."""


def destination_key(dest: Destination) -> str:
    """Identity of a destination in the queue's `delivered` list."""
    return f"{dest.name}:{dest.ae_title}@{dest.host}:{dest.port}"


def describe(exc: BaseException) -> str:
    """An exception as one line for the log, reason.json and `cfia status`: a site's
    processor or a decoder may quote a value from the image's header, line breaks included."""
    return logs.one_line(f"{type(exc).__name__}: {exc}")


def read_image(path: Path) -> Dataset:
    """Read and fully decode the source: the check the listener could not afford. The spool's
    file system failing is retried; a dataset that does not parse or decode is not."""
    try:
        ds = pydicom.dcmread(path)
        for _ in ds:  # pydicom converts elements when first touched: a malformed one fails here, not later
            pass
    except OSError:
        raise
    except Exception as exc:
        raise UndecodableImage(f"dataset cannot be parsed: {describe(exc)}") from None
    problem = pixel_data_problem(ds)  # before decoding: a few kB may declare gigabytes
    if problem:
        raise UndecodableImage(f"pixel data cannot be decoded: {problem}")
    try:
        ds.pixel_array  # pydicom caches the array, so the processor does not decode again
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a decoder's panic is a BaseException (pyo3): it killed the worker
        raise UndecodableImage(f"pixel data cannot be decoded: {describe(exc)}") from None
    return ds


@dataclass
class _HoldOff:
    """A destination a worker found unavailable: not tried again before `until` (its clock)."""
    until: float
    why: str
    failures: int  # in a row: the hold-off doubles with them
    logged: bool = False  # the skip is logged once per hold-off


class Worker:
    def __init__(self, queue: JobQueue, spool: Spool, processor: Processor, routing: Routing,
                 calling_ae: str = "CFIA", max_retries: int = 3, backoff: Backoff = Backoff(),
                 sender: Sender = dicom_send, owner: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic, outputs: Optional[Sequence[str]] = None):
        self.queue, self.spool, self.processor, self.routing = queue, spool, processor, routing
        self.outputs = None if outputs is None else frozenset(outputs)  # object types sent; None: every file
        self.calling_ae = calling_ae
        self.max_retries = max_retries
        self.backoff = backoff
        self.sender = sender
        self.owner = owner or f"pid{os.getpid()}"
        self.clock = clock
        # Destinations found unavailable. A send to one that hangs costs a timeout, so other
        # jobs skip it for the send backoff (base, doubling while it stays unavailable, and no
        # shorter than the failed send took: a hold-off shorter than an explanation would let
        # every new image pay the timeout again).
        self._held: dict[str, _HoldOff] = {}
        # The queue write still owed for a job in hand whose outcome the queue could not record.
        self._owed: Optional[Callable[[], object]] = None

    def run(self, should_stop: Callable[[], bool], poll_seconds: float = 0.2) -> None:
        """Work until `should_stop()`; it is checked between jobs, so a job in hand
        is finished (or, if the process is killed, recovered by the queue)."""
        while not should_stop():
            if not self.run_once():
                time.sleep(poll_seconds)

    def run_once(self) -> bool:
        """Handle one job if one is ready; False when there was none."""
        if self._owed is not None and not self._settle():
            return False
        try:
            job = self.queue.claim(self.owner)
        except sqlite3.OperationalError as exc:  # the queue's disk full or its file locked: no job
            log.warning("cannot take a job from the queue, will retry",  # held, so wait, do not die
                        extra={"reason": str(exc), "retry_in_s": QUEUE_RETRY_SECONDS})
            time.sleep(QUEUE_RETRY_SECONDS)
            return False
        if job is None:
            return False
        fields = {"job": job.id, "sop_instance_uid": job.sop_instance_uid}
        try:
            try:
                if self._dead_lettered_unrecorded(job, fields):
                    return True
                if job.results is None:
                    self._process(job, fields)
                else:
                    self._deliver(job, self.spool.locate(job.results), fields)
            except sqlite3.OperationalError:
                raise  # the queue cannot be written: handled below, not a worker error
            except Exception as exc:  # a bug in the worker itself: keep the job, keep serving
                log.exception("worker error", extra=fields)
                self.queue.retry_later(job.id, f"worker error: {describe(exc)}", self.backoff.delay(job.attempts))
        except sqlite3.OperationalError as exc:  # the queue's disk full or its file locked: dying would
            if self._owed is None:                # not help (the supervisor cannot write either)
                # Back in the queue as before this attempt (the queue's fault, not the job's:
                # not counted); its results and deliveries may repeat: their UIDs are the same.
                self._owed = lambda: self.queue.requeue_running(self.owner, refund_attempt=True)
            log.warning("cannot record the job in the queue; recorded once the queue can be written",
                        extra={**fields, "reason": str(exc), "retry_in_s": QUEUE_RETRY_SECONDS})
            time.sleep(QUEUE_RETRY_SECONDS)
        return True

    def _dead_lettered_unrecorded(self, job: Job, fields: dict) -> bool:
        """A job in the dead-letter folder the queue never marked failed (the worker stopped
        or died while the queue could not be written): its files are gone from the spool, so
        it is recorded failed with its own reason, not processed again (which would overwrite
        that reason with "source missing"). A reason beside a source still in the spool is
        not that: a crash between writing the reason and moving the source, or a requeue
        not yet done retiring the old folder. That job is processed."""
        letter = self.spool.dead_letter / str(job.id) / "reason.json"
        if not letter.is_file() or self.spool.locate(job.path).exists():
            return False
        try:
            letter_data = json.loads(letter.read_text())
            reason = str(letter_data.get("reason") or "dead-lettered")
        except (OSError, ValueError, AttributeError):
            letter_data, reason = None, "dead-lettered (its reason.json cannot be read)"
        if letter_data is not None and letter_data.get("sop_instance_uid") not in (None, job.sop_instance_uid):
            return False  # another image's, under a reused job id: this job goes on (and is set aside by it)
        results = self.spool.results / str(job.id)
        if letter_data is not None and results.is_dir():  # moved after the source: stopped in between
            self.spool.move_to_dead_letter(job.id, self.spool.locate(job.path), results, letter_data)
        self.queue.fail(job.id, reason)
        log.error("job failed, moved to dead-letter (recorded late)", extra={**fields, "reason": reason})
        return True

    def _settle(self) -> bool:
        """Make the queue write owed for the job in hand; False while it still cannot."""
        try:
            self._owed()
        except sqlite3.OperationalError:  # still full: said once already, wait
            time.sleep(QUEUE_RETRY_SECONDS)
            return False
        self._owed = None
        log.info("queue writable again, the job in hand recorded")
        return True

    # -- processing ------------------------------------------------------------

    def _process(self, job: Job, fields: dict) -> None:
        if job.attempts > self.max_retries + 1:  # earlier attempts killed their worker (or max_retries was lowered)
            why = f"retries used up, last error: {job.error}" if job.error else "worker died while processing"
            self._dead_letter(job, f"{why} ({job.attempts - 1} attempts)", fields)
            return
        try:
            ds = read_image(self.spool.locate(job.path))
        except UndecodableImage as exc:
            self._dead_letter(job, str(exc), fields)
            return
        except Exception as exc:  # unreadable file (I/O error, gone): retried, then dead letter
            self._processing_failed(job, f"cannot read source: {describe(exc)}", fields)
            return
        start = time.perf_counter()
        try:
            results = self.processor(ds)
        except (UnsupportedSource, ImageReadError) as exc:  # neither gets better with retries
            self._dead_letter(job, f"no result objects for this source: {logs.one_line(str(exc))}", fields)
            return
        except Exception as exc:
            self._processing_failed(job, describe(exc), fields)
            return
        seconds = time.perf_counter() - start
        try:
            folder = self.spool.write_results(job.id, results)
        except OSError as exc:  # retried, not taken for a worker that died
            reason = f"cannot write results: {exc.strerror or exc}"
            if exc.errno in DISK_FULL:  # the disk's fault, not the job's: the attempt does not count
                delay = self.backoff.delay(job.attempts)
                log.warning("disk full, will retry", extra={**fields, "retry_in_s": round(delay, 2), "reason": reason})
                self.queue.retry_later(job.id, reason, delay, refund_attempt=True)
            else:
                self._processing_failed(job, reason, fields)
            return
        self.queue.set_results(job.id, str(folder), seconds)
        log.info("explained", extra={**fields, "explain_seconds": round(seconds, 3),
                                     "objects": ",".join(results)})
        if implant_in_view(ds):  # the objects' GSPS note says it too (pipeline.CAVEAT_IMPLANT)
            log.warning("breast implant in view: the classifier was not trained on implant views", extra=fields)
        self._deliver(job, folder, fields)

    def _processing_failed(self, job: Job, reason: str, fields: dict) -> None:
        if job.attempts > self.max_retries:
            self._dead_letter(job, reason, fields)
            return
        delay = self.backoff.delay(job.attempts)
        log.warning("processing failed, will retry", extra={**fields, "attempt": job.attempts,
                                                            "retry_in_s": round(delay, 2), "reason": reason})
        self.queue.retry_later(job.id, reason, delay)

    # -- sending ---------------------------------------------------------------

    def _deliver(self, job: Job, folder: Path, fields: dict) -> None:
        if not folder.is_dir():  # lost (e.g. a crash while dead-lettering): never count it as sent
            log.warning("results folder missing, explaining again", extra={**fields, "folder": str(folder)})
            self.queue.drop_results(job.id, f"results folder missing: {folder}", refund_attempt=job.results is not None)
            return
        destinations = self.routing.destinations_for(job.calling_ae)
        if not destinations:
            self._dead_letter(job, f"no destination for calling AE {job.calling_ae!r}", fields, folder)
            return
        files = self._files_to_send(job, folder, fields)
        if files is None:
            return
        # Destinations no longer configured (removed, or fixed under another address) are not
        # waited for: a job given up on for one of them would be dead-lettered though delivered.
        current = {destination_key(d) for d in destinations}
        delivered, given_up = set(job.delivered), {k: v for k, v in dict(job.given_up).items() if k in current}
        problems = {"down": [], "refused": [], "rejected": []}  # every destination is tried:
        sent = False                                             # one that fails must not starve the rest
        for dest in destinations:
            key = destination_key(dest)
            if key in delivered or key in given_up:
                continue
            problem = self._send_to(dest, files, fields)
            sent = True  # counted when held too: the job backs off as if it found it down
            if problem is None:
                self.queue.add_delivered(job.id, key)
                delivered.add(key)
            else:
                problems[problem[0]].append((key, problem[1]))
        if any(problems.values()) or given_up:
            self._retry_delivery(job, problems, given_up, sent, folder, fields,
                                 [d.name for d in destinations if destination_key(d) in delivered])
            return
        self.queue.finish(job.id)
        self.spool.remove(self.spool.locate(job.path), folder)
        log.info("delivered", extra={**fields, "objects": len(files), "destinations": len(destinations)})

    def _files_to_send(self, job: Job, folder: Path, fields: dict) -> Optional[list[Path]]:
        """The result files of the enabled outputs; None, the job explained again, when results
        built under other outputs (a restart with `outputs:` changed) lack one of them."""
        files = self.spool.result_files(folder)
        if self.outputs is None:
            return files
        missing = sorted(self.outputs - {f.stem for f in files})
        if missing:
            log.warning("results lack enabled outputs, explaining again", extra={**fields, "missing": ",".join(missing)})
            self.queue.drop_results(job.id, f"results lack {', '.join(missing)} (outputs changed, or the processor "
                                            "does not build it)",
                                    refund_attempt=job.results is not None)  # built by an earlier claim
            return None
        return [f for f in files if f.stem in self.outputs]

    def _send_to(self, dest: Destination, files: Sequence[Path], fields: dict) -> Optional[tuple[str, str]]:
        """None when `dest` stored every file, else ("down" | "refused" | "rejected", why);
        down also when not tried (its hold-off); rejected: it accepts not even the SOP class
        of what it refused, which no retry mends."""
        where = {**fields, "destination": dest.name}
        key, now = destination_key(dest), self.clock()
        held = self._held.get(key)
        if held is not None and now < held.until:
            if not held.logged:  # once per hold-off, not once per job
                held.logged = True
                log.warning("destination unavailable a moment ago, not tried for now; results kept",
                            extra={**where, "retry_in_s": round(held.until - now, 2)})
            return "down", f"{held.why} (not tried again for {held.until - now:.1f} s)"
        self._held.pop(key, None)  # hold-off over: try it; still down, it starts a longer one
        try:
            replies = self.sender(files, dest, calling_ae=self.calling_ae) if files else {}
        except StoreRefused as exc:  # it answers, so no hold-off; a refusal, counted toward max_retries
            log.warning("destination aborted the first store", extra={**where, "reason": str(exc)})
            return "refused", f"{exc} (calling AE {self.calling_ae})"
        except DestinationUnavailable as exc:
            failures, took = (held.failures + 1 if held else 1), self.clock() - now
            hold = min(self.backoff.max_seconds, self.backoff.base_seconds * 2 ** (failures - 1))
            hold = max(hold, took)  # a send that ran into its timeout: at most half the time goes to it
            self._held[key] = _HoldOff(until=now + took + hold, why=str(exc), failures=failures)
            log.warning("destination unavailable, results kept", extra={**where, "reason": str(exc)})
            return "down", str(exc)
        except DestinationRejected as exc:
            log.error("destination rejected the association", extra={**where, "reason": str(exc)})
            return "rejected", f"{exc}; check its entry in config.yaml against the destination's AE titles"
        refused = {uid: status for uid, status in replies.items() if status not in STORED}
        if not refused:
            return None
        reason = f"{dest.name} refused " + ", ".join(f"{uid} ({status:#06x})" for uid, status in refused.items())
        log.warning("destination refused objects", extra={**where, "reason": reason})
        if all(status == CONTEXT_REJECTED for status in refused.values()):
            return "rejected", (f"{reason}: it does not accept their SOP class; disable that output "
                                "(outputs: in config.yaml) or let the destination store it")
        return "refused", reason

    def _retry_delivery(self, job: Job, problems: dict[str, list[tuple[str, str]]], given_up: dict[str, str],
                        sent: bool, folder: Path, fields: dict, delivered: list[str]) -> None:
        """Destinations that are down are retried for ever; refusals `max_retries` times
        (the time a destination was down does not count), then those refusing are given up
        on; one that does not accept a SOP class (or the association) at once. The job is
        dead-lettered once no destination is pending, naming each one given up on."""
        down, refused, rejected = problems["down"], problems["refused"], problems["rejected"]
        # Each destination has its own max_retries (this send counts too): a job-wide count
        # gave up on a destination at its first refusal after another had used them up.
        exhausted = [(key, why) for key, why in refused if self.queue.count_refusal(job.id, key) > self.max_retries]
        rejected, refused = rejected + exhausted, [r for r in refused if r not in exhausted]
        for key, why in rejected:  # recorded first: a crash after this does not send to it again
            self.queue.give_up(job.id, key, why)
            given_up[key] = why
        counted = bool(problems["refused"])
        if not down and not refused:
            reason = "; ".join(given_up.values())
            if delivered:
                reason += f"; delivered to {', '.join(delivered)}"
            self._dead_letter(job, reason, fields, folder, sent=sent, refused=counted)
            return
        delay = self.backoff.delay(job.send_attempts + 1)
        log.warning("results kept, will resend", extra={**fields, "retry_in_s": round(delay, 2),
                                                        "destinations_pending": len(down) + len(refused)})
        self.queue.retry_later(job.id, "; ".join([why for _, why in down + refused] + list(given_up.values())),
                               delay, sending=sent, refused=counted)

    # -- giving up -------------------------------------------------------------

    def _dead_letter(self, job: Job, reason: str, fields: dict, results: Optional[Path] = None,
                     sent: bool = False, refused: bool = False) -> None:
        """`sent`, `refused`: a send in this attempt (that refused) led here; `job` holds
        the counts as they were when it was claimed."""
        folder = self.spool.move_to_dead_letter(job.id, self.spool.locate(job.path), results, {
            "job": job.id, "sop_instance_uid": job.sop_instance_uid, "study_instance_uid": job.study_instance_uid,
            "calling_ae": job.calling_ae, "attempts": job.attempts, "send_attempts": job.send_attempts + sent,
            "refusals": job.refusals + refused,
            "reason": reason, "time": time.time(),
        })
        try:
            self.queue.fail(job.id, reason, sending=sent, refused=refused)
        except sqlite3.OperationalError:  # its files are in dead-letter/ already: record the failure
            self._owed = lambda: self.queue.fail(job.id, reason, sending=sent, refused=refused)  # later, not
            raise                                                                                   # a requeue
        log.error("job failed, moved to dead-letter", extra={**fields, "folder": str(folder), "reason": reason})
