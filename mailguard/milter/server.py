"""`mailguard milter`: the scanner behind the milter protocol, for Postfix and Sendmail.

The MTA keeps the queue and the SMTP conversation; we answer at end of message with header
edits (verdict headers, subject tag), a body replacement (banner), or a final reply:
continue, discard (after the message is safely in mailguard's quarantine), quarantine
(Postfix's hold queue), 550 5.7.1, or 451 4.7.1 when anything went wrong, so the sender
retries and nothing is lost.

One asyncio task per MTA connection (``session``); scanning and quarantine writes run in a
bounded thread pool (``engine``) so a slow message never stalls the other connections. The
wire format is in ``protocol``, the verdict-to-replies mapping in ``actions``, the keys in
``schema`` and the command line in ``cli``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from mailguard.config import Config, ConfigError, load_config
from mailguard.milter.engine import Engine, Listen, MilterSettings
from mailguard.milter.session import Session

__all__ = ["MilterServer", "serve"]

log = logging.getLogger("mailguard.milter")

# ---------------------------------------------------------------------- the server


@dataclass
class MilterServer:
    """The listening socket and its sessions. ``start`` binds; ``close`` stops accepting,
    lets a session finish the message it is deciding for ``grace`` seconds, then ends it."""

    engine: Engine
    server: asyncio.Server | None = None
    sessions: dict[asyncio.Task[None], Session] = field(default_factory=dict)

    async def start(self) -> None:
        listen = self.engine.settings.listen
        if listen.family == "unix":
            _remove_stale_socket(Path(listen.path))
            self.server = await asyncio.start_unix_server(self._serve, path=listen.path)
            os.chmod(listen.path, self.engine.settings.socket_mode)
        else:
            self.server = await asyncio.start_server(self._serve, listen.host, listen.port, reuse_address=True)
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.sessions) >= self.engine.settings.max_connections:
            log.warning("over max_connections (%d); connection closed, the MTA applies its default action",
                        self.engine.settings.max_connections)
            writer.close()
            return
        session = Session(self.engine, reader, writer)
        self.sessions[task] = session
        try:
            await session.run()
        finally:
            self.sessions.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self, grace: float = 10.0) -> None:
        """Connections waiting for the MTA end at once (the MTA retries or tempfails);
        a message being decided (scanned, stored) gets ``grace`` seconds to be answered,
        so a stored message is not also retried by the sender."""
        if self.server is not None:
            self.server.close()
        for task, session in list(self.sessions.items()):
            if not session.deciding:
                task.cancel()
        if self.sessions:
            _, pending = await asyncio.wait(set(self.sessions), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self.server is not None:
            await self.server.wait_closed()
        listen = self.engine.settings.listen
        if listen.family == "unix":
            _remove_stale_socket(Path(listen.path))


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
