"""``mailguard milter``: the scanner behind the milter protocol, for Postfix and Sendmail.

Where to look: ``server`` accepts the MTA's connections; ``session`` follows one of them
through the protocol (``protocol`` is the wire format); ``engine`` scans and quarantines
off the event loop; ``actions`` turns a verdict into milter replies; ``schema`` holds the
``[milter]`` keys and ``cli`` the command line.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mailguard.lazy import lazy_exports

if TYPE_CHECKING:
    from mailguard.milter.cli import cli_main
    from mailguard.milter.engine import Engine, Listen, MilterSettings
    from mailguard.milter.schema import CONFIG_SCHEMA
    from mailguard.milter.server import MilterServer, serve
    from mailguard.milter.session import Session

_EXPORTS = {
    "CONFIG_SCHEMA": "schema",
    "Engine": "engine",
    "Listen": "engine",
    "MilterServer": "server",
    "MilterSettings": "engine",
    "Session": "session",
    "cli_main": "cli",
    "serve": "server",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
