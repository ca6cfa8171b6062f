"""A scanner that scans through the daemon: for servers (the milter) whose own threads
would otherwise share one core under the GIL.

``RemoteScanner`` has what servers use of a ``Scanner`` (``config`` and ``scan``); each
calling thread keeps its own connection, so N scanning threads keep N daemon workers
busy while they wait on the socket without holding the GIL. A connection that broke
mid-request is opened again once (a replacement worker takes it); when the daemon cannot
be reached, refuses the message or does not answer in time the scan raises at once, and the server answers with a temporary failure, so the sender retries and
nothing is lost.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Mapping

from mailguard.daemon.client import DaemonClient, DaemonUnavailable
from mailguard.model import Action, AnalyzerError, AuthResults, Envelope, Finding, Verdict


def verdict_from_dict(data: Mapping[str, Any]) -> Verdict:
    """The inverse of ``Verdict.to_dict`` (scores as rounded there, to 3 decimals)."""
    findings = tuple(
        Finding(
            analyzer=f["analyzer"], rule=f["rule"], score=float(f["score"]), summary=f["summary"],
            details=f.get("details") or {},
            min_action=Action.parse(f["min_action"]) if f.get("min_action") else None,
        )
        for f in data.get("findings", ())
    )
    errors = tuple(AnalyzerError(e["analyzer"], e["error"]) for e in data.get("errors", ()))
    return Verdict(
        score=float(data["score"]), action=Action.parse(data["action"]), findings=findings, errors=errors,
        message_id=data.get("message_id", ""), elapsed_ms=float(data.get("elapsed_ms", 0.0)),
        tempfail=bool(data.get("tempfail", False)),
        auth=AuthResults.from_dict(data["auth"]) if data.get("auth") else None,
        summary=str(data.get("summary", "")),
    )


class RemoteScanner:
    """``scan(raw, envelope) -> Verdict`` through the daemon on ``path``; ``config`` and
    ``authserv_id`` as a ``Scanner`` has them.

    Each scan is one short connection (its request carries the configuration's
    fingerprint, so it is one round trip): a daemon worker serves one connection at a
    time, and a server holding connections open while idle would keep the workers from
    ``mailguard check`` and every other client. More scanning threads than daemon workers
    simply wait in the socket's backlog, in turn."""

    def __init__(self, config: Any, path: Path, fingerprint: str, timeout_s: float = 120.0) -> None:
        from mailguard.auth.schema import our_authserv_id

        self.config = config
        self.authserv_id = our_authserv_id(config)  # as Scanner: for the servers' Authentication-Results
        self.path, self.fingerprint, self.timeout_s = path, fingerprint, timeout_s
        DaemonClient(path, fingerprint, timeout_s).connect().close()  # fail at start-up, not on mail

    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict:
        wire = envelope.to_dict() if envelope is not None else None
        for attempt in (1, 2):  # a worker killed mid-scan: a replacement takes the second try
            client = DaemonClient(self.path, self.fingerprint, self.timeout_s)
            try:
                return verdict_from_dict(client.connect(hello=False).scan(raw, wire, check_config=True))
            except DaemonUnavailable as exc:
                if attempt == 2 or not exc.retry:  # no daemon, or a refusal: the same again
                    raise
            finally:
                client.close()
        raise AssertionError("unreachable")

    async def scan_async(self, raw: bytes, envelope: Envelope | None = None) -> Verdict:
        """``scan`` for a server's event loop (the milter): the same request and retry, on
        the loop's non-blocking sockets as the relay's daemon pool sends it, without a
        thread. A thread waiting on the socket has to win the GIL back from the loop each
        time it wakes, and the loop from it: at a few hundred messages a second that
        hand-over, not the scan, was most of the milter's time."""
        from mailguard.relay.daemon_pool import DaemonScanFailed, daemon_scan

        for attempt in (1, 2):  # a worker killed mid-scan: a replacement takes the second try
            try:
                async with asyncio.timeout(self.timeout_s):
                    return verdict_from_dict(await daemon_scan(self.path, self.fingerprint, raw, envelope))
            except DaemonScanFailed as exc:
                if attempt == 2 or not exc.retry:  # no daemon, or a refusal: the same again
                    raise DaemonUnavailable(str(exc)) from None
            except TimeoutError:  # its worker is still busy with it: a second try only doubles the wait
                raise DaemonUnavailable(f"the daemon on {self.path} did not answer in time") from None
        raise AssertionError("unreachable")


def daemon_scanner(config: Any, key: str) -> RemoteScanner:
    """The RemoteScanner for a server whose ``key`` (e.g. "[milter] use_daemon") asks for
    the daemon on [daemon] socket; a ConfigError naming the key when none answers, so the
    server does not start and then fail every message."""
    from mailguard.config import ConfigError
    from mailguard.daemon.protocol import config_fingerprint
    from mailguard.daemon.schema import socket_path

    path = socket_path(config.section("daemon"), config.source.parent if config.source else None)
    try:
        return RemoteScanner(config, path, config_fingerprint(config.source))
    except DaemonUnavailable as exc:
        raise ConfigError(f"{key}: {exc}; start `mailguard daemon` with the same configuration file") from None
