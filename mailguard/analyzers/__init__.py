"""Analyzer registry: the built-in analyzers plus any installed through the
``mailguard.analyzers`` entry-point group (a third party's package declares
``[project.entry-points."mailguard.analyzers"] myname = "pkg.module:MyAnalyzer"``)."""
from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

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
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in classes:
            continue
        cls = ep.load()
        if not getattr(cls, "name", ""):
            cls.name = ep.name
        classes[ep.name] = cls
    return classes
