"""The client side: what ``mailguard check`` (and any program) uses to scan through a
running daemon.

``DaemonClient`` is one connection: a hello that checks the daemon runs the same
configuration, then scan requests, several in flight at once (pipelined) so the round
trips overlap the daemon's work. ``scan_in_order`` spreads many messages over a few
connections (one per daemon worker the caller wants busy) and yields verdicts in input
order. A connection that breaks (a worker killed mid-scan) is opened again and its
unanswered messages sent again; messages the daemon cannot take at all come back as
``None`` for the caller to scan in-process. No message is dropped either way.
"""
from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mailguard.daemon.protocol import ProtocolError, frame, receive

WINDOW = 16  # requests in flight per connection: overlaps round trips, keeps replies within socket buffers
RECONNECTS = 3  # attempts to reach a (replacement) worker before a message is left to the caller


class DaemonUnavailable(Exception):
    """No daemon on the socket, a different configuration, or a broken connection."""


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
        (without it, each scan request carries the fingerprint instead: one round trip)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"no daemon on {self.path}: {exc.strerror or exc}") from None
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
            raise DaemonUnavailable(f"connection to the daemon broke: {exc}") from None

    def receive_verdict(self) -> dict[str, Any]:
        """The next reply: the verdict as a dict (``Verdict.to_dict``)."""
        try:
            reply = receive(self._stream)
        except (OSError, ProtocolError) as exc:
            raise DaemonUnavailable(f"connection to the daemon broke: {exc}") from None
        if reply is None:
            raise DaemonUnavailable("the daemon closed the connection")
        if not reply.get("ok"):
            raise DaemonUnavailable(str(reply.get("error") or "the daemon could not scan the message"))
        return reply["verdict"]

    def scan(self, raw: bytes, envelope: dict[str, Any] | None = None, check_config: bool = False) -> dict[str, Any]:
        self.send_scan(raw, envelope, check_config)
        return self.receive_verdict()


@dataclass
class _Item:
    index: int
    key: Any
    raw: bytes | None = None
    verdict: dict[str, Any] | None = None
    error: str = ""  # the input could not be read (from ``load``)
    done: bool = False


def scan_in_order(
    path: Path, fingerprint: str, keys: Iterable[Any], load: Callable[[Any], bytes],
    connections: int = 1, timeout_s: float = 120.0,
) -> Iterator[tuple[Any, dict[str, Any] | None, str]]:
    """(key, verdict or None, read error) for every key, in order. ``load(key)`` gives the
    message bytes (raising OSError when unreadable). ``None`` with no error means the
    daemon could not scan it: the caller scans it in-process. Raises DaemonUnavailable
    before yielding anything when no connection can be opened."""
    first = DaemonClient(path, fingerprint, timeout_s).connect()
    clients = [first] + [DaemonClient(path, fingerprint, timeout_s) for _ in range(max(1, connections) - 1)]
    return _scan_in_order(clients, keys, load)


def _scan_in_order(
    clients: list[DaemonClient], keys: Iterable[Any], load: Callable[[Any], bytes]
) -> Iterator[tuple[Any, dict[str, Any] | None, str]]:
    items = [_Item(i, key) for i, key in enumerate(keys)]
    queue = deque(items)
    lock = threading.Condition()

    def finish(item: _Item) -> None:
        with lock:
            item.done = True
            item.raw = None
            lock.notify_all()

    def run(client: DaemonClient) -> None:
        in_flight: deque[_Item] = deque()
        attempts = 0
        while True:
            try:
                if client._sock is None:
                    client.connect()
                    for item in in_flight:  # resend what a lost worker never answered
                        client.send_scan(item.raw or b"")
                while len(in_flight) < WINDOW:
                    with lock:
                        item = queue.popleft() if queue else None
                    if item is None:
                        break
                    try:
                        item.raw = load(item.key)
                    except OSError as exc:
                        item.error = f"cannot read: {exc.strerror or exc}"
                        finish(item)
                        continue
                    in_flight.append(item)
                    client.send_scan(item.raw)
                if not in_flight:
                    return
                item = in_flight[0]
                item.verdict = client.receive_verdict()
                in_flight.popleft()
                attempts = 0
                finish(item)
            except DaemonUnavailable:
                client.close()
                attempts += 1
                if attempts > RECONNECTS:
                    for item in in_flight:  # left to the caller's in-process scanner
                        finish(item)
                    return

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    try:
        for item in items:
            with lock:
                while not item.done:
                    if not any(t.is_alive() for t in threads) and not item.done:
                        break  # every connection gave up: the rest is the caller's
                    lock.wait(0.5)
            yield item.key, item.verdict, item.error
    finally:
        with lock:
            queue.clear()
        for client in clients:
            client.close()
