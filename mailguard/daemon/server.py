"""The prefork daemon: a master that builds the scanner once and forks workers after it.

The master builds the ``Scanner`` (rules, automata, YARA), imports what scanning will need,
freezes the garbage collector's view of those objects (so reference counting and
collection do not dirty the shared pages) and binds the socket; then it forks the workers,
which inherit all of it copy-on-write and each accept connections on the one listening
socket. The master only supervises: a worker that dies (killed, out of memory, a crash in
a C library) is replaced at once by a new fork of the same built scanner, and the client
whose request it was holding resends it (``client``), so no message is lost.
"""
from __future__ import annotations

import errno
import gc
import json
import logging
import os
import resource
import select
import signal
import socket
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailguard.daemon.protocol import HEADER, MAX_HEADER_BYTES, ProtocolError, decode, frame
from mailguard.daemon.where import unsafe_socket_folder
from mailguard.model import Envelope
from mailguard.ops.unixsocket import SocketPathTaken, bind_unix_socket

log = logging.getLogger("mailguard.daemon")


@dataclass
class DaemonServer:
    """``run()`` blocks until SIGTERM or SIGINT; ``workers`` processes scan."""

    config: Any  # mailguard.config.Config
    socket_path: Path
    workers: int
    fingerprint: str
    socket_mode: int = 0o600
    max_message_bytes: int = 64 * 1024 * 1024
    idle_timeout_s: float = 300.0
    max_requests_per_worker: int = 0
    _children: dict[int, int] = field(default_factory=dict)  # pid -> worker slot
    _stopping: bool = False

    # ------------------------------------------------------------------ master

    def run(self) -> int:
        from mailguard import __version__
        from mailguard.scanner import Scanner

        started = time.perf_counter()
        scanner = Scanner(self.config)
        scanner.preload()  # imported now, once, instead of in every worker at its first PDF, document, signature
        scanner.scan(b"From: warm-up@example.com\nSubject: warm-up\n\n<html><body><a href='https://example.com'>x</a></body></html>\n")
        listener = self._bind()
        self._version = __version__
        gc.collect()
        gc.freeze()  # the built scanner stays in the shared (copy-on-write) pages
        built_s = time.perf_counter() - started
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            for slot in range(self.workers):
                self._fork(slot, listener, scanner)
            log.info("daemon ready: socket %s, %d workers, scanner built in %.2f s",
                     self.socket_path, self.workers, built_s)
            while not self._stopping:
                try:
                    pid, status = os.wait()
                except (ChildProcessError, _Stop):
                    break
                slot = self._children.pop(pid, None)
                if slot is None or self._stopping:
                    continue
                how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {os.WEXITSTATUS(status)}"
                log.warning("worker %d (pid %d) ended with %s; starting a new one", slot, pid, how)
                self._fork(slot, listener, scanner)
        except _Stop:  # a signal while the workers were being forked
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._shutdown(listener)
        return 0

    def _stop(self, signum: int, _frame: Any) -> None:
        self._stopping = True
        raise _Stop()  # os.wait() would otherwise resume after the handler (PEP 475)

    def _shutdown(self, listener: socket.socket) -> None:
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in list(self._children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._children.clear()
        listener.close()
        try:
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()
        except OSError:
            pass
        log.info("daemon stopped")

    def _bind(self) -> socket.socket:
        """The socket (``mailguard.ops.unixsocket``), its folder made if missing (private:
        only this user's clients connect)."""
        path = self.socket_path
        unsafe = unsafe_socket_folder(path)
        if unsafe:
            raise DaemonError(unsafe)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        try:
            return bind_unix_socket(path, self.socket_mode, listener="a daemon", setting="[daemon] socket")
        except SocketPathTaken as exc:
            raise DaemonError(str(exc)) from None

    def _fork(self, slot: int, listener: socket.socket, scanner: Any) -> None:
        master = os.getpid()  # taken before the fork: a master killed at once must not become the worker's "master"
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                code = _Worker(self, listener, scanner, master).serve()
            except BaseException:  # noqa: BLE001 - a worker must never return into the master's code
                log.exception("worker %d failed", slot)
            finally:
                os._exit(code)
        self._children[pid] = slot
        log.info("worker %d started (pid %d)", slot, pid)


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the master's wait."""


class DaemonError(Exception):
    """The daemon cannot start (socket in use, not a socket, no permission)."""


@dataclass
class _Worker:
    server: DaemonServer
    listener: socket.socket
    scanner: Any
    master: int  # the master's pid, as the master saw it before forking us
    served: int = 0

    def serve(self) -> int:
        limit = self.server.max_requests_per_worker
        self.listener.settimeout(1.0)  # wake now and then to see whether the master is still there
        while True:
            if os.getppid() != self.master:  # the master died (killed): nobody would replace us or stop us
                log.warning("worker pid %d: the daemon's master is gone; exiting", os.getpid())
                return 0
            try:
                conn, _ = self.listener.accept()
            except (InterruptedError, socket.timeout):
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.1)  # out of descriptors: back off instead of spinning
                    continue
                raise
            with conn:
                self._connection(conn)
            if limit and self.served >= limit:
                log.info("worker pid %d served %d messages; replaced by a fresh fork", os.getpid(), self.served)
                return 0

    def _connection(self, conn: socket.socket) -> None:
        wire = _Wire(conn, self.listener, self.server.idle_timeout_s)
        may_read = _peer_may_read(conn)
        try:
            while True:
                request = wire.frame()
                if request is None:
                    return
                wire.reply(self._answer(request, wire, may_read))
                if wire.turn_is_over():
                    log.debug("connection let go after its turn: another client is waiting for a worker")
                    return
        except (ProtocolError, OSError) as exc:
            log.debug("connection closed: %s", exc)
        except Exception:  # noqa: BLE001 - a request nobody foresaw costs its connection, never the worker
            log.exception("a request could not be answered; its connection is closed")
        finally:
            try:
                wire.flush()  # replies already computed still reach the client
            except (ProtocolError, OSError):
                pass

    def _answer(self, request: dict[str, Any], wire: "_Wire", may_read: bool) -> bytes:
        op = request.get("op")
        if op == "hello":
            return frame({
                "ok": True, "config": self.server.fingerprint, "pid": os.getpid(), "version": self.server._version,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "paths": may_read,
                "max_message_bytes": self.server.max_message_bytes,
            })
        if op != "scan":
            raise ProtocolError(f"unknown request {op!r}")
        path = request.get("path")
        if path is not None:
            raw, refusal = self._read_path(path, may_read, (request.get("dev"), request.get("ino")))
            if raw is None:
                return frame(refusal)
        else:
            size = request.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError("scan request without a valid size")
            if size > self.server.max_message_bytes:
                raise ProtocolError(f"message of {size} bytes is over [daemon] max_message_bytes")
            raw = wire.body(size)
        if "config" in request and request["config"] != self.server.fingerprint:
            return frame({"ok": False, "error": f"the daemon runs another configuration ({self.server.fingerprint})"})
        try:
            envelope = _envelope(request.get("envelope"))
        except _BadEnvelope as exc:  # the message was read: the stream is still in step, so say why
            return frame({"ok": False, "error": f"envelope: {exc}"})
        try:
            verdict = self.scanner.scan(raw, envelope)
        except Exception as exc:  # noqa: BLE001 - the scanner never raises by contract; say so if it does
            log.exception("scan failed")
            return frame({"ok": False, "error": f"scan failed: {type(exc).__name__}"})
        self.served += 1
        if request.get("reply") == "json":
            # the verdict as `check --json` prints it: the client splices its path in
            # instead of decoding and encoding it again
            body = json.dumps(verdict.to_dict(), ensure_ascii=False).encode("utf-8")
            return frame({"ok": True, "action": str(verdict.action), "tempfail": verdict.tempfail, "size": len(body)},
                         body)
        return frame({"ok": True, "verdict": verdict.to_dict()})

    def _read_path(self, path: Any, may_read: bool, identity: tuple[Any, Any]) -> tuple[bytes | None, dict[str, Any]]:
        """The message a same-user client named by path (it could read it itself, so the
        daemon reading it grants nothing); a refusal the client answers by sending the bytes.

        Only a regular file is read, opened without blocking: a FIFO would hold the worker
        until someone wrote to it (no timeout covers ``open``), a device such as /dev/zero
        would be read up to the size limit. ``identity`` is the (device, inode) the client
        found at that path, when it says: a daemon in another mount namespace (systemd's
        PrivateTmp=) or a path through /proc/self names a different file in the daemon
        than in the client, whose verdict must not be given for the client's message."""
        if not may_read:
            return None, {"ok": False, "error": "this connection may not name files; send the message"}
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ProtocolError("scan request with a path that is not absolute")
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            return None, {"ok": False, "error": f"cannot read: {getattr(exc, 'strerror', None) or exc}"}
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                return None, {"ok": False, "error": "not a regular file; send the message"}
            if identity != (None, None) and identity != (info.st_dev, info.st_ino):
                return None, {"ok": False, "error": "the daemon sees another file at that path; send the message"}
            if info.st_size > self.server.max_message_bytes:
                return None, {"ok": False, "error": "over [daemon] max_message_bytes", "too_large": True}
            with open(descriptor, "rb", closefd=False) as handle:
                return handle.read(self.server.max_message_bytes + 1), {}
        except OSError as exc:
            return None, {"ok": False, "error": f"cannot read: {exc.strerror or exc}"}
        finally:
            os.close(descriptor)


