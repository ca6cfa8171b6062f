"""The client side: what a program uses to scan one message at a time through a running
daemon (``RemoteScanner`` for the servers; ``pipeline`` is what ``mailguard check`` uses
for many messages).

``DaemonClient`` is one connection: a hello that checks the daemon runs the same
configuration, then scan requests, answered in order.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailguard.daemon.protocol import DaemonUnavailable, ProtocolError, frame, receive
from mailguard.daemon.where import connect_daemon

__all__ = ["DaemonClient", "DaemonUnavailable"]


@dataclass
class DaemonClient:
    """One connection to the daemon. Not thread-safe: one per thread."""

    path: Path
    fingerprint: str
    timeout_s: float = 120.0
    info: dict[str, Any] = field(default_factory=dict)
    _sock: socket.socket | None = None
    _stream: Any = None

    def connect(self, hello: bool = True) -> "DaemonClient":
        """Open the connection; with ``hello``, check the daemon's configuration first
        (without it, each scan request carries the fingerprint instead: one round trip).
        A socket in a folder others could have put it in is not used (``where.connect_daemon``)."""
        sock = connect_daemon(self.path, self.timeout_s)
        self._sock, self._stream = sock, sock.makefile("rb", buffering=65536)
        if not hello:
            return self
        try:
            sock.sendall(frame({"op": "hello", "config": self.fingerprint}))
            reply = receive(self._stream)
        except (OSError, ProtocolError) as exc:
            self.close()
            raise DaemonUnavailable(f"daemon on {self.path} did not answer: {exc}") from None
        if not reply or not reply.get("ok"):
            self.close()
            raise DaemonUnavailable(f"daemon on {self.path} refused the connection")
        if reply.get("config") != self.fingerprint:
            self.close()
            raise DaemonUnavailable(f"daemon on {self.path} runs another configuration ({reply.get('config')})")
        self.info = reply
        return self

    def close(self) -> None:
        for item in (self._stream, self._sock):
            if item is not None:
                try:
                    item.close()
                except OSError:
                    pass
        self._sock = self._stream = None

    def send_scan(self, raw: bytes, envelope: dict[str, Any] | None = None, check_config: bool = False) -> None:
        if self._sock is None:
            raise DaemonUnavailable("not connected")
        header: dict[str, Any] = {"op": "scan", "size": len(raw), "envelope": envelope}
        if check_config:
            header["config"] = self.fingerprint
        try:
            self._sock.sendall(frame(header, raw))
        except OSError as exc:
            raise DaemonUnavailable(f"connection to the daemon broke: {exc}", retry=True) from None

    def receive_verdict(self) -> dict[str, Any]:
        """The next reply: the verdict as a dict (``Verdict.to_dict``)."""
        try:
            reply = receive(self._stream)
        except TimeoutError:  # the worker is still on it: a second try would only double the wait
            raise DaemonUnavailable(f"the daemon did not answer within {self.timeout_s:g} s") from None
        except (OSError, ProtocolError) as exc:
            raise DaemonUnavailable(f"connection to the daemon broke: {exc}", retry=True) from None
        if reply is None:
            raise DaemonUnavailable("the daemon closed the connection", retry=True)
        if not reply.get("ok"):
            raise DaemonUnavailable(str(reply.get("error") or "the daemon could not scan the message"))
        return reply["verdict"]

    def scan(self, raw: bytes, envelope: dict[str, Any] | None = None, check_config: bool = False) -> dict[str, Any]:
        self.send_scan(raw, envelope, check_config)
        return self.receive_verdict()
