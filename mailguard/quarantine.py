"""Placeholder for the quarantine (its issue builds it)."""
from __future__ import annotations

from typing import Mapping

from mailguard.config import Option

CONFIG_SCHEMA: Mapping[str, Option] = {}
