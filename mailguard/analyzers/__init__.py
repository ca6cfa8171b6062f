"""Analyzer registry: the built-in analyzers plus any installed through the
``mailguard.analyzers`` entry-point group (a third party's package declares
``[project.entry-points."mailguard.analyzers"] myname = "pkg.module:MyAnalyzer"``)."""
from __future__ import annotations

import importlib
import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.analyzers.base import Analyzer

ENTRY_POINT_GROUP = "mailguard.analyzers"

# Order matters only for the report: cheap, explainable checks first.
BUILTIN_ANALYZERS = {
    "authcheck": "mailguard.analyzers.authcheck:AuthcheckAnalyzer",
    "lookalike": "mailguard.analyzers.lookalike:LookalikeAnalyzer",
    "language": "mailguard.analyzers.language:LanguageAnalyzer",
    "links": "mailguard.analyzers.links:LinksAnalyzer",
    "sender": "mailguard.analyzers.sender:SenderAnalyzer",
    "filetype": "mailguard.analyzers.filetype:FiletypeAnalyzer",
    "macros": "mailguard.analyzers.macros:MacrosAnalyzer",
    "signatures": "mailguard.analyzers.signatures:SignaturesAnalyzer",
    "phi": "mailguard.analyzers.phi:PhiAnalyzer",
}


def _load(target: str) -> type["Analyzer"]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@lru_cache(maxsize=1)
def analyzer_classes() -> dict[str, type["Analyzer"]]:
    """Name to class, built-ins first. A plug-in cannot replace a built-in by name."""
    classes = {name: _load(target) for name, target in BUILTIN_ANALYZERS.items()}
    for ep in _plugin_entry_points():
        if ep.name in classes:
            continue
        cls = ep.load()
        if not getattr(cls, "name", ""):
            cls.name = ep.name
        classes[ep.name] = cls
    return classes


def _plugin_entry_points() -> list[Any]:
    """The entry points of our group. importlib.metadata costs a cold ``mailguard check``
    40 ms to import before it reads every installed distribution's metadata; it is asked
    only when some distribution could declare one: when an entry_points.txt in a
    ``*.dist-info`` or ``*.egg-info`` folder on ``sys.path`` (which is where its finder
    looks) names the group, or when something it would read is not such a folder (a zip
    file on the path, another finder of distributions)."""
    if not _may_declare_plugins():
        return []
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def _may_declare_plugins() -> bool:
    from importlib.machinery import PathFinder

    if any(hasattr(f, "find_distributions") and f is not PathFinder for f in sys.meta_path):
        return True
    marker = f"[{ENTRY_POINT_GROUP}]".encode()
    for entry in sys.path:
        folder = entry or "."
        if not os.path.isdir(folder) or folder.endswith(".egg"):
            if os.path.exists(folder):
                return True  # a zip file or an egg: importlib.metadata reads distributions inside
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(folder, name, "entry_points.txt"), "rb") as handle:
                        if marker in handle.read():
                            return True
                except OSError:
                    continue
    return False