FLUSH_EVERY = 8  # replies held back while more requests are already waiting (fewer wake-ups)
SHARE_AFTER_S = 1.0  # with another client waiting for a worker: how long a connection keeps one (see _Wire)


class _Wire:
    """One connection's frames, read through a buffer of our own so the worker knows when
    the client has nothing more waiting: replies are sent in batches, at the latest
    before the worker would wait for input (so a client never waits on a held reply).

    A worker serves one connection at a time, so how long it waits on one is what bounds
    how long every other client waits for it. Two limits:

    - ``idle_timeout_s`` (``[daemon] idle_timeout_s``) is a deadline for each request: from
      when the worker starts waiting for it until its header and message are in, and for
      the replies to be taken. A client trickling a byte now and then no longer keeps it.
    - While another client is waiting for a worker (the shared listening socket has a
      connection nobody accepted), a connection that has sent or taken nothing for
      ``SHARE_AFTER_S``, or that has had its worker that long and is between requests,
      is closed. An idle or stopped client, or a ``check -j N`` of a large folder, thus
      cannot hold every worker while the milter's and the relay's mail waits; the client
      whose connection closed opens another and sends again what was not answered
      (``pipeline``, ``client``), in the listening socket's queue behind the others.
    """

    def __init__(self, sock: socket.socket, listener: socket.socket, idle_timeout_s: float) -> None:
        sock.setblocking(False)  # every wait is _wait's, with its deadline
        self.sock = sock
        self.listener = listener
        self.idle_timeout_s = idle_timeout_s
        self.accepted = self.heard = time.monotonic()
        self.deadline = self.accepted + idle_timeout_s
        self.between = True  # waiting for a request's first byte (not for the rest of one)
        self.inbuf = bytearray()
        self.out = bytearray()
        self.held = 0

    def _others_waiting(self) -> bool:
        """Whether a client is waiting in the listening socket's queue (no worker is free)."""
        waiting = select.poll()
        waiting.register(self.listener, select.POLLIN)
        return bool(waiting.poll(0))

    def turn_is_over(self) -> bool:
        """Between two requests: whether this connection has had its worker long enough
        while another client waits for one."""
        return time.monotonic() - self.accepted >= SHARE_AFTER_S and self._others_waiting()

    def _wait(self, events: int) -> None:
        """Until the connection is ready for ``events`` (``select.POLLIN``/``POLLOUT``);
        ProtocolError, which closes it, past the request's deadline or when it must give
        its worker to a waiting client (class docstring)."""
        between = self.between and events == select.POLLIN
        while True:
            now = time.monotonic()
            if now >= self.deadline:
                raise ProtocolError(f"nothing complete within [daemon] idle_timeout_s ({self.idle_timeout_s:g} s)")
            share_at = (self.accepted if between else self.heard) + SHARE_AFTER_S
            poller = select.poll()
            poller.register(self.sock, events)
            if now >= share_at:  # may be asked to yield: wake also when a client starts waiting
                if self._others_waiting():
                    raise ProtocolError("closed for a client waiting for a worker")
                poller.register(self.listener, select.POLLIN)
                timeout = self.deadline - now
            else:
                timeout = min(self.deadline, share_at) - now
            ready = poller.poll(max(timeout, 0.0) * 1000 + 1)
            if any(fd == self.sock.fileno() for fd, _ in ready):
                return

    def _fill(self) -> bool:
        if self.out:
            self.flush()  # about to wait: the client must have every answer first
        while True:
            try:
                chunk = self.sock.recv(256 * 1024)
                break
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLIN)
        if not chunk:
            return False
        self.heard = time.monotonic()
        self.between = False
        self.inbuf += chunk
        return True

    def frame(self) -> dict[str, Any] | None:
        """The next JSON frame, or None at a clean end of the connection."""
        self.deadline = time.monotonic() + self.idle_timeout_s  # for this request, its message and the replies before it
        buf = self.inbuf
        self.between = not buf
        while len(buf) < HEADER.size:
            if not self._fill():
                if buf:
                    raise ProtocolError("connection closed in the middle of a frame")
                return None
        (length,) = HEADER.unpack_from(buf)
        if length > MAX_HEADER_BYTES:
            raise ProtocolError(f"frame of {length} bytes is over the limit of {MAX_HEADER_BYTES}")
        end = HEADER.size + length
        while len(buf) < end:
            if not self._fill():
                raise ProtocolError("connection closed in the middle of a frame")
        data = bytes(buf[HEADER.size:end])
        del buf[:end]
        return decode(data)

    def body(self, size: int) -> bytes:
        buf = self.inbuf
        while len(buf) < size:
            if not self._fill():
                raise ProtocolError("connection closed in the middle of a message")
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def reply(self, data: bytes) -> None:
        self.out += data
        self.held += 1
        if self.held >= FLUSH_EVERY or len(self.out) >= 256 * 1024:
            self.flush()

    def flush(self) -> None:
        """Every held reply sent (a client that stops reading is a client that stops sending)."""
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLOUT)
                continue
            del self.out[:sent]
            self.heard = time.monotonic()
        self.held = 0


