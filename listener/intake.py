"""The SCP's event handlers: validate, spool, record a job, answer. Never raise.

Handlers get their dependencies (an Intake) through pynetdicom's handler arguments.
Each failure maps to a DIMSE status (listener.statuses) and one log line that
carries UIDs and the calling AE title, never patient names or IDs.
"""
from __future__ import annotations

import errno
import logging
import threading
import uuid
import weakref
from collections import Counter
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import encode_file_meta

from . import statuses
from .checks import check_mammogram, inflates_beyond
from .jobqueue import JobQueue
from .spool import Spool
from .syntaxes import MAMMOGRAPHY_SOP_CLASSES, decodable_transfer_syntaxes

log = logging.getLogger("cfia.listener")

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
VERIFICATION = "1.2.840.10008.1.1"


class Intake:
    """What the handlers need: the spool and the queue (the policy for other SOP classes is
    ListenerSettings')."""

    def __init__(self, spool: Spool, queue: JobQueue):
        self.spool = spool
        self.queue = queue
        self.counts: Counter[str] = Counter()  # received, ignored, echo, refused_0xC002, rejected, ...
        self.decodable = frozenset(decodable_transfer_syntaxes())
        self._lock = threading.Lock()
        self._batches: "weakref.WeakKeyDictionary[object, str]" = weakref.WeakKeyDictionary()

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def batch_of(self, assoc) -> str:
        """A unique id for the association: its images form one batch (study)."""
        with self._lock:
            if assoc not in self._batches:
                self._batches[assoc] = uuid.uuid4().hex
            return self._batches[assoc]

    def forget(self, assoc) -> str | None:
        with self._lock:
            return self._batches.pop(assoc, None)


def handle_rejected(event, intake: Intake) -> None:
    """EVT_REJECTED: an association refused: say who knocked and why."""
    assoc = event.assoc
    cause = rejection_cause(assoc)
    intake.count(f"rejected_{cause}")
    log.warning("association rejected", extra={"reason": REJECTION_REASONS[cause],
                                               "calling_ae": assoc.requestor.ae_title,
                                               "called_ae": assoc.requestor.primitive.called_ae_title
                                               if assoc.requestor.primitive else "",
                                               "peer": f"{assoc.requestor.address}:{assoc.requestor.port}"})


REJECTION_REASONS = {
    "busy": "too many associations open at once (listener.max_associations); the sender may retry",
    "called_ae": "called AE title is not listener.ae_title",
    "calling_ae": "calling AE title is not in listener.allowed_calling_ae_titles",
    "other": "refused by the DICOM library (e.g. user identity)",
    "tls": "TLS handshake failed (no or an untrusted client certificate, not TLS at all)",
    "too_large": "a dataset larger than listener.max_dataset_mb; the association was aborted",
}


def rejection_cause(assoc) -> str:
    """pynetdicom's EVT_REJECTED does not say why (pynetdicom 3.0 acse.py, _negotiate_as_acceptor):
    its checks are repeated here in its order, the last that applies being the one it sent."""
    ae, rq = assoc.ae, assoc.requestor.primitive
    if len([a for a in ae.active_associations if a.is_acceptor]) > ae.maximum_associations:
        return "busy"
    if rq is None:
        return "other"
    if ae.require_called_aet and rq.called_ae_title != assoc.acceptor.ae_title.strip():
        return "called_ae"
    allowed = [title.strip() for title in ae.require_calling_aet]
    if allowed and rq.calling_ae_title not in allowed:
        return "calling_ae"
    return "other"


def handle_store(event, intake: Intake, max_dataset_bytes: int = 256 << 20) -> Dataset | int:
    """EVT_C_STORE: returns a status within milliseconds; the model never runs here."""
    request = event.request
    uid = str(request.AffectedSOPInstanceUID)
    calling = event.assoc.requestor.ae_title
    try:
        return _store(event, intake, uid, calling, max_dataset_bytes)
    except Exception as exc:  # a bug here must not take the association down
        log.exception("C-STORE handler error", extra={"sop_instance_uid": uid, "calling_ae": calling})
        intake.count(f"refused_{statuses.UNEXPECTED_ERROR:#06x}")
        return statuses.status(statuses.UNEXPECTED_ERROR, f"internal error: {type(exc).__name__}")


