"""Scanning off the event loop: bounded lanes of workers, and scans that can be abandoned.

Scanning is CPU work (parsing, YARA, fuzzy matching); done on the event loop it would stall
every other SMTP session while one large message is read. Workers do it instead, and a hard
bound on messages waiting or being scanned turns overload into an immediate 'try again
later' for the sender rather than a growing backlog of memory and timeouts.

Three rules keep a hostile or unlucky burst from starving everyone else:

- **An overrun scan is abandoned.** When ``scan_timeout`` passes, the sender is answered and
  the job leaves the queue at that moment: a job still waiting is dropped, a job in a worker
  *process* has its process killed and replaced (a fresh one is started and takes work once
  its rules are compiled). A worker *thread* cannot be stopped in Python: it is retired (it
  finishes its scan and exits) and a new thread takes its place, so the slot is free, but
  the CPU it burns is not; only processes give the full guarantee (the default).
- **The queue counts only live work**: abandoned jobs are not counted.
- **Two lanes**: messages of ``large_message_bytes`` or more are scanned by their own
  workers with their own queue bound, so large or slow messages cannot delay small ones.
- **Workers that cannot start are a failure, not a wait.** A worker process that ends
  before its rules are built (a plug-in or rules file that fails in a fresh process, too
  little memory) is tried again with a growing pause; once every worker of a lane has
  failed so, the lane is *unavailable*: at start-up the relay refuses to start
  (``start_failure``), later every message for that lane, queued or new, is answered 451
  at once instead of waiting out ``scan_queue_timeout``, until a worker starts again.

A dedicated manager thread per worker hands jobs over and waits for the answer: that keeps
the event loop free of blocking pipes, and lets each worker be killed on its own (a
``ProcessPoolExecutor`` loses every job in flight when one of its processes dies).
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import signal
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from mailguard.config import Config
from mailguard.model import Envelope, Verdict
from mailguard.scanner import Scanner

POOL_KINDS = ("threads", "processes")

log = logging.getLogger("mailguard.relay")


class PoolBusy(Exception):
    """The lane's queue is full: the relay answers 451 (or 421 at connect) so the sender retries."""


class WorkerDied(Exception):
    """The worker process scanning the message died (killed from outside, out of memory)."""


class ScanFailed(Exception):
    """The scan raised inside a worker process; the text names the original exception."""


class WorkersUnavailable(Exception):
    """No worker of the lane could start (the text says why): nothing can be scanned now."""


RESTART_PAUSE_MAX_S = 30.0  # the longest pause between attempts to start a failing worker


def _worker_main(conn: Connection, config: Config) -> None:
    """A worker process: build a Scanner once, say so, then scan until told to stop."""
    try:
        scanner = Scanner(config)
        scanner.preload()  # no message waits for an import at the first PDF or signature
    except Exception as exc:  # told to the relay, which says it once instead of a traceback per try
        conn.send(("failed", f"{type(exc).__name__}: {exc}"[:500]))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        raw, envelope = job
        try:
            conn.send(("ok", scanner.scan(raw, envelope)))
        except Exception as exc:  # sent back as text: not every exception pickles
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:500]))


@dataclass(eq=False)  # kept in a set: by identity
class _Job:
    raw: bytes
    envelope: Envelope
    lane: "_Lane"
    future: Future[Verdict] = field(default_factory=Future)
    started: Future[None] = field(default_factory=Future)
    state: str = "queued"  # queued -> running -> done | abandoned
    manager: "_Manager | None" = None


