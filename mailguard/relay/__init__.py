"""``mailguard serve``: the SMTP relay, a before-queue proxy in front of the practice's server.

Where to look: ``server`` listens and bounds connections; ``handler`` takes each SMTP
command and decides every reply (250, 451, 550 ...); ``pool`` scans off the event loop;
``forward`` talks to the downstream server; ``verify`` asks it about recipients;
``settings`` turns the ``[relay]`` keys (``schema``) into checked values; ``cli`` is the
command line.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mailguard.lazy import lazy_exports

if TYPE_CHECKING:
    from mailguard.relay.cli import cli_main
    from mailguard.relay.handler import RelayHandler, RelayState, build_state
    from mailguard.relay.schema import CONFIG_SCHEMA
    from mailguard.relay.server import RelayServer, run
    from mailguard.relay.settings import RelaySettings

_EXPORTS = {
    "CONFIG_SCHEMA": "schema",
    "RelayHandler": "handler",
    "RelayServer": "server",
    "RelaySettings": "settings",
    "RelayState": "handler",
    "build_state": "handler",
    "cli_main": "cli",
    "run": "server",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
