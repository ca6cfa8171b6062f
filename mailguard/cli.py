"""The ``mailguard`` command.

``check`` is the triage tool (exit status as clamscan: 0 all accepted, 1 something flagged,
2 an error); ``config check`` validates a configuration; ``serve``, ``milter`` and
``quarantine`` hand over to their own modules, imported only when used.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys

# typing and pathlib are not imported at run time: `mailguard check` through the daemon
# imports this module, and its start-up is most of what one message costs (docs/daemon.md).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator, Sequence

    from mailguard.config import Config

# Imported inside the commands that use them: a check through the daemon imports no
# configuration schema, analyzer or model (its start-up is most of its time).


def _config_error() -> type[Exception]:
    """ConfigError, for ``except`` clauses (evaluated only when something was raised)."""
    from mailguard.options import ConfigError

    return ConfigError

EXIT_CLEAN, EXIT_FLAGGED, EXIT_ERROR = 0, 1, 2


def _config_from_args(path: str | None) -> Config:
    from mailguard.config import Config, load_config

    return load_config(path) if path else Config.default()


# --------------------------------------------------------------------------- check


class CheckResult:
    """One input's outcome: ``record`` the verdict as JSON (None when the input was
    unreadable); or, from the daemon, ``body`` the verdict already rendered as JSON
    (without the path) and what the exit status needs of it, so a long run does not
    decode and encode every verdict. (A plain class: dataclasses cost the daemon's
    client a tenth of its start-up.)"""

    __slots__ = ("path", "record", "error", "body", "action", "tempfail")

    def __init__(self, path: str, record: dict[str, Any] | None, error: str = "", *, body: str = "",
                 action: str = "", tempfail: bool = False) -> None:
        self.path, self.record, self.error = path, record, error
        self.body, self.action, self.tempfail = body, action, tempfail

    def full_record(self) -> dict[str, Any] | None:
        if self.body:
            return {"path": self.path, **json.loads(self.body)}
        return self.record

    def json_line(self) -> str:
        """One line of valid UTF-8 JSON whatever the file is called: a name that is not
        UTF-8 (bytes 0xff 0xfe) reaches Python as lone surrogates, which no UTF-8 stream
        can carry (a traceback, or invalid JSON written with surrogateescape); they are
        written as \\udcXX escapes instead, which json.loads and os.fsencode turn back into
        the file's exact name."""
        if self.body:  # '{"path": ..., ' + the rest of the verdict's object, as json.dumps writes it
            line = f'{{"path": {json.dumps(self.path, ensure_ascii=False)}, {self.body[1:]}\n'
        elif self.record is None:
            line = json.dumps({"path": self.path, "error": self.error}, ensure_ascii=False) + "\n"
        else:
            line = json.dumps(self.record, ensure_ascii=False) + "\n"
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(json.loads(line), ensure_ascii=True) + "\n"
        return line


def iter_inputs(paths: Sequence[str]) -> Iterator[tuple[str, str, bool]]:
    """(path, error, follow) for every file to scan: files, folders recursively, '-' for
    stdin. ``follow``: whether the file may be opened through a symbolic link. A path named
    on the command line is the user's choice and is followed; inside a folder (a mailbox
    export from a compromised account, say) nothing is followed: a link may point anywhere
    (/etc/shadow, /dev/zero, a FIFO that blocks for ever, back to its own folder)."""
    for given in paths:
        if given == "-":
            yield "-", "", True
            continue
        try:
            info = os.stat(given)
        except OSError as exc:
            yield given, _stat_error(exc), True
            continue
        if stat.S_ISDIR(info.st_mode):
            yield from _walk_folder(given)
        elif stat.S_ISREG(info.st_mode):
            yield given, "", True
        else:
            hint = "; to check a message from a pipe, give - and send it to standard input" \
                if stat.S_ISFIFO(info.st_mode) else ""
            yield given, f"not a regular file ({_kind(info.st_mode)}), not read{hint}", True