class _Manager:
    """One worker slot: a thread that takes jobs from its lane and runs them, in its own
    worker process (``process = True``) or in the thread itself."""

    def __init__(self, lane: "_Lane") -> None:
        self.lane = lane
        self.retired = False
        self.killed = False
        self._proc: Any = None
        self._conn: Connection | None = None
        self.thread = threading.Thread(target=self._run, name=f"mailguard-scan-{lane.name}", daemon=True)
        self.thread.start()

    # -- worker process life cycle (process lanes only)
    def _start_process(self) -> bool:
        context = multiprocessing.get_context("spawn")  # forking a threaded server is unsafe
        parent, child = context.Pipe()
        proc = context.Process(target=_worker_main, args=(child, self.lane.config), daemon=True,
                               name=f"mailguard-scan-{self.lane.name}")
        proc.start()
        child.close()
        self._proc, self._conn, self.killed = proc, parent, False
        try:  # wait until its rules are compiled, so a job never waits on a cold worker
            kind, detail = parent.recv()
        except (EOFError, OSError):
            proc.join(5)
            kind, detail = "died", _ended(proc.exitcode)
        if kind == "ready":
            self.lane.started(self)
            return True
        self.lane.start_failed(self, f"a scanning worker process could not build its scanner ({detail})"
                               if kind == "failed" else f"a scanning worker process {detail} before its rules were built")
        return False

    def _stop_process(self, kill: bool) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        if kill:
            proc.kill()
        elif conn is not None:
            try:
                conn.send(None)
            except OSError:
                proc.kill()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()

    def kill(self) -> None:
        """Stop the scan in progress now (called from the event loop on timeout)."""
        self.killed = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def _scan(self, job: _Job) -> Verdict:
        if not self.lane.processes:
            assert self.lane.scanner is not None
            return self.lane.scanner.scan(job.raw, job.envelope)
        conn = self._conn
        if conn is None:
            raise WorkerDied("no scanning process could be started for it")
        try:
            conn.send((job.raw, job.envelope))
            kind, value = conn.recv()
        except (EOFError, OSError) as exc:
            self.killed = True  # replaced now, not when the next job comes (it may not be alive yet)
            raise WorkerDied("the scanning process died") from exc
        if kind == "error":
            raise ScanFailed(value)
        return value  # type: ignore[no-any-return]

    def _run(self) -> None:
        lane = self.lane
        pause = 1.0
        while not self.retired:
            if lane.processes and (self.killed or self._proc is None or not self._proc.is_alive()):
                self._stop_process(kill=True)
                if not self._start_process():
                    # it died while starting: try again, pausing longer each time (each try
                    # costs a process start and a rules build, and the cause may last)
                    if lane.stopped.wait(pause):
                        break
                    pause = min(pause * 2, RESTART_PAUSE_MAX_S)
                    continue
                pause = 1.0
            job = lane.jobs.get()
            if job is None:  # shutdown: every job queued before it has been taken
                break
            if lane.processes and (self.killed or not self._proc.is_alive()):
                # died while idle (killed from outside): a fresh one scans this job
                self._stop_process(kill=True)
                if not self._start_process():
                    self._stop_process(kill=True)
            if not lane.claim(job, self):
                continue
            try:
                result: Any = self._scan(job)
                error: BaseException | None = None
            except BaseException as exc:
                result, error = None, exc
            lane.finish(job, result, error)
        self._stop_process(kill=self.retired)


class _Lane:
    """Workers and a bounded queue for one class of message (small or large)."""

    def __init__(self, name: str, config: Config, workers: int, limit: int, scanner: Scanner | None) -> None:
        self.name, self.config, self.workers, self.limit = name, config, workers, limit
        self.scanner = scanner
        self.processes = scanner is None
        self.closed = False
        self.stopped = threading.Event()
        self.ready = threading.Event()
        if not self.processes:
            self.ready.set()
        self.settled = threading.Event()  # a worker is ready, or every one has failed to start
        if not self.processes:
            self.settled.set()
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.pending = 0  # queued or running, not abandoned
        self.abandoned = 0
        self.waiting: set[_Job] = set()  # queued, not yet taken by a worker
        self.failures: dict[_Manager, str] = {}  # workers whose last start failed, and why
        self.failure: str | None = None  # set while every worker's last start failed
        self.managers = [_Manager(self) for _ in range(workers)]

    def started(self, manager: _Manager) -> None:
        with self._lock:
            self.failures.pop(manager, None)
            recovered, self.failure = self.failure, None
        self.ready.set()
        self.settled.set()
        if recovered:
            log.info("scanning workers available again", extra={"fields": {"lane": self.name}})

    def start_failed(self, manager: _Manager, reason: str) -> None:
        """Once every worker of the lane has failed to start, fail what waits and what comes."""
        with self._lock:
            self.failures[manager] = reason
            if self.failure is not None or any(m not in self.failures for m in self.managers):
                return  # already said, or another worker is running or still starting
            self.failure = reason
            failed = [job for job in self.waiting if job.state == "queued"]
            for job in failed:
                job.state = "failed"
                self.pending -= 1
            self.waiting.clear()
        log.error("scanning workers cannot start", extra={"fields": {  # before anyone acts on it
            "lane": self.name, "error": reason, "answered_451": len(failed),
            "todo": "messages are answered 451 until a worker starts; fix the cause (the worker's error, "
                    "or its standard error), or set [relay] pool = \"threads\""}})
        for job in failed:
            job.started.set_exception(WorkersUnavailable(reason))
        self.settled.set()

    def submit(self, raw: bytes, envelope: Envelope) -> _Job:
        with self._lock:
            if self.closed:
                raise PoolBusy("the scanning pool is shutting down")
            if self.failure is not None:
                raise WorkersUnavailable(self.failure)
            if self.pending >= self.limit:
                raise PoolBusy(f"{self.pending} messages already queued for scanning ({self.name} lane)")
            self.pending += 1
            job = _Job(raw, envelope, self)
            self.waiting.add(job)
        self.jobs.put(job)
        return job

    def claim(self, job: _Job, manager: _Manager) -> bool:
        with self._lock:
            self.waiting.discard(job)
            if job.state != "queued":
                return False
            job.state, job.manager = "running", manager
        job.started.set_result(None)
        return True

    def finish(self, job: _Job, result: Any, error: BaseException | None) -> None:
        with self._lock:
            if job.state != "running":
                return  # abandoned meanwhile: the sender already has its answer
            job.state = "done"
            self.pending -= 1
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def abandon(self, job: _Job) -> None:
        """The sender has been answered: free the slot now, and stop the work if it runs."""
        with self._lock:
            if job.state not in ("queued", "running"):
                return
            running = job.state == "running"
            job.state = "abandoned"
            self.waiting.discard(job)
            self.pending -= 1
            self.abandoned += 1
            manager = job.manager
            if running and manager is not None and self.processes:
                manager.kill()  # its thread sees the process die and starts a fresh one
                stopped = "process killed"
            elif running and manager is not None:
                # A thread cannot be stopped: retire it and let a new one take its place.
                manager.retired = True
                self.managers = [m for m in self.managers if m is not manager]
                if not self.closed:
                    self.managers.append(_Manager(self))
                stopped = "thread retired"
            else:
                stopped = "dropped from the queue"
            pending = self.pending
        log.warning("scan abandoned", extra={"fields": {"lane": self.name, "stopped": stopped, "pending": pending}})

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.stopped.set()
            managers = list(self.managers)
        for _ in managers:
            self.jobs.put(None)

    def join(self, timeout: float | None = None) -> None:
        for manager in list(self.managers):
            manager.thread.join(timeout)


