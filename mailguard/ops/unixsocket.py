"""A service's listening unix socket, bound the same careful way by the daemon and the milter."""
from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

PROBE_TIMEOUT_S = 2.0  # how long a connect to an existing socket may take before it counts as an error


class SocketPathTaken(Exception):
    """The socket's path is taken: by a socket some program answers on, or by a file that
    is not a socket."""


def bind_unix_socket(path: Path, mode: int, *, listener: str, setting: str) -> socket.socket:
    """A listening (blocking) unix socket at ``path`` with permissions ``mode``.

    A socket some program still answers on is not taken over: a second service started by
    mistake would otherwise unlink it and take its connections unseen. A stale one, left
    by a process that did not stop cleanly, is replaced; anything that is not a socket is
    left alone. The socket is created under a umask that lets nobody connect until ``mode``
    is set. ``listener`` names who would be answering ("a daemon") and ``setting`` where
    the path comes from ("[daemon] socket"), for the messages. The folder must exist."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SocketPathTaken(f"{path} exists and is not a socket; move it away or choose another {setting}")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(PROBE_TIMEOUT_S)
            probe.connect(str(path))
            raise SocketPathTaken(f"{listener} is already listening on {path}; stop it first or choose another {setting}")
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: nobody answers on it
        except OSError as exc:  # no permission to connect, or no answer in time: say which socket
            exc.filename = exc.filename or str(path)
            raise
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which others may connect
    try:
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        exc.filename = exc.filename or str(path)  # bind() names no file
        raise
    return sock
