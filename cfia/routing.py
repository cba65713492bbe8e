"""Where results go: the Routing (fixed destinations, plus "back to the sender" by calling AE
title) and how it is read from the config."""
from __future__ import annotations

from dataclasses import dataclass

from dicom_out import Destination

from .config import return_destination


@dataclass(frozen=True)
class Routing:
    """Where results go: the fixed destinations plus the caller's own address when
    its calling AE title is in the return-to-sender table."""

    fixed: tuple[Destination, ...] = ()
    return_to_sender: tuple[tuple[str, Destination], ...] = ()

    def destinations_for(self, calling_ae: str) -> list[Destination]:
        back = [dest for ae, dest in self.return_to_sender if ae == calling_ae.strip()]
        return list(self.fixed) + back


def _destination(d, name: str | None = None) -> Destination:
    return Destination(name=name or d.name, ae_title=d.ae_title, host=d.host, port=d.port)


def routing_from_config(cfg) -> Routing:
    back = []
    for calling_ae, raw in cfg.return_to_sender.items():
        d = raw if not isinstance(raw, dict) else return_destination(calling_ae, raw)
        back.append((str(calling_ae).strip(), _destination(d, f"return-to-{calling_ae}")))
    return Routing(fixed=tuple(_destination(d) for d in cfg.destinations), return_to_sender=tuple(back))
