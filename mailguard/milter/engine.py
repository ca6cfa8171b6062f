"""The milter's settings and the engine every connection shares: the scanner (swapped
whole on SIGHUP), the quarantine, the banner and the bounded pool of worker threads where
scanning and quarantine writes run, off the event loop."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mailguard.milter.direction import DirectionRules
from mailguard.relay.outbound import OutboundSettings
from mailguard.config import Config, ConfigError, load_config
from mailguard.model import Verdict

log = logging.getLogger("mailguard.milter")


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
    direction: DirectionRules = field(default_factory=lambda: DirectionRules((), False, ()))
    outbound_tls_by_mta: bool = False

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
            direction=DirectionRules.from_settings(s, "[milter]"),
            outbound_tls_by_mta=s["outbound_tls_by_mta"],
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
    _daemon_slots: asyncio.Semaphore = field(init=False, repr=False)
    _outbound: tuple[Config, OutboundSettings] | None = field(default=None, init=False, repr=False)

    @property
    def outbound(self) -> OutboundSettings:
        """The [outbound] policy for mail the macros say is leaving (read per message: a
        reload may change it)."""
        cached = self._outbound
        if cached is None or cached[0] is not self.config:
            settings = OutboundSettings.from_config(self.config, "localhost", listener=False)
            assert settings is not None
            cached = self._outbound = (self.config, settings)
        return cached[1]

    def __post_init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.settings.scan_workers, thread_name_prefix="mailguard-scan"
        )
        self._daemon_slots = asyncio.Semaphore(self.settings.scan_workers)

    @classmethod
    def build(cls, config: Config) -> "Engine":
        """Scanner, banner and (for quarantine = "store") the quarantine, opened now so a
        bad key or folder stops start-up instead of failing mail later."""
        from mailguard.scanner import Scanner

        settings = MilterSettings.from_config(config)
        scanner = _scanner(config, Scanner)
        quarantine = None
        if settings.quarantine == "store":
            from mailguard.config import ConfigError
            from mailguard.quarantine import open_quarantine

            if not config.section("quarantine")["release_host"]:
                # Without it a release would go to [relay] downstream, which a milter-only Postfix
                # does not have; released mail must go back through Postfix (and this milter,
                # which recognises its release marker and lets it pass once).
                raise ConfigError(
                    f"{config.source or 'configuration'}: [milter] quarantine = \"store\" needs [quarantine] "
                    "release_host, the Postfix smtpd that released messages are handed to, e.g. \"127.0.0.1:25\" "
                    "(see examples/postfix-milter), or [milter] quarantine = \"hold\"")

            quarantine = open_quarantine(config)
        return cls(config, settings, scanner, quarantine, _load_banner())

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def scan(self, scanner: Any, raw: bytes, envelope: Any) -> Verdict:
        """Scan in a worker thread, or, through the daemon, on the event loop itself (at
        most scan_workers at once, as the threads would be): no thread to hand over to."""
        scan_async = getattr(scanner, "scan_async", None)
        if scan_async is None:
            return await self.run(scanner.scan, raw, envelope)
        async with self._daemon_slots:
            return await scan_async(raw, envelope)

    async def reload(self, path: Path) -> None:
        """Re-read the configuration and build a new scanner off the event loop; the old
        one finishes the scans it has. Listener settings need a restart."""
        from mailguard.scanner import Scanner

        from mailguard.logsetup import reopen_log_files
        from mailguard.ops.preflight import check_rule_ids

        reopen_log_files()
        loop = asyncio.get_running_loop()
        try:
            config = await loop.run_in_executor(None, load_config, path)
            scanner = await loop.run_in_executor(None, _scanner, config, Scanner)
            errors = check_rule_ids(config, scanner)
            if errors:
                raise ConfigError("\n".join(errors))
        except Exception as exc:  # keep serving with the old rules
            log.error("reload failed, keeping the previous configuration: %s", "; ".join(str(exc).splitlines()))
            return
        self.config, self.scanner = config, scanner
        log.info("configuration reloaded from %s", path)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.quarantine is not None:
            with contextlib.suppress(Exception):
                self.quarantine.close()


def _scanner(config: Config, build: Callable[[Config], Any]) -> Any:
    """A Scanner built here, or one that scans through the daemon ([milter] use_daemon)."""
    if not config.section("milter")["use_daemon"]:
        scanner = build(config)
        scanner.preload()  # a service: no message waits for an import at the first PDF or signature
        return scanner
    from mailguard.daemon.remote import daemon_scanner

    return daemon_scanner(config, "[milter] use_daemon")


def _load_banner() -> Callable[[bytes, Verdict], bytes] | None:
    try:
        from mailguard.banner import add_banner
    except ImportError:
        return None
    return add_banner
