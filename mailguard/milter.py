"""`mailguard milter`: the scanner behind the milter protocol, for Postfix and Sendmail.

The MTA keeps the queue and the SMTP conversation; we answer at end of message with header
edits (verdict headers, subject tag), a body replacement (banner), or a final reply:
continue, discard (after the message is safely in mailguard's quarantine), quarantine
(Postfix's hold queue), 550 5.7.1, or 451 4.7.1 when anything went wrong, so the sender
retries and nothing is lost.

One asyncio task per MTA connection (milter_session); scanning and quarantine writes run in
a bounded thread pool (milter_engine) so a slow message never stalls the other connections.
The wire format is in milter_protocol, the verdict-to-replies mapping in milter_actions.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from mailguard.config import Config, ConfigError, Option, load_config
from mailguard.logsetup import setup_logging
from mailguard.milter_engine import Engine, Listen, MilterSettings
from mailguard.milter_session import Session

__all__ = ["CONFIG_SCHEMA", "Engine", "Listen", "MilterServer", "MilterSettings", "Session", "cli_main", "serve"]

log = logging.getLogger("mailguard.milter")

CONFIG_SCHEMA: Mapping[str, Option] = {
    "listen": Option(
        "inet:127.0.0.1:8894", "str",
        "Where the MTA connects: \"inet:HOST:PORT\" (Postfix: smtpd_milters = inet:HOST:PORT) or "
        "\"unix:/path/to/socket\" (Postfix: smtpd_milters = unix:/path; a chrooted smtpd sees paths "
        "relative to its chroot). Keep inet on loopback: the protocol has no authentication.",
    ),
    "socket_mode": Option(
        "0660", "str",
        "Permissions of a unix socket, in octal; the MTA's user (postfix) must be able to write to it.",
    ),
    "max_connections": Option(
        64, "int",
        "MTA connections served at once (Postfix opens one per SMTP session). Connections beyond this "
        "are closed at once; the MTA then applies milter_default_action (tempfail: the sender retries).",
        minimum=1,
    ),
    "scan_workers": Option(
        2, "int", "Messages scanned at the same time (threads); more wait their turn.", minimum=1
    ),
    "max_message_size": Option(
        26214400, "int",
        "Largest message (headers and body, bytes) the milter will take; keep Postfix's "
        "message_size_limit at or below it. A larger message is refused as oversize says.",
        minimum=1024,
    ),
    "oversize": Option(
        "reject", "str",
        "Answer to a message over max_message_size: reject (552 5.3.4: the sender gets a bounce at once "
        "saying it is too big, instead of retrying for days only to bounce anyway) or tempfail (452 4.3.4, "
        "for an operator who is about to raise the limit). It is never passed unscanned.",
        choices=("reject", "tempfail"),
    ),
    "quarantine": Option(
        "store", "str",
        "Where quarantined messages go: store (kept encrypted in mailguard's quarantine, see [quarantine], "
        "then discarded by the MTA; if storing fails the sender gets 451 and retries) or hold (Postfix's "
        "hold queue, tagged; release with 'postsuper -H QUEUEID').",
        choices=("store", "hold"),
    ),
    "idle_timeout": Option(
        900.0, "float",
        "Seconds to wait for the MTA's next command before closing the connection; longer than "
        "Postfix's smtpd_timeout, since the milter connection waits while the SMTP client is slow.",
        minimum=1,
    ),
    "scan_timeout": Option(
        120.0, "float",
        "Seconds one message may take to scan (and store) before the answer is 451 (the sender retries). "
        "Keep it below Postfix's milter_content_timeout (300 s by default).",
        minimum=1,
    ),
    "progress_interval": Option(
        10.0, "float",
        "While a message is being scanned, tell the MTA every this many seconds that work is going on "
        "(SMFIR_PROGRESS), so its own timeouts do not expire.",
        minimum=0.1,
    ),
}


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
    """Run until SIGTERM or SIGINT; SIGHUP reloads the configuration (new scanner)."""
    server = MilterServer(engine)
    await server.start()
    if ready is not None:
        ready(server)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config_path is not None:
        def on_hup() -> None:
            task = loop.create_task(engine.reload(config_path))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await server.close()


def cli_main(argv: list[str], prog: str = "mailguard milter") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run the milter for Postfix or Sendmail.")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: built-in settings)")
    parser.add_argument("--listen", metavar="SPEC", help="override [milter] listen, e.g. inet:127.0.0.1:8894")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else Config.default()
        if args.listen:
            data = config.to_dict()
            data["milter"]["listen"] = args.listen
            config = Config.from_dict(data, config.source)
        setup_logging(config.section("logging"), config.resolve_path)
        engine = Engine.build(config)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. the quarantine cannot be opened: say so, do not start
        print(f"{prog}: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(engine, Path(args.config) if args.config else None))
    except OSError as exc:
        print(f"{prog}: cannot listen on {engine.settings.listen}: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    return 0