def _peer_may_read(conn: socket.socket) -> bool:
    """Whether the client may have the daemon read files it names: only a client of the
    daemon's own user (or root), who could read them anyway (Linux's SO_PEERCRED; any
    other client sends the message's bytes)."""
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:
        return False
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
    except OSError:
        return False
    return uid == os.geteuid() or uid == 0


class _BadEnvelope(Exception):
    """A scan request's envelope is not the shape ``Envelope.to_dict`` gives."""


_ENVELOPE_TEXT = ("mail_from", "client_address", "helo", "direction")


def _envelope(value: Any) -> Envelope | None:
    """The request's envelope: None for none; _BadEnvelope for any other shape than
    ``Envelope.to_dict``'s (strings or null, and a list of strings for ``rcpt_tos``), rather than
    a guess: a number where a list belongs used to end the worker. Strings must be
    encodable as UTF-8 (JSON allows lone surrogates; the verdict could not be sent)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _BadEnvelope("expected an object or null")
    fields: dict[str, Any] = {}
    for key in _ENVELOPE_TEXT:
        fields[key] = _text(value.get(key), key)
    rcpt_tos = value.get("rcpt_tos") or []
    if not isinstance(rcpt_tos, list):
        raise _BadEnvelope("rcpt_tos: expected a list of strings")
    fields["rcpt_tos"] = tuple(_text(r, "rcpt_tos") for r in rcpt_tos)
    return Envelope(**fields)


def _text(value: Any, key: str) -> str:
    if value is None:  # absent, or null: empty, as Envelope's default
        return ""
    if not isinstance(value, str):
        raise _BadEnvelope(f"{key}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _BadEnvelope(f"{key}: not valid UTF-8") from None
    return value
