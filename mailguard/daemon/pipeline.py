"""Many messages through a few daemon connections, in one thread: what ``mailguard check``
uses for a folder or a long list.

Each connection keeps up to ``WINDOW`` requests in flight and its replies are read as
they come (one non-blocking loop over every connection), so neither side ever waits on
the other with both buffers full: a client that only read after it had sent could
deadlock with a worker blocked sending replies it was not reading. A client of the
daemon's own user names each file by its absolute path and its device and inode (the
daemon reads it: no copy through the socket; one that finds another file there refuses) and asks for the verdict already rendered as ``check --json``
prints it, so the client neither decodes nor encodes it again; any other client sends
the bytes. A connection that breaks is opened again and its unanswered requests are
sent again; messages the daemon cannot take come back with no verdict, for the caller
to scan in-process. No message is dropped either way.
"""
from __future__ import annotations

import os
import selectors
import socket
import time
from collections import deque

from mailguard.daemon.protocol import HEADER, MAX_HEADER_BYTES, DaemonUnavailable, ProtocolError, decode, frame
from mailguard.daemon.where import connect_daemon

TYPE_CHECKING = False  # neither typing nor pathlib at run time: `mailguard check`'s client imports this
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Iterable, Iterator

WINDOW = 32  # requests in flight per connection: keeps the worker busy across round trips
RECONNECTS = 3  # attempts to reach a (replacement) worker before its messages are left to the caller


# Plain classes, not dataclasses: importing dataclasses (and inspect) is a tenth of the
# start-up of a check through the daemon.
class Answer:
    """One message's outcome: ``body`` is the verdict as ``check --json`` renders it
    (without the path), ``action`` and ``tempfail`` read from it; all empty with an
    ``error`` when the input could not be read, or with neither when the daemon could not
    scan it (the caller scans it itself)."""

    __slots__ = ("key", "body", "action", "tempfail", "error")

    def __init__(self, key: Any) -> None:
        self.key, self.body, self.action, self.tempfail, self.error = key, "", "", False, ""


class _Item:
    __slots__ = ("answer", "by_path", "raw", "done", "identity")

    def __init__(self, answer: Answer) -> None:
        self.answer, self.by_path, self.raw, self.done = answer, False, None, False
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file named by path, as we see it


class _Conn:
    __slots__ = ("sock", "greeted", "paths", "max_bytes", "inbuf", "out", "in_flight", "failures", "last_heard",
                 "writing")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.greeted = self.paths = False
        self.max_bytes = 0
        self.inbuf, self.out = bytearray(), bytearray()
        self.in_flight: deque[_Item] = deque()
        self.failures = 0
        self.last_heard = 0.0
        self.writing = False  # registered for EVENT_WRITE


def hello(path: str | Path, fingerprint: str, timeout_s: float) -> tuple[socket.socket, dict[str, Any]]:
    """A connected socket whose daemon runs ``fingerprint``, and its hello reply;
    DaemonUnavailable otherwise (UnsafeSocketFolder for a socket folder others could have
    put it in: ``where.connect_daemon``)."""
    sock = connect_daemon(path, timeout_s)
    try:
        sock.sendall(frame({"op": "hello", "config": fingerprint}))
        buf = bytearray()
        reply = None
        while reply is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ProtocolError("the daemon closed the connection")
            buf += chunk
            reply, _, _ = _split(buf)
    except (OSError, ProtocolError) as exc:
        sock.close()
        raise DaemonUnavailable(f"daemon on {path} did not answer: {exc}") from None
    if not reply.get("ok"):
        sock.close()
        raise DaemonUnavailable(f"daemon on {path} refused the connection")
    if reply.get("config") != fingerprint:
        sock.close()
        raise DaemonUnavailable(f"daemon on {path} runs another configuration ({reply.get('config')})")
    return sock, reply


def _split(buf: bytearray, start: int = 0) -> tuple[dict[str, Any] | None, bytes, int]:
    """The first whole frame in ``buf`` from ``start``, the body its header announces
    (``size``, for a rendered verdict) and where the next frame starts; (None, b"", start)
    when it is not all there yet."""
    if len(buf) - start < HEADER.size:
        return None, b"", start
    (length,) = HEADER.unpack_from(buf, start)
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame of {length} bytes is over the limit of {MAX_HEADER_BYTES}")
    end = start + HEADER.size + length
    if len(buf) < end:
        return None, b"", start
    header = decode(bytes(buf[start + HEADER.size:end]))
    size = header.get("size", 0) if "verdict" not in header else 0
    size = size if isinstance(size, int) and size > 0 else 0
    if len(buf) < end + size:
        return None, b"", start
    return header, bytes(buf[end:end + size]), end + size


