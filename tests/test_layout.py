"""The package layout a newcomer relies on: one package per way in, the core at the top,
``python -m mailguard`` as the command, and loading a configuration that touches only the
ways in's key declarations."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mailguard

PACKAGE = Path(mailguard.__file__).parent


def test_python_dash_m_lists_the_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "mailguard", "--help"], capture_output=True, text=True, check=True)
    for command in ("check", "config", "serve", "milter", "quarantine"):
        assert command in out.stdout


def test_each_way_in_is_a_package_and_the_top_stays_small() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert not [n for n in top if n.startswith(("relay_", "milter_", "quarantine_"))]
    assert len(top) <= 16, top
    for package in ("relay", "milter", "quarantine", "analyzers/lookalike", "analyzers/language"):
        assert (PACKAGE / package / "__init__.py").is_file()


def test_loading_a_configuration_imports_only_the_schemas() -> None:
    code = (
        "import sys; from mailguard.config import Config; Config.default();"
        "print(' '.join(m for m in sys.modules if m.startswith(('mailguard.relay', 'mailguard.milter', 'mailguard.quarantine'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert loaded <= {
        "mailguard.relay", "mailguard.relay.schema", "mailguard.relay.outbound_schema",
        "mailguard.milter", "mailguard.milter.schema",
        "mailguard.quarantine", "mailguard.quarantine.schema",
    }, loaded


def test_package_exports_resolve() -> None:
    from mailguard.milter import Engine, MilterServer
    from mailguard.quarantine import QuarantineError, open_quarantine
    from mailguard.relay import RelayServer, cli_main

    assert all(callable(x) for x in (Engine, MilterServer, QuarantineError, open_quarantine, RelayServer, cli_main))
