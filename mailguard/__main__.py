"""``python -m mailguard``: the same command as ``mailguard``."""
from __future__ import annotations

from mailguard.cli import run

run()
