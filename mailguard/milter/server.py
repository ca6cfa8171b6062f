"""`mailguard milter`: the scanner behind the milter protocol, for Postfix and Sendmail.

The MTA keeps the queue and the SMTP conversation; we answer at end of message with header
edits (verdict headers, subject tag), a body replacement (banner), or a final reply:
continue, discard (after the message is safely in mailguard's quarantine), quarantine
(Postfix's hold queue), 550 5.7.1, or 451 4.7.1 when anything went wrong, so the sender
retries and nothing is lost.

One asyncio protocol object per MTA connection (``session``); scanning and quarantine writes run in a
bounded thread pool (``engine``) so a slow message never stalls the other connections. The
wire format is in ``protocol``, the verdict-to-replies mapping in ``actions``, the keys in
``schema`` and the command line in ``cli``.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from mailguard.config import Config, ConfigError, load_config
from mailguard.milter.engine import Engine, Listen, MilterSettings
from mailguard.milter.session import Session
from mailguard.ops.unixsocket import bind_unix_socket

__all__ = ["MilterServer", "serve"]

log = logging.getLogger("mailguard.milter")

# ---------------------------------------------------------------------- the server


@dataclass
class MilterServer:
    """The listening socket and its sessions. ``start`` binds; ``close`` stops accepting,
    lets a session finish the message it is deciding for ``grace`` seconds, then ends it."""

    engine: Engine
    server: asyncio.Server | None = None
    sessions: set[Session] = field(default_factory=set)

    def _session(self) -> Session:
        """A new MTA connection (each Session registers itself in ``sessions`` once made)."""
        return Session(self.engine, self.sessions)

    async def start(self) -> None:
        listen = self.engine.settings.listen
        loop = asyncio.get_running_loop()
        if listen.family == "unix":
            sock = bind_milter_socket(Path(listen.path), self.engine.settings.socket_mode)
            try:
                self.server = await loop.create_unix_server(self._session, sock=sock)
            except BaseException:
                sock.close()
                raise
        else:
            self.server = await loop.create_server(self._session, listen.host, listen.port, reuse_address=True)
        log.info("milter listening on %s", self.address)

    @property
    def address(self) -> str:
        listen = self.engine.settings.listen
        if listen.family == "inet" and self.server is not None and self.server.sockets:
            host, port = self.server.sockets[0].getsockname()[:2]
            return f"inet:{host}:{port}"
        return str(listen)

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self, grace: float = 10.0) -> None:
        """Connections waiting for the MTA end at once (the MTA retries or tempfails);
        a message being decided (scanned, stored) gets ``grace`` seconds to be answered,
        so a stored message is not also retried by the sender."""
        if self.server is not None:
            self.server.close()
        deciding = set()
        for session in list(self.sessions):
            if session.decision is not None:
                deciding.add(session.decision)
            elif session.transport is not None:
                session.transport.close()
        if deciding:
            _, pending = await asyncio.wait(deciding, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()
        listen = self.engine.settings.listen
        if listen.family == "unix":
            _remove_stale_socket(Path(listen.path))


def bind_milter_socket(path: Path, mode: int) -> socket.socket:
    """The milter's listening unix socket (``mailguard.ops.unixsocket``), non-blocking for
    asyncio. A missing folder is named, not created: Postfix's user must be able to reach
    it, which only the operator can arrange."""
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(path.parent))
    sock = bind_unix_socket(path, mode, listener="a milter (or another program)", setting="[milter] listen path")
    sock.setblocking(False)
    return sock


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a previous run would stop the bind; anything else is kept."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()


async def serve(engine: Engine, config_path: Path | None, ready: Callable[[MilterServer], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the configuration (new scanner).

    The signal handlers are in place before the port opens and readiness is announced: a
    `systemctl reload` right after the start must reload, not end the process (SIGHUP's
    default action)."""
    server = MilterServer(engine)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        if config_path is None:
            log.warning("SIGHUP: no configuration file to reload (started without --config)")
            return
        task = loop.create_task(engine.reload(config_path))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    started = False
    try:
        await server.start()
        started = True
        if ready is not None:
            ready(server)
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if started:
            await server.close()
