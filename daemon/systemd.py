"""systemd notification without a dependency: READY, WATCHDOG, STOPPING.

A datagram to ``$NOTIFY_SOCKET`` (a leading ``@`` is the abstract namespace).
Outside systemd the variable is unset and every call does nothing.
"""
from __future__ import annotations

import os
import socket


def notify(state: str, environ=os.environ) -> bool:
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def watchdog_interval(environ=os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2
