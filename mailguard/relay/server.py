"""The relay's listening server and its life cycle: start, reload (SIGHUP), drain (SIGTERM).

One ``RelayServer`` owns the listening socket, the scanning pool, the quarantine and the
current ``RelayState``. A reload builds a new state (configuration, compiled rules, TLS
certificate) off the event loop and swaps one reference: open sessions keep going and use
the new rules from their next message on. A drain stops listening, lets every message in
transfer finish, says goodbye (421) to idle clients, and returns when no session is left.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from mailguard.config import Config, ConfigError, load_config
from mailguard.relay.handler import RelayHandler, RelaySMTP, RelayState, SessionSet, build_state
from mailguard.relay.outbound_handler import handler_for
from mailguard.scanner import Scanner

log = logging.getLogger("mailguard.relay")
WORKER_START_TIMEOUT = 60.0  # seconds a new worker process may take to compile its rules


class _Refuse(asyncio.Protocol):
    """Answers one line and hangs up: for connections over the limit or while saturated."""

    def __init__(self, line: str) -> None:
        self.line = line.encode("ascii") + b"\r\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.line)
        transport.close()


class RelayServer:
    """The relay. ``quarantine`` is anything with ``store(raw, envelope, verdict)``; None
    means held messages get 451 (the relay still never loses one)."""

    def __init__(self, config: Config, *, quarantine: Any = None, scanner: Scanner | None = None) -> None:
        self.state: RelayState = build_state(config, scanner)
        self.quarantine = quarantine
        self.draining = False
        self.sessions = SessionSet()
        self.handler = RelayHandler(self)
        self.outbound_handler = handler_for(self, self.state)
        self._server: asyncio.Server | None = None
        self._outbound_server: asyncio.Server | None = None
        self._reload_lock = asyncio.Lock()

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when configured with port 0)."""
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def outbound_address(self) -> tuple[str, int]:
        """Where the outbound listener listens ([outbound] listen)."""
        assert self._outbound_server is not None and self._outbound_server.sockets
        host, port = self._outbound_server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        settings = self.state.settings
        loop = asyncio.get_running_loop()
        # Workers compile their rules first, so the first senders are not deferred for it.
        ready = await loop.run_in_executor(None, self.state.pool.wait_ready, WORKER_START_TIMEOUT)
        failure = self.state.pool.start_failure()
        if failure is not None:  # not READY and answering 451 to everyone: say so and stop
            raise WorkersFailed(
                f"[relay] pool = \"{self.state.pool.kind}\": no scanning worker could start: {failure}. "
                "The relay did not start listening. The workers are fresh processes with the same "
                "configuration: fix what fails there (a plug-in, a rules or cache file they cannot read, "
                "too little memory; their standard error says more) and start mailguard serve again, "
                "or scan in the relay's own process with [relay] pool = \"threads\"")
        if not ready:
            log.warning("scanning workers not ready yet; listening anyway (messages wait for them)")
        self._server = await loop.create_server(self._protocol, settings.listen_host, settings.listen_port,
                                                reuse_address=True)
        outbound = self.state.outbound
        if outbound is not None and self.outbound_handler is not None:
            handler = self.outbound_handler
            self._outbound_server = await loop.create_server(
                lambda: self._protocol(handler), outbound.listen_host, outbound.listen_port, reuse_address=True)
            host, port = self.outbound_address
            log.info("listening", extra={"fields": {
                "listener": "outbound", "host": host, "port": port,
                "next_hop": f"{outbound.next_hop.host}:{outbound.next_hop.port}"}})
        host, port = self.address
        log.info("listening", extra={"fields": {
            "host": host, "port": port, "downstream": f"{settings.downstream.host}:{settings.downstream.port}",
            "pool": self.state.pool.kind, "workers": self.state.pool.workers, "queue_limit": self.state.pool.limit,
            "tls": bool(self.state.tls_context)}})
        if not (settings.relay_domains or settings.trusted_networks):
            log.warning("relay_domains and trusted_networks are both empty: every recipient will be refused")

    def _protocol(self, handler: RelayHandler | None = None) -> asyncio.Protocol:
        state = self.state
        settings = state.settings
        if self.draining:
            return _Refuse("421 4.3.2 Service shutting down, please try again later")
        if len(self.sessions) >= settings.max_connections:
            log.warning("connection refused", extra={"fields": {"reason": "max_connections",
                                                                "limit": settings.max_connections}})
            return _Refuse("421 4.7.0 Too many connections, please try again later")
        if state.pool.saturated():
            log.warning("connection refused", extra={"fields": {"reason": "scan_queue_full"}})
            return _Refuse("421 4.3.2 Too busy, please try again later")
        outbound = handler is not None and handler is not self.handler
        return RelaySMTP(
            handler or self.handler,
            sessions=self.sessions,
            data_timeout=settings.data_timeout,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=settings.hostname,
            ident="ESMTP mailguard",
            tls_context=state.tls_context,
            require_starttls=settings.require_tls and not outbound,
            timeout=settings.command_timeout,
            loop=asyncio.get_running_loop(),
        )

    async def reload(self, config: Config) -> bool:
        """Swap in a new configuration and freshly compiled rules; keep the old on error."""
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            try:
                state = await loop.run_in_executor(None, build_state, config)
            except (ConfigError, OSError, ValueError) as exc:
                log.error("reload failed", extra={"fields": {"error": str(exc), "kept": "running configuration"}})
                return False
            await loop.run_in_executor(None, state.pool.wait_ready, WORKER_START_TIMEOUT)
            failure = state.pool.start_failure()
            if failure is not None:
                state.pool.close(wait=False)
                log.error("reload failed", extra={"fields": {"error": f"no scanning worker could start: {failure}",
                                                             "kept": "running configuration"}})
                return False
            restart = self.state.settings.restart_needed(state.settings)
            if _outbound_listen(self.state) != _outbound_listen(state):
                restart.append("outbound.listen")
            old, self.state = self.state, state
            old.pool.close(wait=False)  # its queued scans still finish and answer their senders
            await old.connections.close()  # kept downstream connections: the new state opens its own
            fields: dict[str, Any] = {"source": str(config.source or "defaults")}
            if restart:
                fields["restart_needed_for"] = restart
            log.info("reloaded", extra={"fields": fields})
            return True

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting, finish messages in transfer, close the rest; then free resources."""
        timeout = self.state.settings.shutdown_timeout if timeout is None else timeout
        self.draining = True
        for listening in (self._server, self._outbound_server):
            if listening is not None:
                listening.close()
        busy = [s for s in self.sessions.snapshot() if s.busy]
        log.info("draining", extra={"fields": {"sessions": len(self.sessions), "in_transfer": len(busy)}})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.sessions):
            self.sessions.changed.clear()
            for session in self.sessions.snapshot():
                if not session.busy:
                    session.goodbye()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:  # until a session ends (each one that finishes its message closes itself)
                await asyncio.wait_for(self.sessions.changed.wait(), remaining)
            except asyncio.TimeoutError:
                break
        for session in self.sessions.snapshot():
            if session.transport is not None:
                session.transport.close()
        for listening in (self._server, self._outbound_server):
            if listening is not None:
                await listening.wait_closed()
        await loop.run_in_executor(None, self.state.pool.close)
        await self.state.connections.close()
        log.info("stopped")


def _outbound_listen(state: RelayState) -> tuple[str, int] | None:
    return (state.outbound.listen_host, state.outbound.listen_port) if state.outbound else None


def _config_with_overrides(path: str | None, listen: str | None, downstream: str | None) -> Config:
    config = load_config(path) if path else Config.default()
    if not (listen or downstream):
        return config
    data = config.to_dict()
    if listen:
        data["relay"]["listen"] = listen
    if downstream:
        data["relay"]["downstream"] = downstream
    return Config.from_dict(data, config.source)


def run(path: str | None, *, listen: str | None = None, downstream: str | None = None) -> int:
    """``mailguard serve``: blocks until SIGTERM or SIGINT, then drains and returns 0.
    Every start-up failure is one line on standard error (and in the log) and exit 2."""
    from mailguard.ops.errors import report
    from mailguard.ops.startup import StartupFailed, opening_quarantine, prepare, start_metrics
    from mailguard.quarantine import open_quarantine

    prog = "mailguard serve"
    quarantine = None
    try:
        config = _config_with_overrides(path, listen, downstream)
        scanner = Scanner(config)
        prepare(config, "relay", scanner)
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs addresses at info
        from mailguard.logsetup import lean_log_records

        lean_log_records()
        with opening_quarantine():
            quarantine = open_quarantine(config)
        metrics = start_metrics(config, "relay")
        threads = config.section("relay")["pool"] == "threads"
        if threads:
            scanner.preload()  # no message waits for an import at the first PDF or signature
        server = RelayServer(config, quarantine=quarantine, scanner=scanner if threads else None)
        if not threads:
            scanner = None  # built for the start-up checks only: the workers have their own
        # What start-up built lives as long as the process: out of the collector's sight, so
        # collections while serving walk only what sessions allocate, not the whole heap.
        gc.collect()
        gc.freeze()
        if metrics is not None:
            metrics.watch(queue_depth=lambda: server.state.pool.pending, quarantine_size=quarantine.count)
        return asyncio.run(_serve(server, path, listen, downstream))
    except (ConfigError, StartupFailed) as exc:
        return report(prog, exc)
    except (_ListenFailed, WorkersFailed) as exc:
        _log_if_file(config, str(exc))
        return report(prog, str(exc))
    finally:
        if quarantine is not None:
            quarantine.close()


def _log_if_file(config: Config, message: str) -> None:
    """Start-up errors go to standard error; the log file (if any) gets them too."""
    if config.section("logging")["file"] or config.section("logging").get("syslog"):
        log.error("%s", message)


class _ListenFailed(Exception):
    """The listening socket could not be opened (already in use, a privileged port)."""


class WorkersFailed(Exception):
    """No scanning worker could start: the relay would only answer 451, so it does not start."""


async def _serve(server: RelayServer, path: str | None, listen: str | None, downstream: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    def reload() -> None:
        from mailguard.logsetup import reopen_log_files

        reopen_log_files()  # first: after logrotate, even a refused reload logs to the new file
        try:
            config = _config_with_overrides(path, listen, downstream)
            from mailguard.ops.preflight import check_rule_ids

            errors = check_rule_ids(config)
            if errors:
                raise ConfigError("\n".join(errors))
        except ConfigError as exc:
            log.error("reload failed", extra={"fields": {"error": "; ".join(str(exc).splitlines()),
                                                         "kept": "running configuration"}})
            return
        task = loop.create_task(server.reload(config))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await server.start()
    except OSError as exc:
        from mailguard.ops.errors import listen_error

        settings = server.state.settings
        await loop.run_in_executor(None, server.state.pool.close)
        raise _ListenFailed(listen_error(exc, f"[relay] listen in {path or 'the configuration'}",
                                         f"{settings.listen_host}:{settings.listen_port}")) from None
    except WorkersFailed:
        server.state.pool.close(wait=False)
        raise
    from mailguard.ops.sdnotify import notify

    notify("READY=1", f"STATUS=listening on {server.address[0]}:{server.address[1]}")
    await stop.wait()
    await server.drain()
    return 0