def scan_in_order(
    path: str | Path, fingerprint: str, keys: Iterable[str], load: Callable[[str, int], bytes],
    connections: int = 1, timeout_s: float = 120.0, before_wait: Callable[[], None] | None = None,
) -> Iterator[Answer]:
    """An Answer for every key, in order. ``load(key, most)`` gives the message bytes, no more
    than ``most`` of them (-1: all; one over the daemon's limit tells it is too large) (raising
    OSError when unreadable); a key other than "-" is a file the daemon may read itself.
    ``before_wait`` runs before the loop waits on the daemon (flush what was printed).
    Raises DaemonUnavailable before yielding anything when no connection can be opened."""
    sock, info = hello(path, fingerprint, timeout_s)
    return _Pipeline(path, fingerprint, timeout_s, load, before_wait).run(list(keys), sock, info, connections)


class _Pipeline:
    def __init__(self, path: str | Path, fingerprint: str, timeout_s: float, load: Callable[[str, int], bytes],
                 before_wait: Callable[[], None] | None) -> None:
        self.path, self.fingerprint, self.timeout_s = path, fingerprint, timeout_s
        self.load, self.before_wait = load, before_wait

    def run(self, keys: list[str], sock: socket.socket, info: dict[str, Any], connections: int) -> Iterator[Answer]:
        items = [_Item(Answer(key)) for key in keys]
        self.queue: deque[_Item] = deque(items)
        self.selector = selectors.DefaultSelector()
        first = _Conn()
        self._greeted(first, sock, info)
        self.conns = [first]
        try:
            for _ in range(max(1, connections) - 1):
                if len(self.queue) > WINDOW:  # a second worker only when there is work for it
                    self.conns.append(self._open(_Conn()))
            for item in items:
                while not item.done:
                    self._step()
                yield item.answer
        finally:
            for conn in self.conns:
                self._close(conn)
            self.selector.close()

    # ---------------------------------------------------------------- connections

    def _open(self, conn: _Conn) -> _Conn:
        """Connect without waiting for the hello reply (the worker may be busy with another
        client; until it greets, the other connections take the work)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            conn.failures = RECONNECTS + 1  # no daemon any more: nothing more for this one
            return conn
        sock.setblocking(False)
        conn.sock, conn.greeted, conn.inbuf, conn.last_heard = sock, False, bytearray(), time.monotonic()
        conn.out = bytearray(frame({"op": "hello", "config": self.fingerprint}))
        conn.writing = True
        self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        return conn

    def _greeted(self, conn: _Conn, sock: socket.socket, info: dict[str, Any]) -> None:
        sock.setblocking(False)
        conn.sock, conn.greeted, conn.last_heard = sock, True, time.monotonic()
        conn.paths = bool(info.get("paths"))
        conn.max_bytes = int(info.get("max_message_bytes") or 0)
        conn.out.clear()  # the hello, sent
        conn.writing = False
        self.selector.register(sock, selectors.EVENT_READ, conn)
        for item in conn.in_flight:  # a replacement worker: what the lost one never answered
            self._request(conn, item)

    def _close(self, conn: _Conn) -> None:
        if conn.sock is not None:
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
            conn.sock = None

    def _broken(self, conn: _Conn) -> None:
        self._close(conn)
        conn.failures += 1
        if conn.failures > RECONNECTS:
            while conn.in_flight:  # left to the caller's in-process scanner
                conn.in_flight.popleft().done = True
            return
        self._open(conn)
        if conn.sock is None:
            self._broken(conn)

    # ---------------------------------------------------------------- requests

    def _fill(self, conn: _Conn) -> None:
        while conn.greeted and len(conn.in_flight) < WINDOW and self.queue:
            item = self.queue.popleft()
            key = item.answer.key
            item.by_path = conn.paths and key != "-" and self._identify(item)
            if not item.by_path and item.raw is None and not self._load(item, conn):
                continue
            conn.in_flight.append(item)
            self._request(conn, item)

    @staticmethod
    def _identify(item: _Item) -> bool:
        """Whether the file can be named by path: its (device, inode) as this process sees
        it, sent with the path so that a daemon seeing another file there (its own mount
        namespace, a link through /proc/self) refuses instead of scanning that one."""
        if item.identity is None:
            try:
                info = os.stat(item.answer.key)
            except OSError:
                return False  # sent as bytes: reading it reports the error
            item.identity = (info.st_dev, info.st_ino)
        return True

    def _load(self, item: _Item, conn: _Conn) -> bool:
        """Read the message for a request that carries it; False when it is done without
        one (unreadable, or over the daemon's limit: the caller scans it itself)."""
        try:
            item.raw = self.load(item.answer.key, conn.max_bytes + 1 if conn.max_bytes else -1)
        except OSError as exc:
            item.answer.error = f"cannot read: {exc.strerror or exc}"
            item.done = True
            return False
        if conn.max_bytes and len(item.raw) > conn.max_bytes:
            item.raw, item.done = None, True
            return False
        return True

    def _request(self, conn: _Conn, item: _Item) -> None:
        if item.by_path:
            dev, ino = item.identity or (None, None)
            conn.out += frame({"op": "scan", "path": os.path.abspath(item.answer.key), "dev": dev, "ino": ino,
                               "envelope": None, "reply": "json"})
        else:
            raw = item.raw or b""
            conn.out += frame({"op": "scan", "size": len(raw), "envelope": None, "reply": "json"}, raw)
        self._want_write(conn)

    def _want_write(self, conn: _Conn) -> None:
        if conn.sock is not None and conn.writing != bool(conn.out):
            conn.writing = bool(conn.out)
            self.selector.modify(conn.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.writing else 0), conn)

    # ---------------------------------------------------------------- the loop

    def _step(self) -> None:
        for conn in self.conns:
            self._fill(conn)
        live = [c for c in self.conns if c.sock is not None]
        if not live:  # every connection gave up: the rest is the caller's
            for item in self.queue:
                item.done = True
            self.queue.clear()
            return
        if self.before_wait is not None:
            self.before_wait()
        events = self.selector.select(1.0)
        now = time.monotonic()
        for key, mask in events:
            conn: _Conn = key.data
            try:
                if mask & selectors.EVENT_READ:
                    self._receive(conn, now)
                if mask & selectors.EVENT_WRITE and conn.sock is not None and conn.out:
                    sent = conn.sock.send(conn.out)
                    del conn.out[:sent]
                    self._want_write(conn)
            except (BlockingIOError, InterruptedError):
                continue
            except (OSError, ProtocolError, ValueError):
                self._broken(conn)
        for conn in self.conns:
            waiting = conn.in_flight or not conn.greeted
            if conn.sock is not None and waiting and now - conn.last_heard > self.timeout_s:
                self._broken(conn)

    def _receive(self, conn: _Conn, now: float) -> None:
        chunk = conn.sock.recv(256 * 1024)  # type: ignore[union-attr]
        if not chunk:
            raise ProtocolError("the daemon closed the connection")
        conn.inbuf += chunk
        conn.last_heard = now
        self._replies(conn)

    def _replies(self, conn: _Conn) -> None:
        start = 0
        try:
            while True:
                header, body, start = _split(conn.inbuf, start)
                if header is None:
                    return
                self._reply(conn, header, body)
        finally:
            if start:
                del conn.inbuf[:start]

    def _reply(self, conn: _Conn, header: dict[str, Any], body: bytes) -> None:
        if not conn.greeted:
            if not header.get("ok") or header.get("config") != self.fingerprint:
                raise ProtocolError("the daemon refused the connection")
            sock, conn.sock = conn.sock, None
            self.selector.unregister(sock)
            self._greeted(conn, sock, header)  # type: ignore[arg-type]
            conn.failures = 0
            return
        if not conn.in_flight:
            raise ProtocolError("a reply to no request")
        item = conn.in_flight.popleft()
        conn.failures = 0
        if header.get("ok"):
            item.answer.body = body.decode("utf-8")
            item.answer.action = str(header.get("action", ""))
            item.answer.tempfail = bool(header.get("tempfail"))
            item.raw, item.done = None, True
        elif item.by_path and not header.get("too_large"):
            item.by_path = False  # the daemon cannot read it (or may not): send the bytes
            if self._load(item, conn):
                conn.in_flight.append(item)
                self._request(conn, item)
        else:
            item.raw, item.done = None, True  # the daemon cannot take it: the caller scans it
