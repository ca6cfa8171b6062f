"""mailguard: an email and attachment scanning gateway for small healthcare practices.

Library use::

    import mailguard
    scanner = mailguard.Scanner()                       # built-in defaults
    verdict = scanner.scan(raw_bytes)
    verdict.action, verdict.score, verdict.findings
"""
from __future__ import annotations

from mailguard.config import Config, ConfigError, load_config
from mailguard.message import ParsedMessage, parse
from mailguard.model import Action, AnalyzerError, Envelope, Finding, Verdict
from mailguard.scanner import Scanner

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AnalyzerError",
    "Config",
    "ConfigError",
    "Envelope",
    "Finding",
    "ParsedMessage",
    "Scanner",
    "Verdict",
    "load_config",
    "parse",
    "__version__",
]
