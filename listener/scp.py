"""The listener's network side: a pynetdicom SCP bound to the intake handlers."""
from __future__ import annotations

import logging
import ssl
import time
import weakref
from dataclasses import dataclass, field
from typing import Optional

from pynetdicom import AE, _config, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification

from .intake import (REJECTION_REASONS, Intake, handle_accepted, handle_association_end, handle_echo,
                     handle_rejected, handle_store)
from .syntaxes import decodable_transfer_syntaxes, supported_contexts

log = logging.getLogger("cfia.listener")


@dataclass(frozen=True)
class ListenerSettings:
    ae_title: str = "CFIA"
    host: str = "127.0.0.1"
    port: int = 11112                       # 0: any free port (tests)
    allowed_calling_ae_titles: tuple[str, ...] = ()  # empty: anyone
    ignore_other_sop_classes: bool = False  # False: their contexts are rejected
    ssl_context: Optional[ssl.SSLContext] = field(default=None, compare=False)
    # Unlimited: a 9 MB mammogram in 16 kB PDUs costs pynetdicom hundreds of ms.
    maximum_pdu_size: int = 0
    network_timeout: float = 60.0
    # A connection holds one of max_associations until its association request comes: pynetdicom
    # keeps one its peer closed unasked (a TCP port check) until this runs out (its default 30 s).
    # Under TLS the handshake and the request must both come within it.
    acse_timeout: float = 10.0
    max_associations: int = 10  # open at once; more are rejected (transient: the sender retries)
    max_dataset_bytes: int = 256 << 20  # one received dataset; beyond it the association is aborted


class _HandshakeOnFirstUse(ssl.SSLSocket):
    """Does the handshake on the first read or write (the association's thread), and says
    who failed it: socketserver dropped a failed handshake in the accept loop unlogged."""

    _handshaken = False
    peer = "?"  # set on wrapping: once a handshake fails the socket may no longer say

    def _handshake(self) -> None:
        if self._handshaken:
            return
        self._handshaken = True
        try:
            self.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS handshake failed", extra={"peer": self.peer, "reason": f"{type(exc).__name__}: {exc}"})
            self.context.on_handshake_failure()
            raise

    # The two calls pynetdicom 3.0's AssociationSocket makes.
    def recv(self, *args, **kwargs):
        self._handshake()
        return super().recv(*args, **kwargs)

    def send(self, *args, **kwargs):
        self._handshake()
        return super().send(*args, **kwargs)


class HandshakeOnTheAssociationThread(ssl.SSLContext):
    """Works around pynetdicom 3.0 doing the TLS handshake in its accept loop
    (transport.AssociationServer.get_request wraps the accepted socket, which has no
    timeout): one TCP connection that sends nothing stopped the listener accepting anyone,
    and a clean stop waited on it. Sockets are wrapped without the handshake, which is
    done on the association thread's first read, under `handshake_timeout`."""

    sslsocket_class = _HandshakeOnFirstUse
    handshake_timeout = 60.0

    def on_handshake_failure(self) -> None:
        """Set by listener.start: counts the refusal."""

    def wrap_socket(self, sock, server_side=False, **kwargs):
        sock.settimeout(self.handshake_timeout)
        kwargs["do_handshake_on_connect"] = False
        peer = _peer(sock)
        wrapped = super().wrap_socket(sock, server_side=server_side, **kwargs)
        wrapped.peer = peer
        return wrapped


def _peer(sock) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def tls_context(certificate: str, key: str, ca: Optional[str], timeout: float = 60.0) -> ssl.SSLContext:
    """Server-side TLS (1.2 and later); with a CA bundle, callers must present a certificate it signed."""
    ctx = HandshakeOnTheAssociationThread(ssl.PROTOCOL_TLS_SERVER)
    ctx.handshake_timeout = timeout
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certificate, key, password=lambda: b"")  # no passphrase: never a terminal prompt
    if ca:
        ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if ca else ssl.CERT_NONE
    return ctx


