"""The public suffix list read without tldextract splits every host as tldextract does:
every rule of the bundled list (plain, wildcard, exception, private) under a few
prefixes, and hosts a message may carry (ports, user info, IP addresses, trailing dots,
internationalised labels, upper case, empty labels)."""
from __future__ import annotations

import pytest
import tldextract  # a dependency: the oracle

from mailguard.analyzers.lookalike.psl import SuffixList, build_nodes, snapshot_path

ODD = [
    "", ".", "..", "com", "example.com", "www.example.co.uk", "a.b.c.d.e.example.com.", "EXAMPLE.COM",
    "user@host.example.org:8080", "http://x.example.net/path?q#f", "//host.example.com/", "mailto:a@b.example.com",
    "1.2.3.4", "01.2.3.4", "256.1.1.1", "[::1]", "[2001:db8::1]", "[notv6]", "www.ck", "a.www.ck", "b.ck", "c.b.ck",
    "kawasaki.jp", "city.kawasaki.jp", "x.city.kawasaki.jp", "foo.blogspot.com", "blogspot.com", "a..example.com",
    "xn--80ak6aa92e.com", "xn--p1ai", "sub.xn--p1ai", "xn--invalid-.com", "example.xn--fiqs8s", "ex\u3002ample\uff0ecom",
    "paypal-login.web.app", "foo.s3.amazonaws.com", "x.compute.amazonaws.com", "local", "host.local", "a.b.example",
    " spaced.example.com ", "host.example.com:", "@", "[", "a.b.c.d", "x.y.z.github.io",
]


@pytest.fixture(scope="module")
def both() -> tuple[SuffixList, object]:
    return SuffixList(), tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


def _theirs(extract: object, host: str) -> tuple[str, str, str]:
    ext = extract(host)  # type: ignore[operator]
    return ext.subdomain, ext.domain, ext.suffix


def test_every_rule_of_the_list_splits_as_tldextract_splits_it(both) -> None:
    ours, theirs = both
    rules = [r for r in build_nodes(snapshot_path().read_text(encoding="utf-8"))]
    assert len(rules) > 9000
    for rule in rules:
        bare = rule.lstrip("!").replace("*", "w")
        for host in (bare, f"x.{bare}", f"a.b.{bare}", f"xn--80ak6aa92e.{bare}"):
            assert tuple(ours.split(host)) == _theirs(theirs, host), host


def test_odd_hosts_split_as_tldextract_splits_them(both) -> None:
    ours, theirs = both
    for host in ODD:
        assert tuple(ours.split(host)) == _theirs(theirs, host), host