def _walk_folder(top: str) -> Iterator[tuple[str, str, bool]]:
    """Every regular file under ``top``, in name order, a folder's files before its
    subfolders'. Iterative (a tree thousands of levels deep is no RecursionError); a
    symbolic link, FIFO, socket or device is skipped with a note (never opened); a
    subfolder that cannot be listed is an error (exit 2), never silently left out, so an
    unreadable folder cannot hide a message from a check that then says "all accepted";
    a folder met twice (a bind mount of a parent) is entered once."""
    found = False
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:  # opened first, not followed below the top: a subfolder replaced by a link is not entered
            entries, info = _list_folder(folder, follow=folder == top)
        except OSError as exc:
            yield folder, f"cannot list the folder: {_os_reason(exc)}", True
            continue
        if (info.st_dev, info.st_ino) in seen:
            _note(folder, "skipped, a folder already checked (mounted twice)")
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders: list[str] = []
        for name, mode in entries:
            full = os.path.join(folder, name)
            if stat.S_ISDIR(mode):
                subfolders.append(full)
            elif stat.S_ISREG(mode):
                found = True
                reason = not_mail(full)
                if reason:  # a note, not a verdict: the mailbox's own bookkeeping
                    _note(full, f"skipped, {reason}")
                    continue
                yield full, "", False
            elif stat.S_ISLNK(mode):
                _note(full, "skipped, a symbolic link (not followed inside a folder; name its target to check it)")
            else:
                _note(full, f"skipped, {_kind(mode)}, not a regular file")
        stack.extend(reversed(subfolders))
    if not found:
        yield top, "folder contains no files", True


def _list_folder(folder: str, follow: bool) -> tuple[list[tuple[str, int]], os.stat_result]:
    """A folder's (name, mode) entries in name order and its identity, all of the folder
    opened (so a folder swapped for a link after the parent's listing is refused); an entry
    gone since the listing is left out."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    descriptor = os.open(folder, flags)
    try:
        info = os.fstat(descriptor)
        entries: list[tuple[str, int]] = []
        with os.scandir(descriptor) as listing:
            for entry in listing:
                try:
                    entries.append((entry.name, entry.stat(follow_symlinks=False).st_mode))
                except OSError:
                    continue
    finally:
        os.close(descriptor)
    entries.sort()
    return entries, info


def _note(path: str, text: str) -> None:
    from mailguard.ops.shown import inline

    print(f"mailguard: {inline(path)}: {text}", file=sys.stderr)


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a file"


def _os_reason(exc: OSError) -> str:
    """Why a file or folder could not be opened, and what to do about it."""
    import errno

    if isinstance(exc, PermissionError):
        from mailguard.ops.errors import current_user

        return (f"permission denied for user {current_user()}; run the check as a user who may read it "
                "(e.g. with sudo) or make it readable")
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long for the system; check the subfolder by itself (cd into it first)"
    if exc.errno == errno.ELOOP:
        return "a symbolic link (not followed: it was replaced by one after the folder was listed)"
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder (deleted or renamed since the folder was listed?)"
    return str(exc.strerror or exc)


def _stat_error(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder"
    return f"cannot read: {_os_reason(exc)}"


class NotRegularFile(OSError):
    """Opened, but not a regular file (a FIFO, device or socket put there after listing)."""


def open_message(path: str, follow: bool = True) -> Any:
    """A regular file opened for reading, without blocking and without following a final
    symbolic link unless ``follow``. Checking the type before ``open`` leaves a gap in
    which a file can be replaced: by a FIFO (open would wait for a writer for ever), a
    device such as /dev/zero, or a link to a file outside the folder. The type is checked
    on what was opened instead."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{_kind(mode)}, not a regular file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_error(exc: OSError) -> str:
    """The ERROR text for a file that could not be read."""
    if isinstance(exc, NotRegularFile):
        return f"cannot read: {exc} (it changed after the folder was listed)"
    return f"cannot read: {_os_reason(exc)}"


