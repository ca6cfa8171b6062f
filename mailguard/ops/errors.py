"""One line per failure, for the person at the console: which file, key, port or path, what
is wrong and what to do. Never a traceback for an everyday mistake; the exit status is 2."""
from __future__ import annotations

import errno
import os
import sys
from typing import TextIO

EXIT_ERROR = 2


def report(prog: str, error: BaseException | str, out: TextIO | None = None) -> int:
    """Print each line of ``error`` prefixed with the program name; return exit status 2."""
    out = out or sys.stderr
    for line in str(error).splitlines() or [type(error).__name__]:
        out.write(f"{prog}: {line}\n")
    out.flush()
    return EXIT_ERROR


def listen_error(exc: OSError, where: str, address: str) -> str:
    """Why a listening socket could not be opened, and what to do about it."""
    port = address.rpartition(":")[2]
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {address}: the address is already in use by another program; "
                f"find it with `ss -ltnp 'sport = :{port}'` and stop it, or change {where}")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {address}: ports below 1024 need root or CAP_NET_BIND_SERVICE; "
                f"run it from the systemd unit (AmbientCapabilities=CAP_NET_BIND_SERVICE) or use a port "
                f"above 1023 in {where}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {address}: no network interface has that address; change {where}"
    return f"cannot listen on {address}: {exc.strerror or exc}; check {where}"


def path_error(exc: OSError, what: str, hint: str = "") -> str:
    """An OSError about a file or folder, naming the path and the user who tried."""
    path = exc.filename or "?"
    user = current_user()
    if isinstance(exc, PermissionError):
        fix = hint or f"make it readable and writable by {user} (e.g. `mailguard setup --user {user}`)"
        return f"{path}: permission denied for user {user} ({what}); {fix}"
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file or folder ({what}); {hint or 'create it or correct the path'}"
    return f"{path}: {exc.strerror or exc} ({what}){'; ' + hint if hint else ''}"


def current_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