def _store(event, intake: Intake, uid: str, calling: str, max_dataset_bytes: int) -> Dataset | int:
    sop_class = str(event.request.AffectedSOPClassUID)
    fields = {"sop_instance_uid": uid, "sop_class_uid": sop_class, "calling_ae": calling}
    if sop_class not in MAMMOGRAPHY_SOP_CLASSES:  # only negotiated when configured to ignore
        intake.count("ignored")
        log.info("ignored non-mammogram instance", extra=fields)
        return statuses.SUCCESS
    # The wire bytes were bounded as they arrived (scp.DatasetSizeLimit); a deflated dataset
    # is inflated whole by pynetdicom, and a few MB of it can hold gigabytes.
    if UID(event.context.transfer_syntax).is_deflated and inflates_beyond(event.request.DataSet, max_dataset_bytes):
        return _refuse(intake, statuses.TOO_LARGE, "deflated dataset inflates beyond listener.max_dataset_mb", fields)
    try:
        ds = event.dataset
        for _ in ds:  # convert the top level now: a truncated stream or a malformed element fails here
            pass
    except Exception as exc:
        return _refuse(intake, statuses.CANNOT_DECODE, f"cannot decode dataset: {type(exc).__name__}", fields)
    syntax = UID(event.context.transfer_syntax)
    if syntax not in intake.decodable:  # only negotiated when configured to ignore (unrestricted)
        return _refuse(intake, statuses.UNDECODABLE_SYNTAX, f"transfer syntax {syntax} cannot be decoded", fields)
    refusal = check_mammogram(ds, sop_class, syntax, uid)
    if refusal is not None:
        return _refuse(intake, refusal.code, refusal.reason, fields)
    return _spool(event, intake, ds, fields)


def _spool(event, intake: Intake, ds: Dataset, fields: dict) -> Dataset | int:
    try:
        path = intake.spool.write_incoming(received_file(event))
    except OSError as exc:
        why = "disk full" if exc.errno in DISK_FULL else f"cannot write spool: {exc.strerror}"
        return _refuse(intake, statuses.OUT_OF_RESOURCES, why, fields)
    batch = intake.batch_of(event.assoc)
    try:
        job_id, replaced = intake.queue.add(
            str(path), fields["sop_instance_uid"], str(ds.get("StudyInstanceUID", "")),
            fields["sop_class_uid"], fields["calling_ae"], batch)
    except Exception as exc:  # sqlite3.OperationalError: disk full, locked too long
        Path(path).unlink(missing_ok=True)
        return _refuse(intake, statuses.OUT_OF_RESOURCES, f"cannot record job: {exc}", fields)
    if replaced:
        intake.spool.locate(replaced).unlink(missing_ok=True)
    intake.count("received")
    log.info("stored instance", extra={**fields, "job": job_id, "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
                                       "transfer_syntax": str(event.context.transfer_syntax), "resend": bool(replaced)})
    return statuses.SUCCESS


def received_file(event) -> list[bytes | memoryview]:
    """The received image in the DICOM file format, as parts to write one after another:
    preamble, file meta, then the dataset exactly as sent. The dataset part is a view
    of pynetdicom's receive buffer (C_STORE.DataSet, a BytesIO): event.encoded_dataset()
    would copy a 9 MB mammogram twice (getvalue, then join), about 6 ms of the
    acknowledgement time."""
    return [b"\x00" * 128 + b"DICM" + encode_file_meta(event.file_meta), event.request.DataSet.getbuffer()]


def _refuse(intake: Intake, code: int, reason: str, fields: dict) -> Dataset:
    intake.count(f"refused_{code:#06x}")
    log.warning("refused instance", extra={**fields, "status": f"{code:#06x}", "reason": reason})
    return statuses.status(code, reason)


def handle_accepted(event, intake: Intake) -> None:
    """EVT_ACCEPTED: name the SOP classes proposed that no presentation context was accepted
    for. Said (and counted) when nothing can be stored, or a mammogram cannot (a syntax cfia
    cannot decode): a push that fails then shows its cause only on the sender's side.
    Otherwise only at DEBUG: dcmtk's storescu proposes some 64 classes on every association."""
    assoc = event.assoc
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    refused = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts} - accepted)
    if not refused:
        return
    storable = accepted - {VERIFICATION}  # an echo stores nothing
    telling = not storable or any(sop in MAMMOGRAPHY_SOP_CLASSES for sop in refused)
    if telling:
        intake.count("contexts_not_accepted")
    log.log(logging.INFO if telling else logging.DEBUG, "presentation contexts not accepted", extra={
        "calling_ae": assoc.requestor.ae_title, "sop_classes": ",".join(refused), "accepted": len(accepted)})


def handle_echo(event, intake: Intake) -> int:
    """EVT_C_ECHO: answers success; an association with only echoes makes no job."""
    intake.count("echo")
    log.info("C-ECHO", extra={"calling_ae": event.assoc.requestor.ae_title})
    return statuses.SUCCESS


def handle_association_end(event, intake: Intake) -> None:
    """EVT_RELEASED / EVT_ABORTED: the association's images are complete."""
    try:
        batch = intake.forget(event.assoc)
        if batch is not None:
            n = intake.queue.close_batch(batch)
            log.info("association ended", extra={"calling_ae": event.assoc.requestor.ae_title,
                                                 "event": event.event.name, "jobs_ready": n})
    except Exception:  # the quiet period promotes them instead
        log.exception("could not close batch")
