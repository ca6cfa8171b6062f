"""Package exports loaded on first use (PEP 562).

``mailguard.relay``, ``mailguard.milter`` and ``mailguard.quarantine`` export their public
names from the package, yet loading a configuration imports only their ``schema`` modules:
a package's ``__init__`` names where each export lives, and the module is imported when
the name is first read, not when the package is.
"""
from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing is not imported at run time: see mailguard/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that serves ``exports`` (name -> submodule)."""

    def __getattr__(name: str) -> Any:
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{submodule}"), name)

    return __getattr__
