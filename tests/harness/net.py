"""Free loopback ports and polling with a deadline (never fixed ports, never bare sleeps)."""
from __future__ import annotations

import socket
from typing import Callable, TypeVar

from cfia.local_node import wait_for

T = TypeVar("T")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (bind to port 0, read it, close).

    A process started with it may still lose a race; launchers retry with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Call `check` until it returns something truthy; TimeoutError after `timeout` s.

    `check` may raise to give up at once (e.g. the process it waits for has died).
    The loop is cfia's own (cfia.local_node.wait_for), which the node launcher uses too.
    """
    return wait_for(check, timeout, what, interval)