# Files a mail store keeps beside the messages (Dovecot, Courier, Maildir++, mbox tools).
MAILBOX_FILES = frozenset({
    "dovecot.index", "dovecot.index.log", "dovecot.index.log.2", "dovecot.index.cache", "dovecot-uidlist",
    "dovecot-keywords", "dovecot-uidvalidity", "dovecot.list.index", "dovecot.list.index.log", "maildirfolder",
    "subscriptions", "courierimapuidlist", "courierimapkeywords", "courierimapacl", "maildirsize", ".uidvalidity",
})
_HEADER_LINE = re.compile(rb"^(?:From |[!-9;-~]{1,76}:)")


def not_mail(path: str) -> str:
    """Why a file found in a folder is not a message ('' when it may be one): a mail store's
    bookkeeping by its name, or binary content, either way only when it does not start like
    a message (a header line or an mbox From line), so a message is never skipped by name."""
    try:
        with open_message(path, follow=False) as handle:
            head = handle.read(4096)
    except OSError:
        return ""  # scanning reports the read error
    if _HEADER_LINE.match(head.lstrip(b"\r\n")):
        return ""
    name = os.path.basename(path)
    if name in MAILBOX_FILES or name.startswith(("dovecot.", "dovecot-")):
        return "a mail store's index or control file, not a message"
    if b"\0" in head:
        return "binary content, not a message"
    return ""


_WORKER_SCANNER: Any = None


def _worker_init(config: Config) -> None:
    """One Scanner per worker process: the parent's, when the worker is a fork of it,
    else built once here (spawn, forkserver)."""
    global _WORKER_SCANNER
    if _WORKER_SCANNER is not None:
        return
    from mailguard.scanner import Scanner

    with _no_cycle_collection():
        _WORKER_SCANNER = Scanner(config)


class _no_cycle_collection:  # noqa: N801 - used as a context manager, named like one
    """While the scanner is built (imports, a million objects unpickled from the build
    cache), Python's cycle collector would walk the growing heap again and again: 5 % of a
    cold check's instructions for nothing, since what is built stays. Afterwards what was
    built is frozen (never walked again) and collection resumes for the messages. (A class,
    not contextlib: the client path imports as little as it can.)"""

    def __enter__(self) -> None:
        import gc

        self._enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *_: object) -> None:
        import gc

        gc.freeze()
        if self._enabled:
            gc.enable()


def _scan_path(item: tuple[str, bool] | str, scanner: Any = None) -> CheckResult:
    """A file's verdict; no more of it is read than the scanner examines (``[limits]
    max_message_bytes``, and one byte to tell that there was more)."""
    path, follow = item if isinstance(item, tuple) else (item, True)
    scanner = scanner or _WORKER_SCANNER
    try:
        with open_message(path, follow) as handle:
            raw = handle.read(scanner.limits.max_message_bytes + 1)
    except OSError as exc:
        return CheckResult(path, None, read_error(exc))
    return _scan_bytes(path, raw, scanner)


def _scan_bytes(path: str, raw: bytes, scanner: Any = None) -> CheckResult:
    """The verdict; a scanner bug is this file's error (exit 2), not a traceback that loses
    the verdicts of every file after it."""
    scanner = scanner or _WORKER_SCANNER
    try:
        verdict = scanner.scan(raw)
    except Exception as exc:  # noqa: BLE001 - reported as this input's error
        return CheckResult(path, None, f"scanning failed ({type(exc).__name__}: {exc}); please report this "
                                       "as a mailguard bug, with the file if you may share it")
    record = {"path": path, **verdict.to_dict()}
    return CheckResult(path, record)


