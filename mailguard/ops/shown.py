"""Text a hostile message chose (subject, sender, message id, file names, queue id), and
file names, as shown to a person: on a terminal (``mailguard check``, ``mailguard
quarantine show/list/audit``) or in a digest mail. It must not be able to act on the
reader's terminal (escape sequences) or add lines of its own to what mailguard says about
the message (a forged "Status: released" or "- [SAFE -10]")."""
from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """Control characters (terminal escape sequences that could retitle or rewrite the
    reviewer's terminal) and invisible format characters (right-to-left overrides that
    disguise a subject or a file name) as visible \\uXXXX escapes; line breaks and tabs kept."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs")
        else f"\\u{ord(ch):04x}"
        for ch in text
    )


def inline(text: str) -> str:
    """``text`` as one line: ``printable``, and line breaks and tabs shown as \\uXXXX too.
    A subject, sender, file name or queue id can carry CR/LF (an RFC 2047 encoded word
    decodes to anything); printed as is, it would add lines of its own to ``show`` and
    ``audit``, such as a forged "Status: released" or "Verdict: ACCEPT"."""
    if text.isprintable():  # nearly always: no line break, tab or control character in it
        return text
    return "".join(f"\\u{ord(ch):04x}" if ch in "\r\n\t\v\f" else ch for ch in printable(text))
