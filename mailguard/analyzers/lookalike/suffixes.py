"""Hosts split by the public suffix list bundled with tldextract (never fetched; read by
``psl`` without importing tldextract).

Kept apart from the brand table and the matcher, which both need it, so that neither
imports the other; the DMARC organisational domain uses the same list.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from mailguard.analyzers.lookalike.psl import SuffixList
from mailguard.message import idna_to_ascii, idna_to_unicode


@dataclass(frozen=True)
class HostParts:
    """A host split by the public suffix list: ``registrable`` = ``label`` + "." + ``suffix``."""

    host: str
    registrable: str
    label: str
    suffix: str
    subdomains: tuple[str, ...]
    unlisted: bool = False  # the ending is not on the public suffix list (.example, .local)

    @property
    def ulabel(self) -> str:
        """The label as a reader sees it (IDN decoded)."""
        return idna_to_unicode(self.label)

    @property
    def shown_registrable(self) -> str:
        return idna_to_unicode(self.registrable)


def is_ip_host(host: str) -> bool:
    bare = host.strip("[]")
    if ":" not in bare and bare.strip("0123456789."):
        return False  # a name: ip_address would only raise, at the cost of an exception
    try:
        ipaddress.ip_address(bare)
        return True
    except ValueError:
        return False


@lru_cache(maxsize=1)
def _bundled_extractor() -> SuffixList:
    """One list per process, shared by every splitter (the lookalike analyzer's and the
    authentication stage's): after loading, it only reads."""
    return SuffixList()


class DomainSplitter:
    """Registrable domain, label and suffix of a host by the public suffix list bundled
    with tldextract (never fetched). Private suffixes count (blogspot.com, web.app), so a
    tenant host such as paypal-login.web.app is judged on its own, not as the platform's."""

    def __init__(self) -> None:
        self._extract = _bundled_extractor()
        self.parts = lru_cache(maxsize=65536)(self._parts)  # type: ignore[method-assign]

    def parts(self, host: str) -> HostParts | None:
        """All names in ASCII (punycode) form except ``host``, kept as the reader sees it.
        Cached per host (the instance attribute set in ``__init__``)."""
        return self._parts(host)

    def _parts(self, host: str) -> HostParts | None:
        shown = idna_to_unicode((host or "").strip().lower().rstrip("."))
        if not shown or is_ip_host(shown):
            return None
        ascii_host = idna_to_ascii(shown)
        ext = self._extract.split(ascii_host)
        if ext.domain and ext.suffix:
            subs = tuple(ext.subdomain.split(".")) if ext.subdomain else ()
            return HostParts(shown, f"{ext.domain}.{ext.suffix}", ext.domain, ext.suffix, subs)
        # A suffix the list does not know (.example, .internal, .local): the last label.
        labels = [x for x in ascii_host.split(".") if x]
        if len(labels) < 2 or ext.suffix:
            return None
        return HostParts(shown, ".".join(labels[-2:]), labels[-2], labels[-1], tuple(labels[:-2]), True)

    def is_listed_suffix(self, suffix: str) -> bool:
        return bool(self._extract.split("x." + suffix).suffix == suffix)