def _report_text(result: CheckResult, out: Any) -> None:
    """The verdict as lines for a person. Every value from the message (its id, the names of
    its attachments in the summaries) and the file's own name go through ``inline``: an
    attachment called "x\x1b[2J" or "x\n  - [SAFE -10] ok" must neither act on the
    terminal nor add a line of its own."""
    from mailguard.ops.shown import inline

    if result.record is None:
        out.write(f"{inline(result.path)}: ERROR {inline(result.error)}\n")
        return
    rec = result.record
    out.write(f"{inline(rec['path'])}: {rec['action'].upper()} (score {rec['score']:g})\n")
    if rec["message_id"]:
        out.write(f"  message-id: {inline(rec['message_id'])}\n")
    if rec.get("summary") and rec["action"] != "accept":
        out.write(f"  why: {inline(rec['summary'])}\n")
    for finding in rec["findings"]:
        out.write(f"  - [{inline(finding['rule'])} {finding['score']:+g}] {inline(finding['summary'])}\n")
    for error in rec["errors"]:
        out.write(f"  ! analyzer {inline(error['analyzer'])} failed: {inline(error['error'])}\n")
    if rec.get("tempfail"):
        out.write("  ! a server would answer 'try again later' because an analyzer failed\n")


class _Progress:
    """A progress bar with rate on a terminal's standard error, cleared before each report
    line and drawn again after it (so the two never share a line), and a closing summary
    by action; silent when standard error is not a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        import time

        self.total, self.done = total, 0
        self.enabled = enabled and total > 1
        self.started = time.monotonic()
        self.actions: dict[str, int] = {}
        self.drawn = False

    def _clear(self) -> None:
        if self.drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.drawn = False

    def _draw(self) -> None:
        import time

        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {rate:.1f} msg/s")
        sys.stderr.flush()
        self.drawn = True

    def write(self, text: str, out: Any, flush: bool = True) -> None:
        if self.enabled:
            self._clear()
        out.write(text)
        if flush or self.enabled:
            out.flush()

    def step(self, action: str) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1
        self.done += 1
        if self.enabled:
            self._draw()

    def close(self) -> None:
        import time

        if self.enabled:
            self._clear()
            seconds = max(time.monotonic() - self.started, 1e-6)
            counts = ", ".join(f"{a} {n}" for a, n in sorted(self.actions.items()))
            sys.stderr.write(f"mailguard: {self.done} checked in {seconds:.1f} s ({self.done / seconds:.1f} msg/s): "
                             f"{counts}\n")


class _Emitter:
    """Prints each result (JSON line or report) and keeps the exit status as clamscan does."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.json = args.json
        self.exit_code = EXIT_CLEAN
        self.out = sys.stdout
        self.flush_each = True  # off when the caller flushes before it waits (the daemon's pipeline)
        self.progress = _Progress(total, sys.stderr.isatty() and not args.quiet)

    def __call__(self, result: CheckResult) -> None:
        if result.body:
            action, tempfail = result.action, result.tempfail
        elif result.record is not None:
            action, tempfail = str(result.record["action"]), bool(result.record.get("tempfail"))
        else:
            action, tempfail = "error", False
        if result.record is None and not result.body:
            self.exit_code = EXIT_ERROR
        elif tempfail:
            self.exit_code = EXIT_ERROR
        elif action != "accept" and self.exit_code == EXIT_CLEAN:
            self.exit_code = EXIT_FLAGGED
        if self.json:
            text = result.json_line()
        else:
            import io

            out = io.StringIO()
            _report_text(CheckResult(result.path, result.full_record(), result.error), out)
            text = out.getvalue()
        self.progress.write(text, self.out, self.flush_each)
        if result.record is None and not result.body:
            from mailguard.ops.shown import inline

            self.progress.write(f"mailguard: {inline(result.path)}: {inline(result.error)}\n", sys.stderr)
        self.progress.step("tempfail" if tempfail else action)


CHUNK = 8  # files a worker process takes at a time


