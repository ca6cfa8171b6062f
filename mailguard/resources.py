"""Where the shipped detection data lives.

``rules/`` and ``yara/`` sit at the top of the source tree so operators can read them, and
are copied into the wheel as ``mailguard/rules`` and ``mailguard/yara``. This finds them in
either layout, so a source checkout and an installed wheel behave the same.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The built-in data folder ``name`` ("rules" or "yara")."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"mailguard's built-in '{name}' folder is missing (looked in {_PACKAGE_DIR / name} and "
        f"{_PACKAGE_DIR.parent / name}); reinstall mailguard"
    )


def rules_file(filename: str) -> Path:
    """A file in the built-in ``rules/`` folder."""
    return data_dir("rules") / filename
