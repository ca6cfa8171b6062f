"""Link evidence: where the links in a message really go, compared with what they show.

Collects, per message, links to lookalikes of protected domains, links whose visible text
shows one domain while they go to another, links to bare internet addresses (also written
in decimal or hex) and links to punycode hosts. Wording and scores are the analyzer's; this
module only finds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import unquote

from mailguard.analyzers.lookalike.brands import Ownership
from mailguard.analyzers.lookalike.domains import DomainMatcher, Match, is_ip_host
from mailguard.message import Link, ParsedMessage, idna_to_ascii, idna_to_unicode, iter_all_messages, url_host

# Hosts that browsers read as an internet address: decimal (3232235777), hex (0xc0a80001)
# or dotted forms with hex or octal parts (0xc0.0250.1.1).
_OBFUSCATED_IP = re.compile(
    r"^(?:\d{8,10}|0x[0-9a-f]{1,8}|(?:(?:0x[0-9a-f]+|0[0-7]*|\d+)\.){1,3}(?:0x[0-9a-f]+|0[0-7]*|\d+))$", re.I
)
# [a-z\u00a1-\uffff] in any case, written as what it leaves out: 12 ms less to compile (see brands._LABEL_CHAR)
_TLD_FIRST_ANY_CASE = r"[^\x00-\x40\x5b-\x60\x7b-\xa0\U00010000-\U0010ffff]"
# Link text that is itself a web address or a bare domain name.
_DOMAIN_TEXT = re.compile(
    rf"^(?:https?://)?((?:[\w-]+\.)+{_TLD_FIRST_ANY_CASE}[\w-]{{1,62}})\.?(?:[:/?#].*)?$", re.IGNORECASE | re.UNICODE
)


def is_ip_like(host: str) -> bool:
    return is_ip_host(host) or bool(_OBFUSCATED_IP.match(host))


def real_host(host: str) -> str:
    """The host a browser goes to: percent escapes in a host name are decoded before it is
    looked up ("%6d%69%63...com" is "mic...com"), so they are decoded here too."""
    if "%" not in host:
        return host
    return unquote(host).strip().lower().rstrip(".")


def browser_host(link: Link) -> str:
    """The host a browser opens for a link: percent escapes decoded, and a backslash read as
    the "/" it is to a browser ("https://x.example\\@microsoft.com/" goes to x.example, not
    to microsoft.com as a reading by the standard library's rules says)."""
    host = link.host
    if "\\" in link.url[:600]:
        found = _AUTHORITY.match(link.url)
        if found is not None:
            host = found.group(1).rpartition("@")[2].partition(":")[0].strip().lower().rstrip(".") or host
    return real_host(host)


# The authority of an http(s) address: what lies between "//" and the first / ? # or
# backslash (which browsers read as /).
_AUTHORITY = re.compile(r"^\s*https?:[/\\]{2}([^/?#\\]{1,512})", re.I)


def userinfo_domain(url: str) -> str:
    """The domain written before an "@" in a web address ("https://microsoft.com@x.example/"):
    a browser ignores it (it is a user name) and goes to what follows. "" when there is none."""
    if "@" not in url[:600]:
        return ""
    found = _AUTHORITY.match(url)
    if found is None or "@" not in found.group(1):
        return ""
    user = unquote(found.group(1).rpartition("@")[0]).strip().lower()
    for piece in re.split(r"[:@\s]", user):
        piece = piece.strip(".")
        if _DOMAIN_TEXT.match(piece) and "." in piece:
            return piece
    return ""


@dataclass(frozen=True)
class Mismatch:
    """Link text showing ``shown`` (a registrable domain) while the link goes to ``actual``."""

    shown: str
    actual: str
    shown_is_protected: bool


@dataclass
class LinkEvidence:
    lookalikes: list[Match] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    punycode: list[str] = field(default_factory=list)
    userinfo: list[tuple[str, str]] = field(default_factory=list)  # (domain shown before "@", real host)
    encoded: list[tuple[str, str]] = field(default_factory=list)  # (host as written, as a browser reads it)


@dataclass(frozen=True)
class LinkInspector:
    matcher: DomainMatcher
    ownership: Ownership
    max_links: int = 500

    def inspect(self, message: ParsedMessage, flagged: set[str]) -> LinkEvidence:
        """Evidence from every link of the message and its attached messages. Registrable
        domains already reported (a sender lookalike) are in ``flagged`` and not repeated."""
        evidence = LinkEvidence()
        seen_hosts: set[str] = set()
        seen_pairs: set[tuple[str, str]] = set()
        for number, link in enumerate(_all_links(message)):
            if number >= self.max_links * 10:
                break
            if not link.host:
                continue
            if link.host not in seen_hosts:
                if len(seen_hosts) >= self.max_links:
                    break
                seen_hosts.add(link.host)
                host = browser_host(link)
                if host != link.host:
                    evidence.encoded.append((link.host, host))
                self._host(host, flagged, evidence)
            if "@" in link.url and len(evidence.userinfo) < 10:
                self._userinfo(link, evidence)
            if link.text and link.source == "html":
                self._text(link, seen_pairs, evidence)
        return evidence

    def _host(self, host: str, flagged: set[str], evidence: LinkEvidence) -> None:
        if is_ip_like(host):
            evidence.ips.append(host)
            return
        unicode_host = idna_to_unicode(host)
        if not unicode_host or self.ownership.splitter.parts(unicode_host) is None:
            return  # not a name anyone can register: nothing to imitate or visit
        match = self.matcher.match(unicode_host)
        if match is not None and match.technique == "subdomain":
            match = None  # a brand word as a subdomain of another site is too common in links
        if match is not None:
            if match.registrable not in flagged:
                flagged.add(match.registrable)
                evidence.lookalikes.append(match)
            return
        if ("xn--" in host or not host.isascii()) and not self.matcher.is_owned(host):
            evidence.punycode.append(idna_to_ascii(unicode_host))

    def _userinfo(self, link: Link, evidence: LinkEvidence) -> None:
        shown = userinfo_domain(link.url)
        if not shown:
            return
        host = browser_host(link)
        splitter = self.ownership.splitter
        shown_parts, real_parts = splitter.parts(shown), splitter.parts(host)
        if shown_parts is None or shown_parts.unlisted:
            return
        if real_parts is not None and self.ownership.same_owner(shown_parts.registrable, real_parts.registrable):
            return
        pair = (shown, host)
        if pair not in evidence.userinfo:
            evidence.userinfo.append(pair)

    def _text(self, link: Link, seen: set[tuple[str, str]], evidence: LinkEvidence) -> None:
        text = link.text.strip().strip("<>[]()\"'").strip()
        if not text or " " in text or len(text) > 2048:
            return
        found = _DOMAIN_TEXT.match(text)
        if not found:
            return
        shown = url_host(found.group(0) if "://" in found.group(0) else "http://" + found.group(0))
        if not shown or "." not in shown:
            return
        splitter = self.ownership.splitter
        shown_parts = splitter.parts(shown)
        real_is_ip = is_ip_like(link.host)
        real_parts = None if real_is_ip else splitter.parts(link.host)
        if shown_parts is None or shown_parts.unlisted or (real_parts is None and not real_is_ip):
            return
        if real_parts is not None and self.ownership.same_owner(shown_parts.registrable, real_parts.registrable):
            return
        key = (shown_parts.registrable, real_parts.registrable if real_parts else link.host)
        if key in seen:
            return
        seen.add(key)
        protected = self.ownership.is_protected(shown_parts.registrable)
        evidence.mismatches.append(Mismatch(shown_parts.shown_registrable, idna_to_unicode(link.host), protected))


def _all_links(message: ParsedMessage) -> Iterator[Link]:
    for part in iter_all_messages(message):
        yield from part.links
