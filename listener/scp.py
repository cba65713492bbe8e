"""The listener's network side: a pynetdicom SCP bound to the intake handlers."""
from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Optional

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification

from .intake import Intake, handle_association_end, handle_echo, handle_rejected, handle_store
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
    max_associations: int = 10  # open at once; more are rejected (transient: the sender retries)


def tls_context(certificate: str, key: str, ca: Optional[str]) -> ssl.SSLContext:
    """Server-side TLS; with a CA bundle, callers must present a certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.load_cert_chain(certificate, key)
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
    ae.maximum_associations = settings.max_associations
    return ae


class Server:
    """pynetdicom's server, and what `ignore` switched on for it switched off again on shutdown."""

    def __init__(self, inner, unrestricted: bool):
        self._inner, self._unrestricted = inner, unrestricted

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
        association's private-class store would otherwise find no service and abort it."""
        self._inner.shutdown()
        deadline = time.monotonic() + drain_seconds
        while self._inner.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self._inner.active_associations:
            assoc.abort()
        if self._unrestricted:
            _config.UNRESTRICTED_STORAGE_SERVICE = False


def start(settings: ListenerSettings, intake: Intake) -> Server:
    """Start serving in background threads; returns the server (`.server_address`,
    `.shutdown()`)."""
    handlers = [
        (evt.EVT_C_STORE, handle_store, [intake]),
        (evt.EVT_C_ECHO, handle_echo, [intake]),
        (evt.EVT_RELEASED, handle_association_end, [intake]),
        (evt.EVT_ABORTED, handle_association_end, [intake]),
        (evt.EVT_REJECTED, handle_rejected, [intake]),
    ]
    # `ignore` promises that a PACS pushing a whole study sees no failure, but pynetdicom
    # accepts only the abstract syntaxes it lists, and a study may hold vendors' private
    # SOP classes. Its documented switch for accepting every storage class is process-wide
    # (pynetdicom._config), which is one listener per `cfia serve`; the intake refuses a
    # mammogram whose negotiated syntax it cannot decode (0xC005).
    _config.UNRESTRICTED_STORAGE_SERVICE = settings.ignore_other_sop_classes
    ae = make_ae(settings)
    server = Server(ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers,
                                    ssl_context=settings.ssl_context), settings.ignore_other_sop_classes)
    host, port = server.server_address[:2]
    log.info("listening", extra={"ae_title": settings.ae_title, "host": host, "port": port,
                                 "tls": settings.ssl_context is not None,
                                 "transfer_syntaxes": len(decodable_transfer_syntaxes())})
    return server
