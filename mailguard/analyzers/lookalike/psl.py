"""The public suffix list that tldextract ships, read without importing tldextract.

Importing tldextract imports requests, urllib3 and filelock (for fetching a fresh list,
which mailguard never does) and building its trie takes 17,000 objects: together most
of a tenth of a second of every cold start. This reads the same bundled snapshot, keeps
it as one flat table (cached on disk, keyed by the snapshot's bytes) and splits hosts
exactly as ``tldextract.TLDExtract(suffix_list_urls=(), include_psl_private_domains=True)``
does (``tests/test_psl.py`` compares the two on every rule of the list and on odd hosts).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import NamedTuple

from mailguard.resources import cache_key, cached_build

# as tldextract.suffix_list
_SUFFIX_RE = re.compile(r"^(?P<suffix>[.*!]*\w[\S]*)", re.UNICODE | re.MULTILINE)
_PRIVATE_SEPARATOR = "// ===BEGIN PRIVATE DOMAINS==="
_IPV4_RE = re.compile(
    r"^(?:(?:[0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])\.)"
    r"{3}(?:[0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])$",
    re.ASCII,
)
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")

END, PRIVATE = 1, 2  # flags of a node (a suffix, or a label sequence leading to one)


class Split(NamedTuple):
    """As tldextract's ExtractResult: ``domain`` + "." + ``suffix`` is the registrable name."""

    subdomain: str
    domain: str
    suffix: str


def snapshot_path() -> Path:
    """tldextract's bundled list, found without importing the package."""
    spec = importlib.util.find_spec("tldextract")
    for location in (spec.submodule_search_locations or ()) if spec else ():
        candidate = Path(location) / ".tld_set_snapshot"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("tldextract's public suffix list (.tld_set_snapshot) is missing; "
                            "reinstall mailguard's dependencies")


def build_nodes(text: str) -> dict[str, int]:
    """Every node of tldextract's trie as its labels joined right to left
    ("uk", "co.uk", "*.ck", "!www.ck") with its END/PRIVATE flags. Public suffixes first,
    then private ones, as tldextract adds them (a suffix on both lists ends up private)."""
    public_text, _, private_text = text.partition(_PRIVATE_SEPARATOR)
    public = frozenset(m.group("suffix") for m in _SUFFIX_RE.finditer(public_text))
    private = frozenset(m.group("suffix") for m in _SUFFIX_RE.finditer(private_text))
    nodes: dict[str, int] = {}
    for suffixes, flags in ((public, END), (private, END | PRIVATE)):
        for suffix in suffixes:
            labels = suffix.split(".")
            for i in range(len(labels) - 1, 0, -1):
                nodes.setdefault(".".join(labels[i:]), 0)
            nodes[suffix] = flags
    return nodes


class SuffixList:
    """``split(host)`` as tldextract's extractor; read-only after construction."""

    def __init__(self) -> None:
        path = snapshot_path()
        key = cache_key("psl", [path])
        self._nodes: dict[str, int] = cached_build("psl", key, lambda: build_nodes(path.read_text(encoding="utf-8")))

    def _suffix_index(self, labels: list[str]) -> tuple[int, int, int] | None:
        """(public suffix index, its node's flags, registry suffix index) or None, by
        tldextract's walk of its trie from the rightmost label."""
        nodes = self._nodes
        suffix_idx = reg_idx = label_idx = len(labels)
        suffix_flags = 0
        path = ""
        for label in reversed(labels):
            decoded = _decode_punycode(label)
            child = f"{decoded}.{path}" if path else decoded
            if child in nodes:
                label_idx -= 1
                path = child
                flags = nodes[child]
                if flags & END:
                    suffix_idx, suffix_flags = label_idx, flags
                    if not flags & PRIVATE:
                        reg_idx = label_idx
                continue
            wildcard = f"*.{path}" if path else "*"
            if wildcard in nodes:
                exception = (f"!{decoded}.{path}" if path else f"!{decoded}") in nodes
                return (label_idx if exception else label_idx - 1), nodes[wildcard], reg_idx
            break
        if suffix_idx == len(labels):
            return None
        return suffix_idx, suffix_flags, reg_idx

    def split(self, url: str) -> Split:
        netloc = _lenient_netloc(url).replace("\u3002", ".").replace("\uff0e", ".").replace("\uff61", ".")
        if len(netloc) >= 4 and netloc[0] == "[" and netloc[-1] == "]" and _looks_like_ipv6(netloc[1:-1]):
            return Split("", netloc, "")
        labels = netloc.split(".")
        found = self._suffix_index(labels)
        if found is None:
            if len(labels) == 4 and netloc and netloc[0].isdecimal() and _IPV4_RE.fullmatch(netloc):
                return Split("", netloc, "")
            return Split(".".join(labels[:-1]), labels[-1], "")
        index = found[0]
        subdomain = ".".join(labels[: index - 1]) if index >= 2 else ""
        domain = labels[index - 1] if index > 0 else ""
        return Split(subdomain, domain, ".".join(labels[index:]))


def _decode_punycode(label: str) -> str:
    lowered = label.lower()
    if lowered.startswith("xn--"):
        import idna  # as tldextract; only for internationalised labels

        try:
            return str(idna.decode(lowered))
        except (UnicodeError, IndexError):
            pass
    return lowered


def _lenient_netloc(url: str) -> str:
    """The host part of a URL-like string, as tldextract.remote.lenient_netloc."""
    start = url.find("//")
    if start == 0:
        rest = url[2:]
    elif start < 2 or url[start - 1] != ":" or set(url[: start - 1]) - _SCHEME_CHARS:
        rest = url
    else:
        rest = url[start + 2:]
    authority = rest.partition("/")[0].partition("?")[0].partition("#")[0]
    after_userinfo = authority.rpartition("@")[-1]
    if after_userinfo and after_userinfo[0] == "[":
        maybe_ipv6 = after_userinfo.partition("]")
        if maybe_ipv6[1] == "]":
            return f"{maybe_ipv6[0]}]"
    return after_userinfo.partition(":")[0].strip().rstrip(".\u3002\uff0e\uff61")


def _looks_like_ipv6(text: str) -> bool:
    from ipaddress import AddressValueError, IPv6Address

    try:
        IPv6Address(text)
    except AddressValueError:
        return False
    return True
