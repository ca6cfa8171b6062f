"""The [dns] keys (declared beside [auth] in ``schema``): one module per section for the loader."""
from __future__ import annotations

from mailguard.auth.schema import DNS_SCHEMA as CONFIG_SCHEMA

__all__ = ["CONFIG_SCHEMA"]
