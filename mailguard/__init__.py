"""mailguard: an email and attachment scanning gateway for small healthcare practices.

Library use::

    import mailguard
    scanner = mailguard.Scanner()                       # built-in defaults
    verdict = scanner.scan(raw_bytes)
    verdict.action, verdict.score, verdict.findings

The names below are imported when first used (PEP 562), so a program that needs only a
part (``mailguard check`` talking to a daemon) does not pay for importing the scanner.
"""
from __future__ import annotations

from mailguard.lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing (and the regular-expression and enum modules it
# pulls in) is a tenth of `mailguard check`'s start-up through the daemon; type checkers treat
# a name TYPE_CHECKING as true all the same.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from mailguard.config import Config, ConfigError, load_config
    from mailguard.message import ParsedMessage, parse
    from mailguard.model import Action, AnalyzerError, Envelope, Finding, Verdict
    from mailguard.scanner import Scanner

__version__ = "0.1.0"

_EXPORTS = {
    "Action": "model",
    "AnalyzerError": "model",
    "Config": "config",
    "ConfigError": "config",
    "Envelope": "model",
    "Finding": "model",
    "ParsedMessage": "message",
    "Scanner": "scanner",
    "Verdict": "model",
    "load_config": "config",
    "parse": "message",
}
__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__ = lazy_exports(__name__, _EXPORTS)