def cmd_check(args: argparse.Namespace) -> int:
    inputs = list(iter_inputs(args.paths))
    if args.daemon != "off":
        try:
            code = _check_with_daemon(args, inputs)
        except KeyboardInterrupt:
            return 130
        if code is not None:
            return code
        if args.daemon == "required":
            return EXIT_ERROR
    config: Config | None = None
    try:
        with _no_cycle_collection():  # (the imports happen here)
            config = _config_from_args(args.config)
            from mailguard.scanner import Scanner

            # Built here even for worker processes, which inherit it from the fork: a
            # broken data file ([policy] scores_file, a YARA rule) is one error line and
            # exit 2, not a pool whose every worker dies at start (a traceback, exit 1).
            local_scanner = Scanner(config)
    except _config_error() as exc:
        from mailguard.config import name_the_key
        from mailguard.ops.errors import report

        return report("mailguard", name_the_key(config, str(exc)))
    emit = _Emitter(args, len(inputs))
    files = [(p, follow) for p, e, follow in inputs if not e and p != "-"]
    workers = _workers(args.jobs, len(files))
    executor: Any = None
    broken = False
    try:
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            global _WORKER_SCANNER
            context = multiprocessing.get_context()
            if context.get_start_method() == "fork":
                _WORKER_SCANNER = local_scanner  # shared from the fork; not built again in each worker
            executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                                           initargs=(config,))
            scanned: Any = _pooled(executor, files, workers)
        else:
            scanned = (_scan_path(item, local_scanner) for item in files)
        scanned_iter = iter(scanned)
        for path, error, _ in inputs:
            if error:
                result = CheckResult(path, None, error)
            elif path == "-":
                result = _scan_bytes("-", sys.stdin.buffer.read(local_scanner.limits.max_message_bytes + 1),
                                     local_scanner)
            else:
                try:
                    result = next(scanned_iter)
                except _broken_pool() as exc:
                    from mailguard.ops.errors import report

                    broken = True
                    emit.progress.close()
                    return report("mailguard", f"{path}: a scanning process died ({exc}); it and the files after "
                                               "it were not checked; if memory is short, try fewer workers (-j 1)")
            emit(result)
    except KeyboardInterrupt:
        return 130
    finally:
        if executor is not None:  # cancelling what a broken pool is failing itself races (Python 3.11): a hang
            executor.shutdown(wait=True, cancel_futures=not broken)
        emit.progress.close()
    return emit.exit_code


def _pooled(executor: Any, files: list[tuple[str, bool]], workers: int) -> Iterator[CheckResult]:
    """The files' results in order, from the pool, with a few chunks per worker in flight
    (not a future for every file of a 100,000-file folder at once). Not executor.map: when
    a worker dies, map cancels the futures the broken pool is failing at the same moment,
    and on Python 3.11 that kills the pool's manager thread and the check hangs."""
    from collections import deque

    chunks = (files[start:start + CHUNK] for start in range(0, len(files), CHUNK))
    pending: Any = deque()
    for chunk in chunks:
        pending.append(executor.submit(_scan_chunk, chunk))
        if len(pending) >= 4 * workers:
            break
    while pending:
        results = pending.popleft().result()
        chunk = next(chunks, None)
        if chunk is not None:
            pending.append(executor.submit(_scan_chunk, chunk))
        yield from results


def _scan_chunk(chunk: list[tuple[str, bool]]) -> list[CheckResult]:
    return [_scan_path(item) for item in chunk]


