"""The quarantine: held messages kept encrypted, reviewable, releasable, and audited.

Where to look: ``store`` is the ``Quarantine`` the relay, the milter and the command use;
``entry`` what a held message looks like to them; ``crypto`` the key file and sealing;
``backend``, ``sql``, ``sqlite`` and ``postgres`` where entries and the audit log are
kept; ``smtp`` delivers releases; ``notify`` sends digests; ``schema`` holds the
``[quarantine]`` keys and ``cli`` the ``mailguard quarantine`` command.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mailguard.lazy import lazy_exports

if TYPE_CHECKING:
    from mailguard.quarantine.cli import cli_main
    from mailguard.quarantine.entry import Entry, parse_since
    from mailguard.quarantine.schema import CONFIG_SCHEMA
    from mailguard.quarantine.store import Quarantine, QuarantineError, open_quarantine

_EXPORTS = {
    "CONFIG_SCHEMA": "schema",
    "Entry": "entry",
    "Quarantine": "store",
    "QuarantineError": "store",
    "cli_main": "cli",
    "open_quarantine": "store",
    "parse_since": "entry",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
