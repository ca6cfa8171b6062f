"""`mailguard milter`: the scanner behind the milter protocol, for Postfix and Sendmail.

The MTA keeps the queue and the SMTP conversation; we answer at end of message with header
edits (verdict headers, subject tag), a body replacement (banner), or a final reply:
continue, discard (after the message is safely in mailguard's quarantine), quarantine
(Postfix's hold queue), 550 5.7.1, or 451 4.7.1 when anything went wrong, so the sender
retries and nothing is lost.

One asyncio task per MTA connection; scanning and quarantine writes run in a bounded
thread pool so a slow message never stalls the other connections.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from mailguard import milter_protocol as mp
from mailguard.config import Config, ConfigError, Option, load_config
from mailguard.logsetup import setup_logging, verdict_log_fields
from mailguard.milter_actions import (
    TEMPFAIL_REPLY,
    ReceivedMessage,
    allowed_replies,
    banner_body,
    header_edits,
    hold_reason,
    reject_reply,
)
from mailguard.model import Action, Envelope, Verdict

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

# What we ask the MTA to let us do. SETSYMLIST is not needed: Postfix sends the queue id
# ("i") at end of message by default (milter_end_of_data_macros).
WANTED_ACTIONS = mp.SMFIF_ADDHDRS | mp.SMFIF_CHGHDRS | mp.SMFIF_CHGBODY | mp.SMFIF_QUARANTINE
# Steps we do not need: skipping them saves packets.
SKIPPED_STEPS = mp.SMFIP_NOUNKNOWN | mp.SMFIP_NODATA
# Macros that describe the connection, kept across messages (others are per message).
CONNECTION_MACROS = frozenset(("j", "_", "client_addr", "client_name", "client_port", "daemon_name", "if_addr",
                               "if_name", "client_ptr", "client_connections", "tls_version", "cipher",
                               "cipher_bits", "cert_subject", "cert_issuer"))


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Listen:
    family: str  # "inet" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "Listen":
        kind, _, rest = text.partition(":")
        if kind == "unix" and rest:
            return cls("unix", path=rest)
        if kind in ("inet", "inet6"):
            if "@" in rest:  # Sendmail's spelling: inet:PORT@HOST
                port, _, host = rest.partition("@")
            else:
                host, _, port = rest.rpartition(":")
            host = host.strip("[]")
            if host and port.isdigit() and 0 <= int(port) < 65536:
                return cls("inet", host=host, port=int(port))
        raise ConfigError(
            f"[milter] listen: {text!r} is not \"inet:HOST:PORT\" or \"unix:/path\""
        )

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.family == "unix" else f"inet:{self.host}:{self.port}"


@dataclass(frozen=True)
class MilterSettings:
    listen: Listen
    socket_mode: int
    max_connections: int
    scan_workers: int
    max_message_size: int
    oversize: str
    quarantine: str
    idle_timeout: float
    scan_timeout: float
    progress_interval: float

    @classmethod
    def from_config(cls, config: Config) -> "MilterSettings":
        s = config.section("milter")
        try:
            mode = int(s["socket_mode"], 8)
        except ValueError:
            raise ConfigError(f"[milter] socket_mode: {s['socket_mode']!r} is not an octal mode such as \"0660\"") \
                from None
        return cls(
            listen=Listen.parse(s["listen"]),
            socket_mode=mode,
            max_connections=s["max_connections"],
            scan_workers=s["scan_workers"],
            max_message_size=s["max_message_size"],
            oversize=s["oversize"],
            quarantine=s["quarantine"],
            idle_timeout=s["idle_timeout"],
            scan_timeout=s["scan_timeout"],
            progress_interval=s["progress_interval"],
        )


def oversize_reply(settings: MilterSettings) -> str:
    if settings.oversize == "tempfail":
        return f"452 4.3.4 Message too big to be checked (limit {settings.max_message_size} bytes)"
    return f"552 5.3.4 Message too big to be checked (limit {settings.max_message_size} bytes)"


# ---------------------------------------------------------------------- the engine


@dataclass
class Engine:
    """What every session shares: the current scanner (swapped whole on reload), the
    quarantine, and the worker threads. Scanners are built once and are thread-safe."""

    config: Config
    settings: MilterSettings
    scanner: Any
    quarantine: Any = None
    add_banner: Callable[[bytes, Verdict], bytes] | None = None
    executor: concurrent.futures.ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.settings.scan_workers, thread_name_prefix="mailguard-scan"
        )

    @classmethod
    def build(cls, config: Config) -> "Engine":
        """Scanner, banner and (for quarantine = "store") the quarantine, opened now so a
        bad key or folder stops start-up instead of failing mail later."""
        from mailguard.scanner import Scanner

        settings = MilterSettings.from_config(config)
        quarantine = None
        if settings.quarantine == "store":
            from mailguard.quarantine import open_quarantine

            quarantine = open_quarantine(config)
        return cls(config, settings, Scanner(config), quarantine, _load_banner())

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def reload(self, path: Path) -> None:
        """Re-read the configuration and build a new scanner off the event loop; the old
        one finishes the scans it has. Listener settings need a restart."""
        from mailguard.scanner import Scanner

        try:
            config = await asyncio.get_running_loop().run_in_executor(None, load_config, path)
            scanner = await asyncio.get_running_loop().run_in_executor(None, Scanner, config)
        except Exception as exc:  # keep serving with the old rules
            log.error("reload failed, keeping the previous configuration: %s", exc)
            return
        self.config, self.scanner = config, scanner
        log.info("configuration reloaded from %s", path)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.quarantine is not None:
            with contextlib.suppress(Exception):
                self.quarantine.close()


def _load_banner() -> Callable[[bytes, Verdict], bytes] | None:
    try:
        from mailguard.banner import add_banner
    except ImportError:
        return None
    return add_banner


# ---------------------------------------------------------------------- one connection


class CloseConnection(Exception):
    """The MTA said quit, or the connection must end."""


@dataclass
class Session:
    """One MTA connection: negotiated options, the SMTP session's facts, and the message
    being received. Commands are handled in order; replies are written as we go."""

    engine: Engine
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: int = 0
    actions: int = 0  # what the MTA allowed us to do (SMFIF_*)
    deciding: bool = False  # between end of message and our answer: let it finish on shutdown
    macros: dict[str, str] = field(default_factory=dict)
    client_address: str = ""
    helo: str = ""
    mail_from: str = ""
    rcpt_tos: list[str] = field(default_factory=list)
    message: ReceivedMessage = field(default_factory=ReceivedMessage)
    refused: bool = False  # an oversize reply was sent; ignore the rest of this message

    async def run(self) -> None:
        try:
            while True:
                command, data = await self._read_packet()
                await self._dispatch(command, data)
                await self.writer.drain()
        except CloseConnection:
            pass
        except mp.ProtocolError as exc:
            log.warning("milter protocol error, closing the connection: %s", exc)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.warning("connection closed in the middle of a packet")
        except TimeoutError:
            log.info("no command from the MTA for %.0f s, closing", self.engine.settings.idle_timeout)
        except ConnectionError:
            log.info("MTA connection lost")
        except Exception:  # a bug here must cost one connection (the MTA tempfails), not the server
            log.exception("internal error; connection closed, the MTA applies milter_default_action")

    async def _read_packet(self) -> tuple[bytes, bytes]:
        async with asyncio.timeout(self.engine.settings.idle_timeout):
            length = mp.packet_length(await self.reader.readexactly(4))
            body = await self.reader.readexactly(length)
        return body[:1], body[1:]

    def _send(self, *packets: bytes) -> None:
        for packet in packets:
            self.writer.write(packet)

    def _continue(self, command: bytes) -> None:
        flag = mp.NO_REPLY_FLAG.get(command, 0)
        if not self.protocol & flag:
            self._send(mp.reply(mp.SMFIR_CONTINUE))

    def _reset_message(self) -> None:
        """A new transaction starts (MAIL): forget the previous envelope and message. The
        macros stay: the MTA sends those of a stage just before the stage's command."""
        self.mail_from, self.rcpt_tos = "", []
        self.message, self.refused = ReceivedMessage(), False

    def _end_transaction(self) -> None:
        """After end of message or abort: also drop the per-message macros (queue id...)."""
        self._reset_message()
        for name in [n for n in self.macros if n not in CONNECTION_MACROS]:
            del self.macros[name]

    async def _dispatch(self, command: bytes, data: bytes) -> None:
        if command == mp.SMFIC_OPTNEG:
            self._negotiate(mp.decode_optneg(data))
        elif command == mp.SMFIC_MACRO:
            _, values = mp.decode_macros(data)
            self.macros.update(values)
        elif command == mp.SMFIC_CONNECT:
            info = mp.decode_connect(data)
            self.client_address = info.address
            self._continue(command)
        elif command == mp.SMFIC_HELO:
            self.helo = (mp.decode_strings(data, "helo") or [""])[0]
            self._continue(command)
        elif command == mp.SMFIC_MAIL:
            self._reset_message()
            self.mail_from = mp.envelope_address((mp.decode_strings(data, "mail") or [""])[0])
            self._continue(command)
        elif command == mp.SMFIC_RCPT:
            self.rcpt_tos.append(mp.envelope_address((mp.decode_strings(data, "rcpt") or [""])[0]))
            self._continue(command)
        elif command == mp.SMFIC_HEADER:
            name, value = mp.decode_header(data)
            if not self.refused:
                self.message.add_header(name, value)
            self._after_content(command)
        elif command == mp.SMFIC_BODY:
            if not self.refused:
                self.message.add_body(data)
            self._after_content(command)
        elif command == mp.SMFIC_EOH:
            self._after_content(command)
        elif command == mp.SMFIC_DATA:
            self._continue(command)
        elif command == mp.SMFIC_UNKNOWN:
            mp.decode_strings(data, "unknown")  # checked for form; nothing to do with it
            self._continue(command)
        elif command == mp.SMFIC_BODYEOB:
            if data and not self.refused:
                self.message.add_body(data)
            await self._end_of_message()
        elif command == mp.SMFIC_ABORT:
            self._end_transaction()
        elif command == mp.SMFIC_QUIT:
            raise CloseConnection
        elif command == mp.SMFIC_QUIT_NC:
            self._end_transaction()
            self.macros.clear()
            self.client_address = self.helo = ""
        else:
            raise mp.ProtocolError(f"unknown command {command!r}")

    def _negotiate(self, offer: mp.OptNeg) -> None:
        if offer.version < 2:
            raise mp.ProtocolError(f"milter protocol version {offer.version} is too old")
        self.actions = WANTED_ACTIONS & offer.actions
        missing = WANTED_ACTIONS & ~self.actions
        if missing:
            log.warning("the MTA does not allow every change we make (missing actions 0x%x); those are left out",
                        missing)
        self.protocol = SKIPPED_STEPS & offer.protocol
        self._send(mp.OptNeg(min(offer.version, mp.VERSION), self.actions, self.protocol).encode())

    def _after_content(self, command: bytes) -> None:
        """Continue, or refuse a message over the size bound as soon as it is known."""
        if self.refused or self.message.size <= self.engine.settings.max_message_size:
            self._continue(command)
            return
        if self.protocol & mp.NO_REPLY_FLAG.get(command, 0):
            return  # no reply allowed here; refused at end of message
        self.refused = True
        self.message = ReceivedMessage()  # free the memory now
        log.info("message over max_message_size refused%s", self._queue_id_text())
        self._send(mp.reply_code(oversize_reply(self.engine.settings)))

    def _queue_id_text(self) -> str:
        return f" (queue id {self.macros['i']})" if self.macros.get("i") else ""

    async def _end_of_message(self) -> None:
        try:
            if self.refused or self.message.size > self.engine.settings.max_message_size:
                self._send(mp.reply_code(oversize_reply(self.engine.settings)))
                return
            self.deciding = True
            await self._with_progress(self._decide())
            await self.writer.drain()
        finally:
            self.deciding = False
            self._end_transaction()

    async def _with_progress(self, work: Awaitable[list[bytes]]) -> None:
        """Run ``work``, sending SMFIR_PROGRESS while it lasts and 451 if it overruns."""
        task = asyncio.ensure_future(work)
        settings = self.engine.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.scan_timeout
        try:
            while not task.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.error("scan took longer than %.0f s; answered 451%s", settings.scan_timeout,
                              self._queue_id_text())
                    self._send(mp.reply_code(TEMPFAIL_REPLY))
                    return
                done, _ = await asyncio.wait({task}, timeout=min(settings.progress_interval, remaining))
                if not done and loop.time() < deadline:
                    self._send(mp.reply(mp.SMFIR_PROGRESS))
                    await self.writer.drain()
        finally:
            if not task.done():
                task.cancel()  # the worker thread finishes on its own; its result is dropped
        try:
            replies = task.result()
        except Exception:
            log.exception("scan failed; answered 451%s", self._queue_id_text())
            replies = [mp.reply_code(TEMPFAIL_REPLY)]
        self._send(*replies)

    async def _decide(self) -> list[bytes]:
        """Scan, act, log one line, and return the replies for end of message."""
        engine, message = self.engine, self.message
        scanner = engine.scanner  # one scanner for the whole message, even if a reload swaps it
        policy = scanner.config.section("policy")
        raw = message.raw()
        envelope = Envelope(self.mail_from, tuple(self.rcpt_tos), self.client_address, self.helo)
        verdict: Verdict = await engine.run(scanner.scan, raw, envelope)
        replies: list[bytes]
        if verdict.tempfail:
            outcome, replies = "tempfail", [mp.reply_code(TEMPFAIL_REPLY)]
        elif verdict.action == Action.REJECT:
            outcome, replies = "reject", [mp.reply_code(reject_reply(verdict))]
        elif verdict.action == Action.QUARANTINE and engine.settings.quarantine == "store":
            outcome, replies = await self._store(raw, envelope, verdict)
        elif verdict.action == Action.QUARANTINE and not self.actions & mp.SMFIF_QUARANTINE:
            log.error("quarantine = \"hold\" but the MTA does not allow quarantine; answered 451")
            outcome, replies = "tempfail", [mp.reply_code(TEMPFAIL_REPLY)]
        else:
            replies = header_edits(verdict, message, policy["subject_tag"])
            if verdict.action == Action.QUARANTINE:
                outcome = "hold"
                replies.append(mp.quarantine(hold_reason(verdict)))
            else:
                outcome = str(verdict.action)
                if verdict.action == Action.TAG and policy["banner"] and self.actions & mp.SMFIF_CHGBODY:
                    body = await engine.run(banner_body, raw, verdict, engine.add_banner)
                    if body is not None:
                        replies.extend(mp.replace_body(body))
            replies = allowed_replies(replies, self.actions)
            replies.append(mp.reply(mp.SMFIR_CONTINUE))
        self._log(verdict, outcome)
        return replies

    async def _store(self, raw: bytes, envelope: Envelope, verdict: Verdict) -> tuple[str, list[bytes]]:
        """Discard only once the message is durably in the quarantine; otherwise 451."""
        try:
            entry_id = await self.engine.run(self.engine.quarantine.store, raw, envelope, verdict)
        except Exception as exc:
            log.error("quarantine store failed, answered 451 (the sender retries): %s", exc)
            return "tempfail", [mp.reply_code(TEMPFAIL_REPLY)]
        log.info("quarantined as %s%s", entry_id, self._queue_id_text())
        return "quarantine", [mp.reply(mp.SMFIR_DISCARD)]

    def _log(self, verdict: Verdict, outcome: str) -> None:
        fields = verdict_log_fields(
            verdict, self.engine.config.section("logging"), self.message.subject() or "",
            self.mail_from, tuple(self.rcpt_tos),
        )
        fields["queue_id"] = self.macros.get("i", "")
        fields["milter"] = outcome
        log.info("message scanned", extra={"fields": fields})


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
