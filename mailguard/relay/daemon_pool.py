"""Scanning through the daemon's prebuilt workers, from the relay's event loop.

``[relay] pool = "daemon"`` used to reach the daemon from manager threads, each blocking
on a socket: every message then cost the relay a hand-over to a thread and back, and the
threads fought the event loop for the GIL (a thread woken from a socket read waits up to
the 5 ms switch interval for it), which was most of the relay's own CPU per message and
most of its latency. The daemon already scans in other processes, so nothing here needs
a thread: the request is written and the reply read on non-blocking sockets by the loop.

The semantics of ``ScanPool`` are kept: two lanes (messages of ``large_bytes`` or more
on their own), each with at most ``workers`` scans in flight and ``limit`` queued or in
flight (over that: ``PoolBusy``, the sender is told 451); ``queue_timeout`` for the wait
for a slot and ``timeout`` for the scan itself (the connection is then closed: the
daemon's worker finishes that message and takes the next). Each scan is one short
connection carrying the configuration's fingerprint, as ``RemoteScanner``: a daemon worker
serves one connection at a time, so connections held open while idle would keep the
daemon's workers from everyone else.

A scan is tried a second time only when a second try can succeed: the connection broke
after the request was sent (its worker was killed mid-scan; a replacement takes the
retry). No daemon on the socket, a refusal (another configuration, a message over its
size limit, a scan that raised) or a reply that is not the protocol would fail the same
way again, so the sender is answered at once instead.
"""
from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailguard.daemon.protocol import HEADER, MAX_HEADER_BYTES, frame
from mailguard.daemon.remote import verdict_from_dict
from mailguard.model import Envelope, Verdict
from mailguard.relay.pool import PoolBusy, TwoLanes


class DaemonScanFailed(Exception):
    """The daemon could not be reached, broke the connection, or refused the message.
    ``retry``: whether trying again can help (the connection broke mid-request)."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


async def _read_reply(loop: asyncio.AbstractEventLoop, sock: socket.socket, path: Path) -> Any:
    """The one reply frame, usually in a single ``recv`` (length and JSON together)."""
    data = await loop.sock_recv(sock, 65_536)
    while True:
        if not data:
            raise DaemonScanFailed(f"the daemon on {path} closed the connection before answering", retry=True)
        if len(data) >= HEADER.size:
            (length,) = HEADER.unpack_from(data)
            if length > MAX_HEADER_BYTES:
                raise DaemonScanFailed(f"daemon on {path}: reply of {length} bytes is over the limit")
            end = HEADER.size + length
            if len(data) >= end:
                return json.loads(data[HEADER.size:end])
        more = await loop.sock_recv(sock, 262_144)
        if not more:
            raise DaemonScanFailed(f"the daemon on {path} closed the connection mid-reply", retry=True)
        data += more


async def daemon_scan(path: Path, fingerprint: str, raw: bytes, envelope: Envelope | None) -> dict[str, Any]:
    """One scan request on a fresh connection; the verdict as ``Verdict.to_dict`` gives it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            await loop.sock_connect(sock, str(path))
        except OSError as exc:  # nobody listening: a second try now would find nobody either
            raise DaemonScanFailed(f"no daemon on {path}: {exc.strerror or exc}") from None
        header = {"op": "scan", "size": len(raw), "config": fingerprint,
                  "envelope": envelope.to_dict() if envelope is not None else None}
        try:
            await loop.sock_sendall(sock, frame(header, raw))
            reply = await _read_reply(loop, sock, path)
        except OSError as exc:  # reset or broken pipe: the worker died with the request
            raise DaemonScanFailed(f"daemon on {path}: {exc.strerror or exc}", retry=True) from None
        except ValueError as exc:
            raise DaemonScanFailed(f"daemon on {path} sent a reply that is not JSON: {exc}") from None
    finally:
        sock.close()
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise DaemonScanFailed(str(error or "the daemon could not scan the message"))
    return reply["verdict"]  # type: ignore[no-any-return]


@dataclass
class _Lane:
    workers: int
    limit: int
    slots: asyncio.Semaphore | None = None
    pending: int = 0  # queued or in flight
    abandoned: int = 0

    def semaphore(self) -> asyncio.Semaphore:
        if self.slots is None:  # made on first use, inside the running loop
            self.slots = asyncio.Semaphore(self.workers)
        return self.slots


class DaemonPool(TwoLanes):
    """``ScanPool``'s interface (scan, pending, saturated, wait_ready, close) over the
    daemon on ``path``, run entirely on the event loop."""

    kind = "daemon"

    def __init__(self, path: Path, fingerprint: str, workers: int, limit: int, *, large_bytes: int = 262_144,
                 large_workers: int = 1, large_limit: int = 8) -> None:
        self.path, self.fingerprint = path, fingerprint
        self.workers, self.limit, self.large_bytes = workers, limit, large_bytes
        self.small = _Lane(workers, limit)
        self.large = _Lane(large_workers, large_limit)
        self.closed = False

    def worker_pids(self) -> list[int]:
        return []  # the daemon's own: see its log

    def wait_ready(self, timeout: float) -> bool:
        return True  # the daemon answered at start-up (daemon_scanner); its workers are built

    def start_failure(self) -> str | None:
        return None  # no daemon answering is refused at start-up (daemon_scanner)

    async def scan(self, raw: bytes, envelope: Envelope, timeout: float | None = None,
                   queue_timeout: float | None = None) -> Verdict:
        """The verdict; PoolBusy when the lane is full, asyncio.TimeoutError when no slot
        came within ``queue_timeout`` or the scan ran past ``timeout``, DaemonScanFailed
        when the daemon could not scan it (twice when the first connection broke)."""
        lane = self.large if len(raw) >= self.large_bytes else self.small
        if self.closed:
            raise PoolBusy("the scanning pool is shutting down")
        if lane.pending >= lane.limit:
            raise PoolBusy(f"{lane.pending} messages already queued for scanning")
        lane.pending += 1
        acquired = False
        slots = lane.semaphore()
        try:
            if slots.locked():  # asyncio.timeout, not wait_for: no task made per message
                async with asyncio.timeout(queue_timeout):
                    await slots.acquire()
            else:
                await slots.acquire()  # a free slot: taken at once
            acquired = True
            async with asyncio.timeout(timeout):
                return await self._scan_retrying(raw, envelope)
        except TimeoutError:
            lane.abandoned += 1
            raise
        finally:
            lane.pending -= 1
            if acquired:
                slots.release()

    async def _scan_retrying(self, raw: bytes, envelope: Envelope) -> Verdict:
        try:
            data = await daemon_scan(self.path, self.fingerprint, raw, envelope)
        except DaemonScanFailed as exc:
            if not exc.retry:
                raise
            data = await daemon_scan(self.path, self.fingerprint, raw, envelope)  # a replacement worker
        return verdict_from_dict(data)

    def close(self, wait: bool = True) -> None:
        """Stop taking work; scans in flight finish (their senders are waiting)."""
        self.closed = True
