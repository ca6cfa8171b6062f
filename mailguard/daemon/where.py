"""Where the daemon's socket is. ``mailguard check`` finds it before it imports anything
else (``client_socket``): its start-up is most of what one message through the daemon
costs, so this module imports neither pathlib, typing nor, when it can help it, tomllib."""
from __future__ import annotations

import hashlib
import json
import os

from mailguard.resources import cache_folder, trusted
from mailguard.daemon.protocol import DaemonUnavailable, UnsafeSocketFolder, config_fingerprint

TYPE_CHECKING = False  # typing and pathlib only for type checkers (see above)
if TYPE_CHECKING:
    import socket
    from pathlib import Path
    from typing import Any, Mapping

_SOCKET_CACHE = "daemon-socket"  # <cache folder>/daemon-socket-<hash of the config's path>.json


def default_socket_file(environ: Mapping[str, str] | None = None) -> str:
    """Where the daemon listens when ``[daemon] socket`` is empty."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        return os.path.join(runtime, "mailguard", "daemon.sock")
    if os.geteuid() == 0:
        return "/run/mailguard/daemon.sock"
    return os.path.join(_fallback_folder(), "daemon.sock")  # see unsafe_socket_folder


def unsafe_socket_folder(path: str | Path) -> str | None:
    """Why the folder of the daemon's socket cannot be trusted, or None when it can.

    Whoever may write a socket's folder may replace the socket with one of their own, and
    a client then sends them its messages (patient data) and takes their verdicts. The
    fallback default, ``/tmp/mailguard-UID``, is in a folder everyone may write, so another
    user could make it first; it is trusted, as tmux trusts ``/tmp/tmux-UID``, only when it
    is a real folder of this user that nobody else may enter. Any other folder must not be
    writable by everyone without the sticky bit (that of /tmp, which stops others removing
    our socket); beyond that, a configured path is the operator's choice (a group-shared
    /run/mailguard for the milter's user, say). A folder that does not exist yet is fine:
    the daemon makes it private."""
    import stat

    folder = os.path.dirname(os.path.abspath(str(path)))
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"the daemon's socket folder {folder} cannot be checked: {exc.strerror or exc}"
    if folder == _fallback_folder():
        if not stat.S_ISDIR(info.st_mode):
            return (f"the daemon's socket folder {folder} is not a folder (a link or a file): someone else may have "
                    "made it; remove it, and the daemon makes its own")
        if info.st_uid != os.geteuid():
            return (f"the daemon's socket folder {folder} belongs to user id {info.st_uid}, not to this user "
                    f"({os.geteuid()}): someone else made it; remove it, and the daemon makes its own")
        if info.st_mode & 0o077:
            return (f"the daemon's socket folder {folder} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                    f"chmod 700 {folder}")
        return None
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        return (f"the daemon's socket folder {folder} may be written by every user, so anyone could replace the "
                "socket; set [daemon] socket in a folder only mailguard's users may write")
    return None


def connect_daemon(path: str | Path, timeout_s: float) -> "socket.socket":
    """A blocking connection to the daemon's socket at ``path``: UnsafeSocketFolder when its
    folder cannot be trusted (``unsafe_socket_folder``: nothing is sent to it),
    DaemonUnavailable when nobody answers there."""
    import socket

    unsafe = unsafe_socket_folder(path)
    if unsafe:
        raise UnsafeSocketFolder(unsafe)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"no daemon on {path}: {exc.strerror or exc}") from None
    return sock


def _fallback_folder() -> str:
    return f"/tmp/mailguard-{os.geteuid()}"


def socket_file(settings: Mapping[str, Any], base: str | None = None) -> str:
    """The socket of ``[daemon]`` settings (a relative path is relative to the config file's folder)."""
    value = str(settings.get("socket") or "").strip()
    if not value:
        return default_socket_file()
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) or base is None else os.path.join(base, path)


def default_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    from pathlib import Path

    return Path(default_socket_file(environ))


def socket_path(settings: Mapping[str, Any], base: Path | None = None) -> Path:
    """``socket_file`` as a Path, for the daemon and the relay."""
    from pathlib import Path

    return Path(socket_file(settings, None if base is None else str(base)))


def client_socket(config_path: str | None) -> tuple[str, str]:
    """(the daemon's socket, the configuration's fingerprint) for a client given
    ``--config``. The socket is what the file's ``[daemon] socket`` says, read with tomllib
    the first time and then from a small cache entry keyed by the file's path and content
    hash (tomllib and the typing module it needs are a fifth of the client's start-up).
    A file that never says "daemon" has no [daemon] table: the default socket, unread.
    Whatever the answer, the daemon on that socket must report the same fingerprint
    or the message is scanned in-process, so a stale or wrong entry costs time, never a
    verdict. Raises OSError when the file cannot be read and ValueError when it is not TOML."""
    if not config_path:
        return default_socket_file(), config_fingerprint(None)
    with open(config_path, "rb") as handle:
        data = handle.read()
    fingerprint = config_fingerprint(config_path, data)
    if b"daemon" not in data:
        return default_socket_file(), fingerprint
    entry = _cache_entry(fingerprint)
    written = _read_entry(entry, fingerprint) if entry else None
    if written is not None:
        return written or default_socket_file(), fingerprint
    import tomllib

    section = tomllib.loads(data.decode("utf-8")).get("daemon", {})
    value = str(section.get("socket") or "").strip() if isinstance(section, dict) else ""
    folder = os.path.dirname(fingerprint.rpartition(":")[0])  # the file's resolved path, in its fingerprint
    resolved = socket_file({"socket": value}, folder) if value else ""
    if entry:
        _write_entry(entry, fingerprint, resolved)
    return resolved or default_socket_file(), fingerprint


def _cache_entry(fingerprint: str) -> str | None:
    folder = cache_folder()
    if folder is None:
        return None
    config_file = fingerprint.rpartition(":")[0]
    name = hashlib.sha256(config_file.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(folder, f"{_SOCKET_CACHE}-{name}.json")


def _read_entry(entry: str, fingerprint: str) -> str | None:
    """The cached socket ("" for the default) when the entry is this user's and was
    written for this very content; None otherwise."""
    if not trusted(entry):
        return None
    try:
        with open(entry, "rb") as handle:
            cached = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("config") != fingerprint or not isinstance(cached.get("socket"), str):
        return None
    return cached["socket"]


def _write_entry(entry: str, fingerprint: str, socket: str) -> None:
    """Written whole (a temporary file renamed over the entry); a folder that cannot be
    written only means reading the file again next time."""
    folder = os.path.dirname(entry)
    temporary = f"{entry}.{os.getpid()}.tmp"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(json.dumps({"config": fingerprint, "socket": socket}).encode())
        os.replace(temporary, entry)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
