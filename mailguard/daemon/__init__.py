"""``mailguard daemon``: the scanner built once, worker processes forked after it is built.

Building a ``Scanner`` costs about a second of CPU (rules, automata, YARA); scanning one
message costs a few milliseconds. A daemon pays the first once: it builds the scanner,
then forks its workers, which share the built tables copy-on-write, and answers scan
requests on a Unix socket. ``mailguard check`` uses a running daemon when there is one
(as ``rspamc`` and ``clamdscan`` do) and scans in-process otherwise.

Where to look: ``schema`` the ``[daemon]`` keys; ``protocol`` the wire format; ``server``
the prefork server (master and workers); ``client`` the side ``check`` uses; ``cli`` the
command line.
"""
from __future__ import annotations

from mailguard.lazy import lazy_exports

TYPE_CHECKING = False  # not typing's: `mailguard check` imports this package (see mailguard/__init__.py)

if TYPE_CHECKING:
    from mailguard.daemon.cli import cli_main
    from mailguard.daemon.client import DaemonClient, DaemonUnavailable
    from mailguard.daemon.schema import CONFIG_SCHEMA, socket_path
    from mailguard.daemon.server import DaemonServer

_EXPORTS = {
    "CONFIG_SCHEMA": "schema",
    "DaemonClient": "client",
    "DaemonServer": "server",
    "DaemonUnavailable": "client",
    "cli_main": "cli",
    "socket_path": "schema",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
