"""Envelope addresses a stranger sends: what the relay refuses before it believes a domain.

A recipient such as ``user%evil.example@practice.example``, ``evil.example!user@practice.example``
or ``"user@evil.example"@practice.example`` is "in" practice.example for the relay-domain
check, but a downstream server that treats practice.example as local (and trusts mailguard,
as a content-filter arrangement does) may rewrite it by the old %-hack, UUCP bang path or
quoted-route rules and deliver to user@evil.example: an open relay by composition. Postfix
refuses these forms from untrusted clients (``allow_untrusted_routing = no``); so does the
relay, and it passes an accepted address on only in the canonical form (dot-atom local part
unquoted, anything else quoted), so the downstream cannot read it differently.
"""
from __future__ import annotations

import re

# C0 controls, DEL: never legitimate in an envelope address or parameter (a NUL truncates
# strings in C programs downstream; CR/LF are line ends).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ROUTING = frozenset("%!@")
_SOURCE_ROUTE = re.compile(r"^\s*<\s*@")


def has_control_characters(text: str) -> bool:
    return bool(_CONTROL.search(text))


# aiosmtpd decodes command arguments as UTF-8 with "surrogateescape": each byte of an
# invalid sequence (a lone \xff, Latin-1 text, a truncated character) becomes a lone
# surrogate, which no encoder accepts later: such an address cannot be forwarded, stored
# as text or logged as it was sent.
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_invalid_utf8(text: str) -> bool:
    """The argument held bytes that are not UTF-8 (RFC 6531 allows UTF-8 only)."""
    return bool(_SURROGATE.search(text))


def has_source_route(argument: str) -> bool:
    """``<@relay.example:user@domain>`` (RFC 5321 obsolete source route) in the raw argument
    after ``TO:``; the parser silently drops the route, so it is looked for here."""
    return bool(_SOURCE_ROUTE.match(argument))


def local_part(address: str) -> str:
    """The local part with RFC 5321 quoting removed: ``"a\\"b"@x`` gives ``a"b``."""
    local = address.rpartition("@")[0]
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def routing_refusal(address: str) -> str | None:
    """Why a recipient from an untrusted client is refused, or None when it is plain."""
    local = local_part(address)
    found = sorted(_ROUTING.intersection(local))
    if not found:
        return None
    return "quoted local part with @" if "@" in found else f"{' and '.join(found)} in the local part"
