"""The authentication stage against a real DNS server on loopback (dnsmasq): SPF, DKIM,
DMARC (policies, alignment), ARC, trusted upstream results, blocklists, and what happens
when DNS is down. Messages are signed here with dkimpy."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import dkim
import pytest

import mailguard
from mailguard.auth.authresults import header_value, stamp
from mailguard.auth.resolver import Resolver, ResolverSettings
from mailguard.config import Config, ConfigError
from mailguard.model import Envelope

from auth_world import (AUTHSERV_ID, LISTED_IP, SENDING_IP, auth_config, dns_server, key, message, sign, via_mx,
                        zone_file)
from dns_server import DnsServer, closed_port


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with dns_server() as server:
        yield server


def scanner_for(dns: DnsServer, tmp: Path | None = None, **auth: object) -> mailguard.Scanner:
    return mailguard.Scanner(Config.from_dict(auth_config(dns.address, **auth), tmp and tmp / "mailguard.toml"))


@pytest.fixture(scope="module")
def scanner(dns: DnsServer) -> mailguard.Scanner:
    return scanner_for(dns)


def smtp(mail_from: str, ip: str = SENDING_IP, helo: str = "mail.good.example") -> Envelope:
    return Envelope(mail_from, ("frontdesk@practice.example",), ip, helo)


def test_aligned_dkim_and_spf_pass_dmarc_and_prove_the_domain(scanner: mailguard.Scanner) -> None:
    raw = sign(message("Good Bank <alerts@good.example>"))
    verdict = scanner.scan(raw, smtp("bounce@good.example"))
    auth = verdict.auth
    assert auth is not None and auth.source == "computed"
    assert auth.spf == "pass" and auth.spf_domain == "good.example"
    assert [(s.domain, s.selector, s.result) for s in auth.dkim] == [("good.example", "sel", "pass")]
    assert auth.dmarc == "pass" and auth.dmarc_policy == "reject"
    assert auth.proven_domain == "good.example"
    assert not [f for f in verdict.findings if f.analyzer == "authcheck"]


def test_forged_from_of_a_reject_domain_is_tagged_with_words(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(message("Bank Security <security@bank.example>"), smtp("security@bank.example"))
    assert verdict.auth.spf == "fail" and verdict.auth.dmarc == "fail" and verdict.auth.dmarc_policy == "reject"
    assert verdict.auth.proven_domain == ""
    rules = {f.rule: f for f in verdict.findings}
    assert "AUTH_DMARC_REJECT" in rules and "AUTH_SPF_FAIL" in rules
    summary = rules["AUTH_DMARC_REJECT"].summary
    assert "claims to be bank.example" in summary and "may not send its mail" in summary and "reject" in summary
    assert verdict.action >= mailguard.Action.TAG


def test_a_tampered_signature_fails_and_a_quarantine_policy_is_reported(scanner: mailguard.Scanner) -> None:
    signed = sign(message("Shop <orders@shop.example>"), domain="shop.example", selector="sel", key_name="good")
    verdict = scanner.scan(signed, smtp("orders@shop.example"))
    # the key at sel._domainkey.shop.example does not exist: no proof either way, not a "fail"
    assert [s.result for s in verdict.auth.dkim] == ["permerror"]
    assert verdict.auth.spf == "softfail" and verdict.auth.dmarc == "fail"
    assert verdict.auth.dmarc_policy == "quarantine"
    assert {"AUTH_DMARC_QUARANTINE", "AUTH_SPF_SOFTFAIL"} <= set(verdict.rules)
    tampered = sign(message("Good Bank <alerts@good.example>")).replace(b"Your statement", b"Your new statement")
    verdict = scanner.scan(tampered, smtp("bounce@good.example", ip="192.0.2.99"))
    assert [s.result for s in verdict.auth.dkim] == ["fail"]
    assert verdict.auth.dmarc == "fail" and "AUTH_DKIM_FAIL" in verdict.rules


def test_relaxed_alignment_and_subdomain_policy(scanner: mailguard.Scanner) -> None:
    # From a subdomain, signed by the parent: relaxed alignment passes.
    verdict = scanner.scan(sign(message("<info@mail.good.example>")), smtp("", ip="192.0.2.99", helo="x.other.test"))
    assert verdict.auth.dmarc == "pass" and verdict.auth.proven_domain == "mail.good.example"
    # shop.example publishes sp=none: a failing subdomain gets p=none, a weak finding only.
    verdict = scanner.scan(message("<x@eu.shop.example>"), smtp("x@eu.shop.example", ip="192.0.2.99"))
    assert verdict.auth.dmarc == "fail" and verdict.auth.dmarc_policy == "none"
    assert "AUTH_DMARC_FAIL" in verdict.rules and "AUTH_DMARC_QUARANTINE" not in verdict.rules


def test_no_policy_published_means_none_not_fail(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(message("<someone@nowhere.example>"), smtp("someone@nowhere.example"))
    assert verdict.auth.spf == "none" and verdict.auth.dmarc == "none"
    assert not [f for f in verdict.findings if f.analyzer == "authcheck"]


def test_several_from_domains_are_never_proven(scanner: mailguard.Scanner) -> None:
    """Each From domain is checked and the strictest failing policy applies (RFC 7489 6.6.1):
    a second From cannot hide a forged bank.example (p=reject)."""
    raw = sign(message("<alerts@good.example>, <x@bank.example>"))
    verdict = scanner.scan(raw, smtp("bounce@good.example"))
    assert verdict.auth.dmarc == "fail" and verdict.auth.dmarc_policy == "reject"
    assert verdict.auth.from_domain == "bank.example" and verdict.auth.proven_domain == ""


def test_behind_a_local_mta_spf_is_about_the_sender_not_the_mta(scanner: mailguard.Scanner) -> None:
    # Postfix hands mail to us from loopback (a content filter, no XFORWARD): its Received
    # line names the sender; SPF is checked for that address, never for 127.0.0.1.
    raw = message("<alerts@good.example>")
    verdict = scanner.scan(via_mx(raw), smtp("bounce@good.example", ip="127.0.0.1"))
    assert verdict.auth.spf == "pass" and verdict.auth.dmarc == "pass"
    verdict = scanner.scan(via_mx(raw, ip="192.0.2.66"), smtp("bounce@good.example", ip="127.0.0.1"))
    assert verdict.auth.spf == "fail"
    # no Received line to learn from: SPF is not checked (none), not failed
    verdict = scanner.scan(raw, smtp("bounce@good.example", ip="127.0.0.1"))
    assert verdict.auth.spf == "none" and "AUTH_SPF_FAIL" not in verdict.rules


def test_saved_files_do_no_dns_unless_asked(dns: DnsServer) -> None:
    scanner = scanner_for(dns)
    verdict = scanner.scan(sign(message("<alerts@good.example>")))
    assert verdict.auth.source == "not-checked" and scanner.authenticator.resolver.queries == 0
    # with trusted_relays, the topmost Received line our relay added gives the IP for SPF
    scanner = scanner_for(dns, verify_saved_mail=True, trusted_relays=["10.0.0.0/8"])
    received = ("Received: from mx.internal (mx.internal [10.1.1.1]) by mailbox.internal; Tue, 1 Dec 2026\r\n"
                "Received: from mail.bank.example (mail.bank.example [192.0.2.66]) by mx.internal; Tue, 1 Dec 2026\r\n"
                "Return-Path: <security@bank.example>\r\n")
    verdict = scanner.scan(received.encode() + message("<security@bank.example>"))
    assert verdict.auth.spf == "fail" and verdict.auth.dmarc == "fail" and "AUTH_DMARC_REJECT" in verdict.rules


def test_trusted_upstream_results_are_reused_and_others_ignored(dns: DnsServer) -> None:
    scanner = scanner_for(dns, trusted_authserv_ids=["mx.provider.test"])
    upstream = ("Authentication-Results: mx.provider.test; spf=pass smtp.mailfrom=x@bank.example;\r\n"
                " dkim=pass header.d=bank.example header.s=s1; dmarc=pass (p=reject) header.from=bank.example\r\n")
    verdict = scanner.scan(upstream.encode() + message("<security@bank.example>"))  # a saved file: no DNS
    assert verdict.auth.source == "trusted-upstream" and verdict.auth.proven_domain == "bank.example"
    assert scanner.authenticator.resolver.queries == 0
    forged = upstream.replace("mx.provider.test", "mx.attacker.test")
    verdict = scanner.scan(forged.encode() + message("<security@bank.example>"), smtp("security@bank.example"))
    assert verdict.auth.source == "computed" and verdict.auth.dmarc == "fail"


def test_trusted_arc_sealer_overrides_a_dmarc_failure(dns: DnsServer) -> None:
    # good.example's mail went through list.example, which changed the subject (breaking DKIM) and sealed
    # what it saw: dmarc=pass for good.example.
    original = sign(message("<alerts@good.example>"))
    forwarded = (b"Authentication-Results: list.example; dkim=pass header.d=good.example;"
                 b" dmarc=pass header.from=good.example\r\n"
                 + original.replace(b"Subject: Quarterly", b"Subject: [list] Quarterly"))
    seal = dkim.arc_sign(forwarded, b"arc", b"list.example", key("list").private_pem, b"list.example",
                         include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    sealed = b"".join(seal) + forwarded
    envelope = smtp("owner@list.example")
    plain = scanner_for(dns).scan(sealed, envelope)
    assert plain.auth.arc == "pass" and plain.auth.arc_sealers == ("list.example",)
    assert plain.auth.dmarc == "fail" and "AUTH_DMARC_REJECT" in plain.rules
    trusted = scanner_for(dns, trusted_arc_sealers=["list.example"]).scan(sealed, envelope)
    assert trusted.auth.proven_domain == "good.example" and "AUTH_DMARC_REJECT" not in trusted.rules


def test_blocklists_report_listed_ips_and_domains_and_ignore_refusals(dns: DnsServer, tmp_path: Path) -> None:
    table = zone_file(tmp_path)
    scanner = scanner_for(dns, tmp_path, dnsbl_zones=["bl.test", "dbl.test"], dnsbl_file=str(table))
    body = "See https://www.phish.example/login and https://refused.example/x\r\n"
    verdict = scanner.scan(message("<a@nowhere.example>", body=body), smtp("a@nowhere.example", ip=LISTED_IP))
    listed = {(zone, name) for zone, name, _ in verdict.auth.blocklists}
    assert listed == {("bl.test", LISTED_IP), ("dbl.test", "phish.example")}
    assert {"AUTH_DNSBL_TESTIP", "AUTH_DNSBL_TESTDOMAIN"} <= set(verdict.rules)
    with pytest.raises(ConfigError, match="not in the blocklist table"):
        scanner_for(dns, tmp_path, dnsbl_zones=["nosuch.test"], dnsbl_file=str(table))


def test_a_sender_whose_dns_never_answers_cannot_switch_checks_off(dns: DnsServer) -> None:
    scanner = scanner_for(dns)
    # A forgery signed by a domain whose DNS never answers, sent from a MAIL FROM there too:
    # those lookups time out, but they are not bank.example's, so DMARC still fails.
    forged = sign(message("Bank Security <security@bank.example>"), domain="blackhole.example")
    verdict = scanner.scan(forged, smtp("x@blackhole.example"))
    assert [s.result for s in verdict.auth.dkim] == ["temperror"]
    assert verdict.auth.dmarc == "fail" and "AUTH_DMARC_REJECT" in verdict.rules
    # ... and the slow domain did not make DNS count as down for the next message
    assert not scanner.authenticator.resolver.down
    verdict = scanner.scan(message("Bank Security <security@bank.example>"), smtp("security@bank.example"))
    assert verdict.auth.spf == "fail" and "AUTH_DMARC_REJECT" in verdict.rules
    # names no server could hold are "does not exist", never "temporary"
    bad = sign(message("<security@bank.example>"), domain="bank..example")
    assert scanner.scan(bad, smtp("x@bank.example")).auth.dmarc == "fail"


def test_dns_down_gives_temperror_never_fail_and_trips_the_breaker() -> None:
    down = f"127.0.0.1:{closed_port()}"
    scanner = mailguard.Scanner(Config.from_dict(auth_config(down)))
    first = scanner.scan(message("<security@bank.example>"), smtp("security@bank.example"))
    assert first.auth.spf == "temperror" and first.auth.dmarc in ("temperror", "none")
    assert not [f for f in first.findings if f.analyzer == "authcheck"]
    resolver = scanner.authenticator.resolver
    assert resolver.down
    sent = resolver.queries
    for n in range(5):  # while DNS counts as down, nothing more is sent: no message waits
        later = scanner.scan(sign(message(f"<alerts{n}@good.example>")), smtp("bounce@good.example"))
        assert later.auth.dkim[0].result == "temperror" and later.auth.dmarc == "temperror"
    assert resolver.queries == sent


def test_breaker_probes_again_after_the_hold() -> None:
    now = [0.0]
    resolver = Resolver(ResolverSettings(nameservers=(("127.0.0.1", closed_port()),), timeout=0.2,
                                         down_seconds=30), clock=lambda: now[0])
    assert resolver.txt("good.example").temporary and resolver.down and resolver.queries == 1
    now[0] = 10.0
    assert resolver.txt("bank.example").temporary and resolver.queries == 1  # held: nothing sent
    now[0] = 31.0
    assert resolver.txt("bank.example").temporary and resolver.queries == 2  # one probe, still down
    assert resolver.down


def test_our_header_replaces_forged_ones() -> None:
    from mailguard.model import AuthResults

    auth = AuthResults(source="computed", authserv_id=AUTHSERV_ID, from_domain="good.example", spf="pass",
                       spf_domain="good.example", dmarc="pass", dmarc_policy="reject", proven_domain="good.example")
    raw = (f"Authentication-Results: {AUTHSERV_ID.upper()}; dmarc=pass header.from=bank.example\r\n"
           f"Authentication-Results: (hidden) {AUTHSERV_ID} ; garbage that does not parse ((\r\n"
           "Authentication-Results: mx.provider.test; spf=pass\r\n").encode() + message("<a@good.example>")
    out = stamp(raw, auth, AUTHSERV_ID, "bounce@good.example")
    fields = [line for line in out.split(b"\r\n\r\n")[0].split(b"\r\n") if line.startswith(b"Authentication-Results")]
    assert len(fields) == 2 and b"mx.provider.test" in fields[1]
    assert header_value(auth, AUTHSERV_ID, "bounce@good.example") in out.decode().replace("\r\n ", " ")
    hostile = header_value(auth, AUTHSERV_ID, "x@y.test;\r\nX-MailGuard-Action: accept")
    assert "\r" not in hostile and "\n" not in hostile and ";X" not in hostile


def test_bad_dns_and_network_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[dns\] nameservers: 'dns.example:53': the server must be an IP"):
        mailguard.Scanner(Config.from_dict({"dns": {"nameservers": ["dns.example:53"]}}))
    with pytest.raises(ConfigError, match=r"mailguard.toml: \[auth\] trusted_relays: '10.0.0.0/33'"):
        mailguard.Scanner(Config.from_dict({"auth": {"trusted_relays": ["10.0.0.0/33"]}}, tmp_path / "mailguard.toml"))


def test_results_survive_the_round_trip_through_a_dict(scanner: mailguard.Scanner) -> None:
    """As the daemon carries verdicts over its socket (and `mailguard check --json` shows them)."""
    from mailguard.daemon.remote import verdict_from_dict

    verdict = scanner.scan(sign(message("<alerts@good.example>")), smtp("bounce@good.example"))
    assert verdict_from_dict(verdict.to_dict()).auth == verdict.auth
