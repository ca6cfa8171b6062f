"""A scanner that scans through the daemon: for servers (the milter) whose own threads
would otherwise share one core under the GIL.

``RemoteScanner`` has what servers use of a ``Scanner`` (``config`` and ``scan``); each
calling thread keeps its own connection, so N scanning threads keep N daemon workers
busy while they wait on the socket without holding the GIL. A broken connection is
opened again once (a replacement worker takes it); when the daemon cannot be reached the
scan raises, and the server answers with a temporary failure, so the sender retries and
nothing is lost.
"""
from __future__ import annotations

import threading
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
    )


class RemoteScanner:
    """``scan(raw, envelope) -> Verdict`` through the daemon on ``path``; ``config`` and
    ``authserv_id`` as a ``Scanner`` has them."""

    def __init__(self, config: Any, path: Path, fingerprint: str, timeout_s: float = 120.0) -> None:
        from mailguard.auth.schema import our_authserv_id

        self.config = config
        self.authserv_id = our_authserv_id(config)  # as Scanner: for the servers' Authentication-Results
        self.path, self.fingerprint, self.timeout_s = path, fingerprint, timeout_s
        self._local = threading.local()
        DaemonClient(path, fingerprint, timeout_s).connect().close()  # fail at start-up, not on mail

    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict:
        wire = envelope.to_dict() if envelope is not None else None
        for attempt in (1, 2):
            client = getattr(self._local, "client", None)
            try:
                if client is None:
                    client = self._local.client = DaemonClient(self.path, self.fingerprint, self.timeout_s).connect()
                return verdict_from_dict(client.scan(raw, wire))
            except DaemonUnavailable:
                if client is not None:
                    client.close()
                self._local.client = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
