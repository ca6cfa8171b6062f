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
import signal
import socket
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailguard.daemon.protocol import HEADER, MAX_HEADER_BYTES, ProtocolError, decode, frame
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
                conn.settimeout(self.server.idle_timeout_s)
                self._connection(conn)
            if limit and self.served >= limit:
                log.info("worker pid %d served %d messages; replaced by a fresh fork", os.getpid(), self.served)
                return 0

    def _connection(self, conn: socket.socket) -> None:
        wire = _Wire(conn)
        may_read = _peer_may_read(conn)
        try:
            while True:
                request = wire.frame()
                if request is None:
                    return
                wire.reply(self._answer(request, wire, may_read))
        except (ProtocolError, OSError, socket.timeout) as exc:
            log.debug("connection closed: %s", exc)
        finally:
            try:
                wire.flush()  # replies already computed still reach the client
            except OSError:
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
            raw, refusal = self._read_path(path, may_read)
            if raw is None:
                return frame(refusal)
        else:
            size = request.get("size")
            if not isinstance(size, int) or size < 0:
                raise ProtocolError("scan request without a valid size")
            if size > self.server.max_message_bytes:
                raise ProtocolError(f"message of {size} bytes is over [daemon] max_message_bytes")
            raw = wire.body(size)
        if "config" in request and request["config"] != self.server.fingerprint:
            return frame({"ok": False, "error": f"the daemon runs another configuration ({self.server.fingerprint})"})
        envelope = _envelope(request.get("envelope"))
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

    def _read_path(self, path: Any, may_read: bool) -> tuple[bytes | None, dict[str, Any]]:
        """The message a same-user client named by path (it could read it itself, so the
        daemon reading it grants nothing); a refusal the client answers by sending the bytes."""
        if not may_read:
            return None, {"ok": False, "error": "this connection may not name files; send the message"}
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ProtocolError("scan request with a path that is not absolute")
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self.server.max_message_bytes:
                    return None, {"ok": False, "error": "over [daemon] max_message_bytes", "too_large": True}
                return handle.read(self.server.max_message_bytes + 1), {}
        except OSError as exc:
            return None, {"ok": False, "error": f"cannot read: {exc.strerror or exc}"}


FLUSH_EVERY = 8  # replies held back while more requests are already waiting (fewer wake-ups)


class _Wire:
    """One connection's frames, read through a buffer of our own so the worker knows when
    the client has nothing more waiting: replies are sent in batches, at the latest
    before the worker would wait for input (so a client never waits on a held reply)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.out = bytearray()
        self.held = 0

    def _fill(self) -> bool:
        if self.out:
            self.flush()  # about to wait: the client must have every answer first
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            return False
        self.inbuf += chunk
        return True

    def frame(self) -> dict[str, Any] | None:
        """The next JSON frame, or None at a clean end of the connection."""
        buf = self.inbuf
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
        if self.out:
            self.sock.sendall(self.out)
        self.out.clear()
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


def _envelope(value: Any) -> Envelope | None:
    if not isinstance(value, dict):
        return None
    return Envelope(
        mail_from=str(value.get("mail_from", "")),
        rcpt_tos=tuple(str(r) for r in value.get("rcpt_tos", ()) or ()),
        client_address=str(value.get("client_address", "")),
        helo=str(value.get("helo", "")),
        direction=str(value.get("direction", "")),  # outbound mail is checked for patient data
    )
