"""Loopback peers for the node tests: a storage SCP destination, an SCU that pushes
images, small phantom mammograms, and polling (no fixed sleeps, no fixed ports)."""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification

from listener import JobQueue
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

SMALL = (256, 208)
PATIENT_NAME_PREFIX = "PHANTOM^"  # what phantom.dicom writes: must never reach a log
PATIENT_ID_PREFIX = "PH0"


def poll(condition, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Wait until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class FailingQueue(JobQueue):
    """A JobQueue whose writes named in `failing` raise what SQLite raises for a full disk
    (or, with `error`, a lock held elsewhere) until they are taken out of it."""

    def __init__(self, path, failing=(), error: str = "database or disk is full", **kwargs):
        super().__init__(path, **kwargs)
        self.failing, self.error = set(failing), error

    def _write(self, name: str, *args, **kwargs):
        if name in self.failing:
            raise sqlite3.OperationalError(self.error)
        return getattr(super(), name)(*args, **kwargs)

    def retry_later(self, *args, **kwargs):
        return self._write("retry_later", *args, **kwargs)

    def requeue_running(self, *args, **kwargs):
        return self._write("requeue_running", *args, **kwargs)

    def fail(self, *args, **kwargs):
        return self._write("fail", *args, **kwargs)


def dead_letter_job(spool, queue, sop_class: str = "x", uid: str = "1.2.3") -> int:
    """One job taken through the queue to the dead-letter folder: what `cfia requeue` acts on."""
    job = queue.add(str(spool.write_incoming(b"image")), uid, "1.2", sop_class, "MOD", uid)[0]
    queue.close_batch(uid)
    queue.claim("w")
    spool.move_to_dead_letter(job, spool.locate(queue.get(job).path), None,
                              {"reason": "test", "job": job, "sop_instance_uid": uid})
    queue.fail(job, "test")
    return job


def mammogram(index: int = 0, size=SMALL, bits: int = 12, seed: int = 11) -> Dataset:
    mg = make_one(seed, index, PhantomOptions(size=size, bits_stored=bits))
    return to_dataset(mg, f"node-test:{seed}:{index}:{size}", seed * 1000 + index, bits)


def write(ds: Dataset, path: Path) -> Path:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


class StorageSCP:
    """A destination PACS: accepts every storage class, records what arrives."""

    def __init__(self, ae_title: str = "DEST", port: int = 0, refuse_first: int = 0):
        self.ae_title = ae_title
        self.received: list[Dataset] = []
        self.refusals_left = refuse_first  # answer this many C-STOREs 0xA700 (out of resources) first
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True  # as a PACS that checks it (Orthanc's DicomCheckCalledAet)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self._server.server_address[1]

    def _on_store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            if self.refusals_left > 0:
                self.refusals_left -= 1
                return 0xA700
            self.received.append(ds)
        return 0x0000

    def uids(self) -> Counter:
        with self._lock:
            return Counter(str(ds.SOPInstanceUID) for ds in self.received)

    def stop(self) -> None:
        self._server.shutdown()


def push(port: int, objects, calling_ae: str = "MODALITY", called_ae: str = "CFIA",
         contexts=None, tls_args=None, abort: bool = False) -> list:
    """C-STORE datasets or files over one association, then release it (`abort`: abort it);
    returns each reply's Status (None when the SCU could not send: no accepted context)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class, syntaxes in contexts or _contexts(objects):
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, tls_args=tls_args)
    assert assoc.is_established, "association rejected"
    statuses = []
    try:
        for obj in objects:
            try:
                reply = assoc.send_c_store(obj)
            except ValueError:  # no presentation context accepted for it
                statuses.append(None)
                continue
            statuses.append(int(reply.Status) if "Status" in reply else None)
    finally:
        assoc.abort() if abort else assoc.release()
    return statuses


@contextmanager
def files_sent_as_stored():
    """pynetdicom decodes a file before sending it unless its documented option
    STORE_SEND_CHUNKED_DATASET is on; corrupt-data tests need the bytes as stored."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def _contexts(objects) -> list:
    """One context per compressed syntax (the SCP picks one syntax per context);
    a file may be sent as stored, so it gets a context of its own syntax only."""
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    found: list = []
    for obj in objects:
        if isinstance(obj, Dataset):
            sop, ts = str(obj.SOPClassUID), obj.file_meta.TransferSyntaxUID
            offered = [str(ts)] if ts.is_compressed else [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        else:
            meta = read_file_meta_info(obj)
            sop, offered = str(meta.MediaStorageSOPClassUID), [str(meta.TransferSyntaxUID)]
        if (sop, offered) not in found:
            found.append((sop, offered))
    return found


def echo(port: int, calling_ae: str = "MODALITY", called_ae: str = "CFIA", tls_args=None) -> int | None:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        reply = assoc.send_c_echo()
        return int(reply.Status) if "Status" in reply else None
    finally:
        assoc.release()


def blob_saliency(rows: int, cols: int) -> np.ndarray:
    y, x = np.mgrid[:rows, :cols]
    return np.exp(-((y - rows / 2) ** 2 + (x - cols / 2) ** 2) / (2 * (rows / 10) ** 2)).astype(np.float32)