def make_ae(settings: ListenerSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.supported_contexts = supported_contexts(settings.ignore_other_sop_classes)
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.require_called_aet = True  # a caller set up with another AE title is told so, not served
    ae.maximum_pdu_size = settings.maximum_pdu_size
    ae.network_timeout = settings.network_timeout
    # Also bounds a TLS handshake, which runs inside the wait for the association request: a
    # longer timer for it would let a port check's failed handshake hold a slot as long.
    ae.acse_timeout = settings.acse_timeout
    ae.maximum_associations = settings.max_associations
    return ae


class Server:
    """pynetdicom's server, and what `ignore` switched on for it switched off again on shutdown."""

    def __init__(self, inner, unrestricted: bool):
        self._inner, self._unrestricted = inner, unrestricted
        self._stopped = False

    @property
    def server_address(self):
        return self._inner.server_address

    @property
    def active_associations(self):
        return self._inner.active_associations

    def shutdown(self, drain_seconds: float = 0.0) -> None:
        """Stop accepting; let open associations finish for `drain_seconds`, abort the rest
        (their acknowledged images are queued, the unacknowledged one the sender resends).
        `ignore`'s switch goes off last: pynetdicom reads it on every C-STORE, so an open
        association's private-class store would otherwise find no service and abort it.
        A second call does nothing (pynetdicom's shutdown is not idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._inner.shutdown()
        deadline = time.monotonic() + drain_seconds
        while self._inner.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self._inner.active_associations:
            if assoc.is_established:
                assoc.abort()
            elif assoc.dul.socket is not None:  # connected, no request sent: pynetdicom 3.0 cannot
                assoc.dul.socket.close()  # abort there (InvalidEventError 'Evt15' in 'Sta2'); hang up
        if self._unrestricted:
            _config.UNRESTRICTED_STORAGE_SERVICE = False


class DatasetSizeLimit:
    """pynetdicom gathers a received message whole in memory (and does not hold peers to the
    PDU size it offers), and the intake checks only the pixel data's length: a peer could
    send gigabytes in one C-STORE. Every P-DATA byte (command and dataset fragments alike:
    pynetdicom takes command fragments in the middle of a dataset) counts toward the message
    being received, until pynetdicom has decoded it whole (EVT_DIMSE_RECV); past the limit
    the association is hung up, before the message is all in memory."""

    def __init__(self, limit: int, intake: Intake):
        self.limit, self.intake = limit, intake
        self._received: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()
        self._ended: "weakref.WeakSet[object]" = weakref.WeakSet()

    def message_done(self, event) -> None:
        self._received[event.assoc] = 0

    def __call__(self, event) -> None:
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        assoc = event.assoc
        total = self._received.get(assoc, 0) + sum(len(item.presentation_data_value) - 1
                                                   for item in pdu.presentation_data_value_items)
        self._received[assoc] = total
        if total > self.limit and assoc not in self._ended:
            self._ended.add(assoc)
            self.intake.count("rejected_too_large")
            log.warning("association aborted", extra={
                "reason": REJECTION_REASONS["too_large"], "calling_ae": assoc.requestor.ae_title,
                "peer": f"{assoc.requestor.address}:{assoc.requestor.port}", "limit_bytes": self.limit})
            # Hung up at once: an A-ABORT queued from a handler goes out only after pynetdicom
            # has read (and gathered) the rest of the dataset and handed it to the C-STORE handler.
            assoc.dul.socket.close()


def start(settings: ListenerSettings, intake: Intake) -> Server:
    """Start serving in background threads; returns the server (`.server_address`,
    `.shutdown()`)."""
    handlers = [
        (evt.EVT_C_STORE, handle_store, [intake, settings.max_dataset_bytes]),
        (evt.EVT_C_ECHO, handle_echo, [intake]),
        (evt.EVT_RELEASED, handle_association_end, [intake]),
        (evt.EVT_ABORTED, handle_association_end, [intake]),
        (evt.EVT_REJECTED, handle_rejected, [intake]),
        (evt.EVT_ACCEPTED, handle_accepted, [intake]),
    ]
    limit = DatasetSizeLimit(settings.max_dataset_bytes, intake)
    handlers += [(evt.EVT_PDU_RECV, limit), (evt.EVT_DIMSE_RECV, limit.message_done)]
    # `ignore` promises that a PACS pushing a whole study sees no failure, but pynetdicom
    # accepts only the abstract syntaxes it lists, and a study may hold vendors' private
    # SOP classes. Its documented switch for accepting every storage class is process-wide
    # (pynetdicom._config), which is one listener per `cfia serve`; the intake refuses a
    # mammogram whose negotiated syntax it cannot decode (0xC005).
    _config.UNRESTRICTED_STORAGE_SERVICE = settings.ignore_other_sop_classes
    if isinstance(settings.ssl_context, HandshakeOnTheAssociationThread):
        settings.ssl_context.on_handshake_failure = lambda: intake.count("rejected_tls")
    ae = make_ae(settings)
    server = Server(ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers,
                                    ssl_context=settings.ssl_context), settings.ignore_other_sop_classes)
    host, port = server.server_address[:2]
    log.info("listening", extra={"ae_title": settings.ae_title, "host": host, "port": port,
                                 "tls": settings.ssl_context is not None,
                                 "transfer_syntaxes": len(decodable_transfer_syntaxes())})
    return server
