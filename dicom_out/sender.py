"""The C-STORE sender: result objects to one destination over one association, and
the backoff schedule for resending to a destination that is down.

Only network I/O, no state: whoever calls it keeps results on disk and decides when
to retry (the worker keeps them in the durable queue), so an outage or a restart
loses nothing. Result UIDs are deterministic, so a resend replaces, never duplicates.
"""
from __future__ import annotations

import logging
import random
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ

log = logging.getLogger("cfia.sender")

# PS3.4 B.2.3: warnings mean the object was stored.
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
CONTEXT_REJECTED = 0x0122  # SOP class not supported: the destination did not accept it
_RNG = random.Random()


class DestinationUnavailable(Exception):
    """No association, or it broke: try the whole send again later."""


class StoreRefused(DestinationUnavailable):
    """The destination made the association, then aborted it (an A-ABORT it sent, not a
    lost connection or a timeout) in answer to its first C-STORE request, nothing stored:
    it does not let this AE store (Orthanc when the calling AE title is not among its
    DicomModalities and DicomAlwaysAllowStore is false). A refusal, not an outage; a
    DestinationUnavailable still for callers that only tell stored from not."""


class DestinationRejected(Exception):
    """The destination rejected the association permanently (e.g. it does not know the
    called or the calling AE title): a configuration to fix, not an outage to wait out."""


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    ssl_context: Optional[ssl.SSLContext] = field(default=None, compare=False)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: base, 2*base, 4*base ... capped, with +-20% jitter so that
    many queued jobs do not all knock at the same second."""

    base_seconds: float = 5.0
    max_seconds: float = 300.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: Optional[random.Random] = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        raw = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        rng = rng or _RNG
        return max(0.0, raw * (1 + self.jitter * (2 * rng.random() - 1)))


@dataclass(frozen=True)
class _Item:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    payload: Dataset | Path


def _describe(obj: Dataset | str | Path) -> _Item:
    if isinstance(obj, Dataset):
        meta = getattr(obj, "file_meta", None)
        ts = (meta.get("TransferSyntaxUID") if meta is not None else None) or ExplicitVRLittleEndian
        return _Item(str(obj.SOPClassUID), str(obj.SOPInstanceUID), str(ts), obj)
    meta = read_file_meta_info(obj)  # sends the file as stored, without decoding it
    return _Item(str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                 str(meta.TransferSyntaxUID), Path(obj))


def send(objects: Sequence[Dataset | str | Path], destination: Destination, calling_ae: str = "CFIA",
         timeout: float = 30.0) -> dict[str, int]:
    """C-STORE `objects` (datasets or DICOM files) to `destination` over one association.

    Returns SOP Instance UID -> status (CONTEXT_REJECTED when the destination refused
    the SOP class). Raises DestinationUnavailable when no association is made or it
    breaks mid-way: nothing can be said about the objects, send them all again;
    StoreRefused when the destination aborts it at the first C-STORE.
    """
    items = [_describe(obj) for obj in objects]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout  # a host that drops the TCP handshake: the OS gives up only after ~2 min
    for sop_class, syntaxes in _contexts(items):
        ae.add_requested_context(sop_class, syntaxes)
    tls = (destination.ssl_context, destination.host) if destination.ssl_context else None
    where = f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port})"
    aborts = []  # A-ABORTs the destination sent (pynetdicom reports them before the store returns)
    on_pdu = (evt.EVT_PDU_RECV, lambda event: isinstance(event.pdu, A_ABORT_RQ) and aborts.append(event.pdu))
    try:
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls,
                             evt_handlers=[on_pdu])
    except OSError as exc:  # the host name does not resolve, a TLS handshake fails: down, for now
        raise DestinationUnavailable(f"no association with {where}: {type(exc).__name__}: {exc}") from None
    if assoc.is_rejected and assoc.acceptor.primitive is not None and assoc.acceptor.primitive.result == 1:
        reply = assoc.acceptor.primitive  # A-ASSOCIATE-RJ, result 1: rejected-permanent
        raise DestinationRejected(f"{where} rejected the association permanently (source {reply.result_source}, "
                                  f"reason {reply.diagnostic}: e.g. an AE title it does not know)")
    if not assoc.is_established:
        raise DestinationUnavailable(f"no association with {where}")
    replies: dict[str, int] = {}
    try:
        for item in items:
            try:
                replies[item.sop_instance_uid] = _store_one(assoc, item, destination)
            except DestinationUnavailable:
                if aborts and all(status == CONTEXT_REJECTED for status in replies.values()):  # none answered
                    raise StoreRefused(f"{where} aborted the association at the first C-STORE, storing nothing: "
                                       "does it allow this calling AE title to store?") from None
                raise
        return replies
    finally:
        if assoc.is_established:
            assoc.release()


def _store_one(assoc, item: _Item, destination: Destination) -> int:
    try:
        reply = assoc.send_c_store(item.payload)
    except RuntimeError:  # pynetdicom: the association ended before this store
        raise DestinationUnavailable(f"association with {destination.name} ended while sending") from None
    except ValueError:  # no accepted presentation context for this SOP class
        log.warning("destination refused SOP class", extra={"destination": destination.name,
                                                            "sop_class_uid": item.sop_class_uid})
        return CONTEXT_REJECTED
    if "Status" not in reply:  # association aborted or timed out
        raise DestinationUnavailable(f"association with {destination.name} broke while sending")
    return int(reply.Status)


def _contexts(items: list[_Item]) -> list[tuple[str, list[str]]]:
    """Presentation contexts to request. The SCP picks one syntax per context, so a
    compressed syntax gets a context of its own; uncompressed objects share one with
    both little-endian syntaxes, which pynetdicom converts between."""
    contexts: list[tuple[str, list[str]]] = []
    for item in items:
        ts = UID(item.transfer_syntax)
        syntaxes = [str(ts)] if ts.is_compressed else [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        if (item.sop_class_uid, syntaxes) not in contexts:
            contexts.append((item.sop_class_uid, syntaxes))
    return contexts
