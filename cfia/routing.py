"""Destinations from config: fixed ones, plus "back to the sender" by calling AE title."""
from __future__ import annotations

from dicom_out import Destination

from .config import return_destination
from .worker import Routing


def _destination(d, name: str | None = None) -> Destination:
    return Destination(name=name or d.name, ae_title=d.ae_title, host=d.host, port=d.port)


def routing_from_config(cfg) -> Routing:
    back = []
    for calling_ae, raw in cfg.return_to_sender.items():
        d = raw if not isinstance(raw, dict) else return_destination(calling_ae, raw)
        back.append((str(calling_ae).strip(), _destination(d, f"return-to-{calling_ae}")))
    return Routing(fixed=tuple(_destination(d) for d in cfg.destinations), return_to_sender=tuple(back))
