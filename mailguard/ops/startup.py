"""The start-up steps `serve` and `milter` share, each turning its failure into one-line
errors (``StartupFailed``) instead of a traceback: the preflight checks, the log file, the
quarantine, the metrics endpoint."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from mailguard.config import Config
from mailguard.ops.errors import listen_error, path_error


class StartupFailed(Exception):
    """One or more one-line errors; nothing was started."""


def leave_unreachable_folder() -> None:
    """Move to / when the working folder cannot be entered. Scanning processes are spawned
    and re-enter their parent's working folder first; started from a folder the service user
    cannot enter (root's home or a root-only temporary folder, via sudo -u or setpriv), every
    one of them died at start and messages waited for a scanner that never came. Paths from
    the configuration are already absolute (relative to its file), so nothing else moves."""
    try:
        reachable = os.access(os.getcwd(), os.X_OK)
    except OSError:  # the folder was removed
        reachable = False
    if not reachable:
        os.chdir("/")


def prepare(config: Config, way: str, scanner: Any = None) -> None:
    """The checks `config check` makes, then logging as configured."""
    from mailguard.logsetup import setup_logging
    from mailguard.ops.preflight import check

    leave_unreachable_folder()

    errors = check(config, way, scanner=scanner)
    if errors:
        raise StartupFailed("\n".join(errors))
    probe_listen(config, way)
    try:
        setup_logging(config.section("logging"), config.resolve_path)
    except OSError as exc:
        raise StartupFailed(f"[logging] file: {path_error(exc, 'the log file')}") from None


@contextlib.contextmanager
def opening_quarantine() -> Iterator[None]:
    from mailguard.quarantine import QuarantineError

    try:
        yield
    except QuarantineError as exc:
        raise StartupFailed(f"cannot open the quarantine: {exc}") from None
    except OSError as exc:
        raise StartupFailed(path_error(exc, "the quarantine")) from None


def start_metrics(config: Config, way: str) -> Any:
    """The [metrics] endpoint (None when off)."""
    from mailguard.ops.metrics import start_metrics as start

    try:
        return start(config, way)
    except OSError as exc:
        raise StartupFailed(listen_error(exc, f"[metrics] listen in {config.source or 'the configuration'}",
                                         config.section("metrics")["listen"])) from None


def probe_listen(config: Config, way: str) -> None:
    """Bind the listening address once before anything heavy starts (worker processes, the
    metrics endpoint), so a port in use or a privileged port is one line, at once."""
    import socket

    where = f"in {config.source or 'the configuration'}"
    if way == "relay":
        text, key = config.section("relay")["listen"], "[relay] listen"
    else:
        spec = config.section("milter")["listen"]
        if not spec.startswith(("inet:", "inet6:")):
            return
        text, key = spec.partition(":")[2], "[milter] listen"
        if "@" in text:
            port_text, _, host_text = text.partition("@")
            text = f"{host_text}:{port_text}"
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except socket.gaierror:
        return  # a name: the server's own bind reports it
    except OSError as exc:
        raise StartupFailed(listen_error(exc, f"{key} {where}", text.strip())) from None
