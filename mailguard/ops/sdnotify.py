"""Readiness for systemd (``Type=notify``): one datagram to $NOTIFY_SOCKET, as sd_notify(3).

A few lines instead of a dependency; without NOTIFY_SOCKET (not under systemd) it does nothing.
"""
from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send e.g. "READY=1", "RELOADING=1", "STOPPING=1", "STATUS=..."; True when sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not states:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode("utf-8"))
        return True
    except OSError:
        return False
