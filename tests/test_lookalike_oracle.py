"""dnstwist as an independent oracle: its permutations of protected domains must be caught
by technique, and well-known real domains must not be. Offline: dnstwist's Fuzzer only
permutes strings."""
from __future__ import annotations

from collections import Counter

import dnstwist
import pytest

from mailguard import Config
from mailguard.analyzers.base import AnalyzerContext
from mailguard.analyzers.lookalike import LookalikeAnalyzer
from mailguard.analyzers.lookalike.domains import DomainMatcher, protected_from_domains

WORDS = ["login", "secure", "billing", "portal", "support", "verify", "account", "pay"]
TLDS = ["com", "net", "org", "co", "us", "info", "biz", "io"]
PROTECTED = ["paypal.com", "availity.com", "mindwellpsychology.org", "uhc.com"]

# Real, well-known domains that are not any protected brand's (written for this test).
REAL_DOMAINS = [
    "ibm.com", "evernote.com", "zoominfo.com", "epic.org", "wikipedia.org", "nytimes.com", "salesforce.com",
    "zendesk.com", "slack.com", "atlassian.com", "sendgrid.net", "constantcontact.com", "hubspot.com",
    "twitter.com", "cnn.com", "apache.org", "kernel.org", "python.org", "debian.org", "mozilla.org",
    "walmart.com", "target.com", "costco.com", "verizon.com", "comcast.com", "spotify.com", "netflix.com",
    "ebay.com", "etsy.com", "shopify.com", "wordpress.com", "cloudflare.com", "akamai.net", "fastly.net",
    "okta.com", "duo.com", "webex.com", "gotomeeting.com", "calendly.com", "surveymonkey.com",
    "psychiatry.org", "apa.org", "nih.gov", "cdc.gov", "webmd.com", "mayoclinic.org", "goodrx.com",
    "healthgrades.com", "zocdoc.com", "labcorp.com", "questdiagnostics.com", "walgreens.com",
    "mail.com", "gmx.com", "protonmail.com", "fastmail.com", "yandex.ru", "bbc.co.uk", "theguardian.com",
]


@pytest.fixture(scope="module")
def analyzer() -> LookalikeAnalyzer:
    config = Config.from_dict({"lookalike": {"protected_domains": PROTECTED}})
    return LookalikeAnalyzer(config.section("lookalike"), AnalyzerContext(config))


def test_dnstwist_permutations_are_caught_in_every_class(analyzer: LookalikeAnalyzer) -> None:
    total: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    for domain in PROTECTED:
        fuzzer = dnstwist.Fuzzer(domain, dictionary=WORDS, tld_dictionary=TLDS)
        fuzzer.generate()
        for perm in fuzzer.domains:
            if perm["fuzzer"] == "*original" or analyzer.matcher.is_owned(perm["domain"]):
                continue
            total[perm["fuzzer"]] += 1
            caught[perm["fuzzer"]] += analyzer.matcher.match(perm["domain"]) is not None
    recall = {kind: caught[kind] / total[kind] for kind in total}
    assert sum(caught.values()) / sum(total.values()) >= 0.995, recall
    assert min(recall.values()) >= 0.97, recall
    assert {"homoglyph", "tld-swap", "dictionary", "hyphenation", "subdomain", "omission"} <= set(total)


def test_real_domains_are_not_lookalikes(analyzer: LookalikeAnalyzer) -> None:
    flagged = {d: m.sentence() for d in REAL_DOMAINS if (m := analyzer.matcher.match(d)) is not None}
    assert not flagged


def test_matcher_stands_alone_and_caches_per_domain() -> None:
    matcher = DomainMatcher(protected_from_domains(["paypal.com"]))
    first = matcher.match("paypa1.com")
    assert first is not None and first.technique == "homoglyph"
    assert matcher.match("PAYPA1.COM.") is first  # one cache entry per normalised domain
    assert matcher.match("paypal.com") is None and matcher.match("www.paypal.com") is None
