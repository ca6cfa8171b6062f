"""Scanning off the event loop, with a bounded queue.

Scanning is CPU work (parsing, YARA, fuzzy matching); done on the event loop it would stall
every other SMTP session while one large message is read. A worker pool sized to the cores
does it instead, and a hard bound on messages waiting or being scanned turns overload into
an immediate 'try again later' for the sender rather than a growing backlog of memory and
timeouts.

Two kinds of worker: threads sharing one ``Scanner`` (cheap to start, rebuilt instantly on
reload), or processes with a ``Scanner`` each (scanning is mostly Python, so only processes
use more than one core at a time; see bench/relay.py for the measured difference).
"""
from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mailguard.config import Config
from mailguard.model import Envelope, Verdict
from mailguard.scanner import Scanner

POOL_KINDS = ("threads", "processes")

# One Scanner per worker process, built once by the pool's initializer: the process is the
# unit of isolation here, so a module global is its natural home.
_WORKER_SCANNER: Scanner | None = None


def _init_worker(config: Config) -> None:
    global _WORKER_SCANNER
    _WORKER_SCANNER = Scanner(config)


def _scan_in_worker(raw: bytes, envelope: Envelope) -> Verdict:
    assert _WORKER_SCANNER is not None, "worker started without its initializer"
    return _WORKER_SCANNER.scan(raw, envelope)


class PoolBusy(Exception):
    """The queue is full: the relay answers 451 (or 421 at connect) so the sender retries."""


class ScanPool:
    """Scans in worker threads or processes; at most ``limit`` messages queued or in scanning.

    A scan that times out keeps its place until its worker actually finishes: a runaway
    scan still uses CPU and memory, so the bound counts it.
    """

    def __init__(self, config: Config, workers: int, limit: int, kind: str = "threads",
                 scanner: Scanner | None = None) -> None:
        if kind not in POOL_KINDS:
            raise ValueError(f"unknown pool kind {kind!r}")
        self.workers, self.limit, self.kind = workers, limit, kind
        self._lock = threading.Lock()
        self._pending = 0
        self._scanner: Scanner | None = None
        self._config = config
        self._executor: Executor
        if kind == "processes" and scanner is None:
            self._executor = self._process_executor()
        else:
            self.kind = "threads"
            self._scanner = scanner or Scanner(config)
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="mailguard-scan")

    def _process_executor(self) -> ProcessPoolExecutor:
        # spawn: a fresh interpreter per worker; forking a threaded server is unsafe.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self._config,))

    def _replace_broken(self, broken: Executor) -> None:
        """A worker process died (killed, out of memory): start a new pool, or every later
        message would fail too. The message that was in it gets a 451 and is retried."""
        with self._lock:
            if self._executor is broken:
                self._executor = self._process_executor()
                broken.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        return self._pending

    def saturated(self) -> bool:
        return self._pending >= self.limit

    def _release(self, _future: Future[Verdict]) -> None:
        with self._lock:
            self._pending -= 1

    def _submit(self, raw: bytes, envelope: Envelope) -> Future[Verdict]:
        if self._scanner is not None:
            return self._executor.submit(self._scanner.scan, raw, envelope)
        return self._executor.submit(_scan_in_worker, raw, envelope)

    async def scan(self, raw: bytes, envelope: Envelope, timeout: float | None = None) -> Verdict:
        """The verdict; raises PoolBusy when full, asyncio.TimeoutError past ``timeout``, and
        whatever the scan raised (a crashed worker process included)."""
        with self._lock:
            if self._pending >= self.limit:
                raise PoolBusy(f"{self._pending} messages already queued for scanning")
            self._pending += 1
        executor = self._executor
        try:
            future = self._submit(raw, envelope)
        except BaseException as exc:
            with self._lock:
                self._pending -= 1
            if isinstance(exc, BrokenProcessPool):
                self._replace_broken(executor)
            raise
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except BrokenProcessPool:
            self._replace_broken(executor)
            raise

    def close(self, wait: bool = True) -> None:
        """Stop taking work; scans already queued still finish (their senders are waiting)."""
        self._executor.shutdown(wait=wait, cancel_futures=False)
