"""Where the daemon's socket is: read by ``mailguard check`` from the raw file, so a check
through the daemon imports neither the option schemas nor the analyzers."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping


def default_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the daemon listens when ``[daemon] socket`` is empty."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        return Path(runtime) / "mailguard" / "daemon.sock"
    if os.geteuid() == 0:
        return Path("/run/mailguard/daemon.sock")
    return Path(f"/tmp/mailguard-{os.geteuid()}") / "daemon.sock"


def socket_path(settings: Mapping[str, Any], base: Path | None = None) -> Path:
    """The socket of ``[daemon]`` settings (a relative path is relative to the config file)."""
    value = str(settings.get("socket") or "").strip()
    if not value:
        return default_socket_path()
    path = Path(value).expanduser()
    return path if path.is_absolute() or base is None else base / path