def _ended(exitcode: int | None) -> str:
    """How a worker process ended, in words."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class TwoLanes:
    """What a pool with a small and a large lane (``small``, ``large``: each with
    ``pending``, ``abandoned`` and ``limit``) tells the server about its load."""

    small: Any
    large: Any

    @property
    def pending(self) -> int:
        """Live work only: queued or being scanned, abandoned scans not counted."""
        return int(self.small.pending + self.large.pending)

    @property
    def abandoned(self) -> int:
        return int(self.small.abandoned + self.large.abandoned)

    def saturated(self) -> bool:
        """The small lane is full (at connect the size is unknown; most mail is small)."""
        return bool(self.small.pending >= self.small.limit)


class ScanPool(TwoLanes):
    """Scans in two lanes of worker processes (or threads sharing ``scanner``): messages of
    ``large_bytes`` or more in the large lane. At most ``limit`` (small lane) and
    ``large_limit`` (large lane) messages waiting or in scanning."""

    def __init__(self, config: Config, workers: int, limit: int, kind: str = "processes",
                 scanner: Scanner | None = None, *, large_bytes: int = 262_144, large_workers: int = 1,
                 large_limit: int = 8) -> None:
        if kind not in POOL_KINDS:
            raise ValueError(f"unknown pool kind {kind!r}")
        if kind == "threads" and scanner is None:
            scanner = Scanner(config)
            scanner.preload()
        self.kind = "threads" if scanner is not None else "processes"
        self.workers, self.limit, self.large_bytes = workers, limit, large_bytes
        self.small = _Lane("small", config, workers, limit, scanner)
        self.large = _Lane("large", config, large_workers, large_limit, scanner)

    def worker_pids(self) -> list[int]:
        return [pid for lane in (self.small, self.large) for m in lane.managers if (pid := m.pid) is not None]

    def wait_ready(self, timeout: float) -> bool:
        """Blocks until each lane has a worker with its rules compiled (at start and after a
        reload), so the first messages are not answered 451 while workers are still starting;
        returns early (False) when every worker of a lane failed to start (``start_failure``)."""
        lanes = (self.small, self.large)
        return all(lane.settled.wait(timeout) for lane in lanes) and all(lane.ready.is_set() for lane in lanes)

    def start_failure(self) -> str | None:
        """Why no worker of a lane can start, while that is so (None otherwise)."""
        return self.small.failure or self.large.failure

    async def scan(self, raw: bytes, envelope: Envelope, timeout: float | None = None,
                   queue_timeout: float | None = None) -> Verdict:
        """The verdict; raises PoolBusy when the lane is full, asyncio.TimeoutError when no
        worker took it within ``queue_timeout`` or it ran past ``timeout`` (the scan is then
        abandoned), WorkerDied or ScanFailed; WorkersUnavailable when no worker of its lane
        can start (at once, or as soon as that is known for a message already queued)."""
        lane = self.large if len(raw) >= self.large_bytes else self.small
        job = lane.submit(raw, envelope)  # WorkersUnavailable at once when no worker can start
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.started)), queue_timeout)
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)), timeout)
        finally:
            lane.abandon(job)  # no-op once finished; frees the slot on timeout or cancellation

    def close(self, wait: bool = True) -> None:
        """Stop taking work; scans already queued still finish (their senders are waiting)."""
        for lane in (self.small, self.large):
            lane.close()
        if wait:
            for lane in (self.small, self.large):
                lane.join(30)
