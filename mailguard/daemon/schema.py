"""The [daemon] keys: where ``mailguard daemon`` listens, how many workers it forks, and
its limits. Read by ``mailguard.config`` without importing the server; ``socket_path``
is also read by ``mailguard check`` from the raw file, so a check that talks to a daemon
never has to import the analyzers."""
from __future__ import annotations

from typing import Mapping

from mailguard.daemon.where import default_socket_path, socket_path
from mailguard.options import Option

__all__ = ["CONFIG_SCHEMA", "default_socket_path", "socket_path"]

CONFIG_SCHEMA: Mapping[str, Option] = {
    "socket": Option(
        "", "str",
        "Unix socket the daemon listens on and `mailguard check` looks for. Empty: "
        "$XDG_RUNTIME_DIR/mailguard/daemon.sock, else /run/mailguard/daemon.sock for root, else "
        "/tmp/mailguard-UID/daemon.sock. The socket is made readable and writable by its owner only "
        "(socket_mode); its folder is created with mode 0700 when missing.",
    ),
    "socket_mode": Option(
        "0600", "str",
        "Permissions of the socket, in octal: who may submit mail to be scanned and read the verdicts. "
        "\"0660\" lets the socket's group (e.g. the Postfix or milter user) use it too.",
    ),
    "workers": Option(
        0, "int",
        "Worker processes forked after the scanner is built; each scans one connection's messages at a "
        "time. 0: one per core.",
        minimum=0,
    ),
    "max_message_bytes": Option(
        67_108_864, "int", "Largest message one request may carry, in bytes; a larger one is refused with an error.",
        minimum=1024,
    ),
    "idle_timeout_s": Option(
        300, "int",
        "A connection that sends nothing for this long is closed, so an abandoned client cannot hold a worker.",
        minimum=1,
    ),
    "max_requests_per_worker": Option(
        0, "int",
        "A worker is replaced by a fresh fork after this many messages (0: never), bounding the damage of a "
        "slow leak in a library.",
        minimum=0,
    ),
}
