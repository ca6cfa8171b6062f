"""The recipient domains the practice writes to, for catching misdirected mail.

A claims spreadsheet meant for billing@labcorp.com that goes to billing@labcorp.co is a
breach. The listener counts the outside domains it delivers to (a small JSON file of
counts); a recipient domain the practice has never written to that *looks like* one it
writes to often is then held with the lookalike engine's explanation
(mailguard.analyzers.lookalike.domains.DomainMatcher: typos, swapped endings, look-alike
letters, added words).

The file holds domains and counts only, never addresses. It is written atomically
(temporary file, then rename) so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable

from mailguard.analyzers.lookalike.domains import DomainMatcher, protected_from_domains

MAX_DOMAINS = 20_000  # the file stays small whatever is sent


class RecipientHistory:
    """Thread-safe; ``lookalike`` builds its matcher again only when the usual set changed."""

    def __init__(self, path: str, known: Iterable[str], internal: Iterable[str], min_messages: int) -> None:
        self.path = Path(path) if path else None
        self.known = frozenset(known)
        self.internal = frozenset(internal)
        self.min_messages = min_messages
        self._lock = threading.Lock()
        self._counts: dict[str, int] = self._load()
        self._matcher: tuple[frozenset[str], DomainMatcher | None] = (frozenset(), None)

    def _load(self) -> dict[str, int]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(k): int(v) for k, v in dict(data.get("domains", {})).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}  # a damaged history only costs the lookalike check its memory

    def usual(self) -> frozenset[str]:
        with self._lock:
            seen = {d for d, n in self._counts.items() if n >= self.min_messages}
        return frozenset(seen) | self.known | self.internal

    def lookalike(self, domain: str) -> str | None:
        """The explanation when ``domain`` imitates a usual domain, else None."""
        domain = domain.strip().lower().rstrip(".")
        usual = self.usual()
        if not domain or not usual or domain in usual:
            return None
        with self._lock:
            key, matcher = self._matcher
            if matcher is None or key != usual:
                matcher = DomainMatcher(protected_from_domains(usual))
                self._matcher = (usual, matcher)
        if matcher.is_owned(domain):
            return None
        match = matcher.match(domain)
        return match.sentence() + f"; the practice usually writes to {match.target.domain}" if match else None

    def record(self, domains: Iterable[str]) -> None:
        """Count one delivered message to each of ``domains`` and save."""
        with self._lock:
            for d in set(domains):
                if d in self._counts or len(self._counts) < MAX_DOMAINS:
                    self._counts[d] = self._counts.get(d, 0) + 1
            snapshot = dict(self._counts)
        if self.path is not None:
            _write_atomically(self.path, json.dumps({"domains": snapshot}, sort_keys=True).encode())


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".history-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
