"""Scanning off the event loop, with a bounded queue.

Scanning is CPU work (parsing, YARA, fuzzy matching); done on the event loop it would stall
every other SMTP session while one large message is read. A worker pool sized to the cores
does it instead, and a hard bound on messages waiting or being scanned turns overload into
an immediate 'try again later' for the sender rather than a growing backlog of memory and
timeouts.
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class PoolBusy(Exception):
    """The queue is full: the relay answers 451 (or 421 at connect) so the sender retries."""


class ScanPool:
    """Runs blocking callables in worker threads; at most ``limit`` at once queued or running.

    A call that times out is not counted as free until its thread actually finishes: a
    runaway scan keeps its place, so the bound reflects real CPU and memory in use.
    """

    def __init__(self, workers: int = 0, limit: int = 0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.limit = limit or self.workers * 16
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mailguard-scan")
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def saturated(self) -> bool:
        return self._pending >= self.limit

    def _release(self, _future: Future[T]) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """``fn()`` in a worker; raises PoolBusy when full, asyncio.TimeoutError past ``timeout``."""
        with self._lock:
            if self._pending >= self.limit:
                raise PoolBusy(f"{self._pending} messages already queued for scanning")
            self._pending += 1
        try:
            future = self._executor.submit(fn)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        future.add_done_callback(self._release)
        wrapped = asyncio.wrap_future(future)
        if timeout is None:
            return await wrapped
        return await asyncio.wait_for(asyncio.shield(wrapped), timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