def _workers(jobs: int | None, files: int) -> int:
    """Worker processes for ``files`` files: -j N (default every core), never more than
    there are chunks of files to give them. Each worker holds a scanner (tens of MB), and
    the pool starts them all at once: -j 200 on 20 files started 200 processes (30 s)."""
    wanted = jobs or os.cpu_count() or 1
    return max(1, min(wanted, -(-files // CHUNK)))


def _broken_pool() -> type[Exception]:
    from concurrent.futures.process import BrokenProcessPool

    return BrokenProcessPool


def _jobs(text: str) -> int:
    """-j's value: a whole number, 1 or more (0: every core, the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of worker processes, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 1 or more (0 or leaving it out: one per core), got {value}")
    return value


def _check_with_daemon(args: argparse.Namespace, inputs: list[tuple[str, str]]) -> int | None:
    """Scan through a running daemon, as ``rspamc``/``clamdscan`` do; None when there is
    none (or it runs another configuration), so the caller scans in-process. Loads nothing
    but the socket's name from the file: a check through the daemon never builds a scanner,
    unless the daemon cannot take a message, which is then scanned here (never dropped)."""
    from mailguard.daemon.pipeline import DaemonUnavailable, scan_in_order
    from mailguard.daemon.protocol import UnsafeSocketFolder
    from mailguard.daemon.where import client_socket

    try:
        socket, fingerprint = client_socket(args.config)
    except (OSError, ValueError):
        return None  # the in-process path reports an unreadable or broken file properly
    stdin_raw: bytes | None = None

    def load(path: str, most: int = -1) -> bytes:
        """A message to send to the daemon, at most ``most`` bytes of a file (standard input
        is read whole once: it is scanned here if the daemon cannot take it)."""
        nonlocal stdin_raw
        if path == "-":
            stdin_raw = sys.stdin.buffer.read() if stdin_raw is None else stdin_raw
            return stdin_raw
        with open_message(path, follow.get(path, True)) as handle:
            return handle.read(most)

    jobs = args.jobs or os.cpu_count() or 1
    wanted = [p for p, e, _ in inputs if not e and _names_in_utf8(p)]
    follow = {p: f for p, e, f in inputs if not e}
    try:
        answers = scan_in_order(socket, fingerprint, wanted, load,
                                connections=min(jobs, max(1, len(wanted))), before_wait=sys.stdout.flush)
    except DaemonUnavailable as exc:
        if args.daemon == "required":
            print(f"mailguard: {exc}", file=sys.stderr)
        elif isinstance(exc, UnsafeSocketFolder):  # someone may be listening in our place: say why it is not used
            print(f"mailguard: the daemon is not used: {exc}", file=sys.stderr)
        return None
    emit = _Emitter(args, len(inputs))
    emit.flush_each = False  # the pipeline flushes standard output before each wait
    local: Any = None
    scanned = iter(answers)
    for path, error, _ in inputs:
        if error:
            emit(CheckResult(path, None, error))
            continue
        answer = next(scanned) if _names_in_utf8(path) else None  # else scanned here
        if answer is not None and answer.error:
            emit(CheckResult(path, None, answer.error))
        elif answer is not None and answer.body:
            emit(CheckResult(path, None, body=answer.body, action=answer.action, tempfail=answer.tempfail))
        else:  # the daemon could not take it (gone, over its size limit): scan it here
            if local is None:
                from mailguard.scanner import Scanner

                config: Config | None = None
                try:
                    config = _config_from_args(args.config)
                    local = Scanner(config)
                except _config_error() as exc:
                    from mailguard.config import name_the_key
                    from mailguard.ops.errors import report

                    emit.progress.close()
                    return report("mailguard", name_the_key(config, str(exc)))
            if path == "-":
                emit(_scan_bytes(path, load(path), local))
            else:  # no more of the file read than the scanner examines ([limits] max_message_bytes)
                emit(_scan_path((path, follow[path]), local))
    emit.progress.close()
    return emit.exit_code


def _names_in_utf8(path: str) -> bool:
    """Whether the path can be sent to the daemon: its protocol is UTF-8 JSON, and a file
    name that is not UTF-8 (lone surrogates here) cannot be written in it (a traceback,
    every verdict after it lost); such a file is scanned in this process."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- config check


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate as start-up does (the same checks as `serve` and `milter`), then print the
    settings that differ from the built-in defaults (all of them with --all), as `postconf -n`."""
    from mailguard.ops import preflight
    from mailguard.ops.errors import report

    try:
        config = _config_from_args(args.config)
        from mailguard.scanner import Scanner

        scanner = Scanner(config)  # also compiles rules and signatures, so their errors show here
        user = preflight.ServiceUser.lookup(args.user)
    except _config_error() as exc:
        return report("mailguard", exc)
    except KeyError:
        return report("mailguard", f"--user {args.user}: no such user; create it first "
                                   f"(useradd --system {args.user}) or name the service's user")
    errors = preflight.check(config, args.way, user, scanner)
    if errors:
        return report("mailguard", "\n".join(errors))
    source = str(config.source) if config.source else "built-in defaults"
    settings = config.to_dict()
    from mailguard.config import Config, to_toml_value

    if not args.all:
        defaults = Config.default().to_dict()
        settings = {name: {k: v for k, v in values.items() if defaults[name].get(k) != v}
                    for name, values in settings.items()}
        settings = {name: values for name, values in settings.items() if values}
    if args.json:
        print(json.dumps(settings, indent=2, ensure_ascii=False))
        return EXIT_CLEAN
    what = "effective settings" if args.all else "settings that differ from the defaults (--all for every one)"
    print(f"# configuration is valid ({source}, checked for user {user.name}); {what}:")
    for name, values in settings.items():
        print(f"\n[{name}]")
        for key, value in values.items():
            print(f"{key} = {to_toml_value(value)}")
    return EXIT_CLEAN


def render_documented_example() -> str:
    """Every section and key with its default and explanation (examples/mailguard.toml)."""
    import textwrap

    from mailguard.config import all_schemas, to_toml_value

    lines = [
        "## mailguard configuration. Every key is optional; the values shown are the defaults.",
        "## Uncomment a key to change it. Check a file with: mailguard config check --config FILE",
    ]
    for name, schema in all_schemas().items():
        lines.append("")
        lines.append(f"[{name}]")
        for key, option in schema.items():
            for doc_line in textwrap.wrap(option.doc, 88) or [""]:
                lines.append(f"## {doc_line}".rstrip())
            if option.choices:
                lines.append(f"## One of: {', '.join(option.choices)}.")
            lines.append(f"# {key} = {to_toml_value(option.default)}")
    return "\n".join(lines) + "\n"


def cmd_config_example(args: argparse.Namespace) -> int:
    sys.stdout.write(render_documented_example())
    return EXIT_CLEAN


# --------------------------------------------------------------------------- main


# Commands whose options belong to their own modules (imported only when used).
DELEGATED = {
    "serve": ("mailguard.relay.cli", "run the SMTP relay in front of the practice's mail server"),
    "milter": ("mailguard.milter.cli", "run the milter for Postfix or Sendmail"),
    "quarantine": ("mailguard.quarantine.cli", "list, show, release and delete held messages"),
    "daemon": ("mailguard.daemon.cli", "scanning daemon: the scanner built once, used by check, serve and milter"),
    "setup": ("mailguard.ops.setup", "create the service user's folders and key (run as root; idempotent)"),
    "stats": ("mailguard.ops.metrics", "counters of the running relay or milter, for a person"),
}


class _PreflightWays:
    """``config check --for``'s choices, read from ``mailguard.ops.preflight`` only when
    argparse looks at them (that module imports ssl: not for every command)."""

    def _ways(self) -> tuple[str, ...]:
        from mailguard.ops.preflight import WAYS

        return WAYS

    def __contains__(self, value: object) -> bool:
        return value in self._ways()

    def __iter__(self) -> Iterator[str]:
        return iter(self._ways())

    def __len__(self) -> int:
        return len(self._ways())


def preflight_ways() -> _PreflightWays:
    return _PreflightWays()


CHECK_HELP = "scan message files or folders and report verdicts"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, told the terminal's width: left to find it, argparse imports shutil
    (and bz2, lzma and fnmatch with it) for every parser built, a twentieth of a check's
    start-up through the daemon. The width is found as shutil finds it."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", _terminal_columns() - 2)
        super().__init__(prog, **kwargs)


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else standard output's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def add_check_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """check's options, on the full parser's subcommand or on check's own parser."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="message files, folders (recursive), or - for stdin")
    parser.add_argument("--config", "-c", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("--json", action="store_true", help="one JSON object per message, one per line")
    parser.add_argument("-j", "--jobs", type=_jobs, default=0, metavar="N", help="parallel workers (default: all cores)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--daemon", choices=("auto", "off", "required"), default="auto",
        help="scan through a running `mailguard daemon` with the same configuration (auto: when there is one; "
             "required: exit 2 when there is none; off: always in this process)",
    )
    parser.set_defaults(func=cmd_check)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailguard", description="Email and attachment scanning gateway.",
                                     formatter_class=_HelpFormatter)
    from mailguard import __version__

    parser.add_argument("--version", action="version", version=f"mailguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_check_arguments(sub.add_parser("check", help=CHECK_HELP))

    config = sub.add_parser("config", help="validate or document the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_check = config_sub.add_parser("check", help="validate a configuration and print the effective settings")
    config_check.add_argument("--config", "-c", metavar="FILE")
    config_check.add_argument("--json", action="store_true")
    config_check.add_argument("--all", action="store_true", help="print every setting, defaults included")
    config_check.add_argument("--user", metavar="NAME",
                              help="check that this user (the service's) can reach the quarantine, key and TLS files "
                                   "(default: you)")
    config_check.add_argument("--for", dest="way", choices=preflight_ways(), default="all", metavar="WAY",
                              help="check what this way in needs: %(choices)s (default: all)")
    config_check.set_defaults(func=cmd_config_check)
    config_example = config_sub.add_parser("example", help="print every key with its default and explanation")
    config_example.set_defaults(func=cmd_config_example)

    for name, (module, help_text) in DELEGATED.items():
        command = sub.add_parser(name, help=help_text, add_help=False)
        command.add_argument("rest", nargs=argparse.REMAINDER)
        command.set_defaults(func=_delegate(module, name))
    return parser


def _delegate(module_name: str, command: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        import importlib

        module = importlib.import_module(module_name)
        main = getattr(module, "cli_main", None)
        if main is None:
            print(f"mailguard: '{command}' is not available in this version", file=sys.stderr)
            return EXIT_ERROR
        return int(main(list(args.rest), prog=f"mailguard {command}") or 0)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:  # argparse's REMAINDER would drop a leading --help or --config
        return _delegate(DELEGATED[argv[0]][0], argv[0])(argparse.Namespace(rest=argv[1:]))
    if argv and argv[0] == "check":  # the command run most often, per message: parse only its options
        parser = add_check_arguments(argparse.ArgumentParser(prog="mailguard check", description=CHECK_HELP,
                                                                formatter_class=_HelpFormatter))
        args = parser.parse_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except _config_error() as exc:
        from mailguard.ops.errors import report

        return report("mailguard", exc)
    except BrokenPipeError:
        return EXIT_ERROR


def run() -> None:
    """The ``mailguard`` command (and ``python -m mailguard``): ``main()``, then, after
    ``check``, an exit that skips tearing the interpreter down. A built scanner is about a
    million objects (phrase and brand tables, caches) that stay reachable from modules;
    freeing them one by one at exit took 0.35 s of a 1.0 s ``mailguard check one.eml``.
    The exit handlers still run (logging's flush, temporary files) and the output is
    flushed; check leaves no thread or process pool behind (its pool is shut down)."""
    code = main()
    if sys.argv[1:2] != ["check"]:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away: the exit code still says it
        code = code or EXIT_ERROR
    try:
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
