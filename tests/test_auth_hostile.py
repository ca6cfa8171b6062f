"""The authentication stage against a sender who writes the message and runs its own DNS.

Every case runs against the real loopback dnsmasq of ``test_auth.py``'s world, with the
hostile records added here. Queries are counted at the server (dnsmasq's query log), and a
zone whose answers come slowly is served by a delaying upstream that dnsmasq forwards to.
Nothing here asserts a wall-clock time: what is bounded is what the server was asked and
what the person reading the verdict sees. The times measured for each case are in
docs/authentication.md ("Hostile senders").
"""
from __future__ import annotations

import base64
import hashlib
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dkim
import dns.message as dns_message
import dns.query as dns_query
import dns.rcode as dns_rcode
import dns.rdatatype as dns_rdatatype
import dns.rrset as dns_rrset
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

import mailguard
from mailguard.auth.authresults import stamp
from mailguard.auth.dkimcheck import ARC_MAX_SETS
from mailguard.auth.resolver import BUDGET_TIMEOUTS, Resolver, ResolverSettings
from mailguard.config import Config
from mailguard.model import AuthResults, Envelope

from auth_world import AUTHSERV_ID, LISTED_IP, auth_config, dns_server, key, message, sign, zone_file
from dns_server import DnsServer

ATTACKER_IP = "192.0.2.99"  # in no SPF record of the world
# MAIL FROM x@evil.example makes SPF ask the slow zone: only the slow-DNS test uses it, the
# others send from other.example (no SPF record at all).
SLOW_DELAY = 0.4  # seconds the slow zone takes per answer: just under the tests' timeout_ms of 500


# ---------------------------------------------------------------------- the servers


@dataclass
class CountingDns(DnsServer):
    """The world's dnsmasq, logging every query it receives to ``log_path``."""

    log_path: Path = Path("/dev/null")
    _marks: int = 0

    def command(self) -> list[str]:
        cmd = [c for c in super().command() if not c.startswith("--log-facility")]
        return cmd + ["--log-queries", f"--log-facility={self.log_path}"]

    def queries(self, needle: str = "") -> int:
        """Queries received so far whose line contains ``needle``. A marker query is sent
        and awaited first: dnsmasq logs in order, so every earlier query is in the log."""
        self._marks += 1
        mark = f"mark{self._marks}.probe.test"
        dns_query.udp(dns_message.make_query(mark, "A"), "127.0.0.1", port=self.port, timeout=2)
        for _ in range(200):
            lines = self.log_path.read_text(errors="replace").splitlines()
            if any(f"query[A] {mark} " in line for line in lines):
                return sum(1 for line in lines if " query[" in line and needle in line and "probe.test" not in line)
            time.sleep(0.01)
        raise AssertionError(f"dnsmasq did not log {mark}")


class SlowZone:
    """An upstream for ``slow.example`` that answers every query after ``SLOW_DELAY``: a
    sender's DNS that stays just inside our timeout. MX names (mx*) have 10 hosts each, every
    A query has an address, TXT answers come from ``txt``."""

    def __init__(self, txt: dict[str, str]) -> None:
        self.txt = txt
        self.received = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            self.received += 1
            threading.Thread(target=self._answer, args=(data, peer), daemon=True).start()

    def _answer(self, data: bytes, peer: tuple[str, int]) -> None:
        query = dns_message.from_wire(data)
        time.sleep(SLOW_DELAY)
        reply = dns_message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(True).lower()
        if question.rdtype == dns_rdatatype.MX and name.startswith("mx"):
            hosts = [f"10 h{i}.{name}." for i in range(10)]
            reply.answer.append(dns_rrset.from_text(question.name, 60, "IN", "MX", *hosts))
        elif question.rdtype == dns_rdatatype.A:
            reply.answer.append(dns_rrset.from_text(question.name, 60, "IN", "A", "192.0.2.200"))
        elif question.rdtype == dns_rdatatype.TXT and name in self.txt:
            text = self.txt[name]
            chunks = " ".join(f'"{text[i:i + 250]}"' for i in range(0, len(text), 250))
            reply.answer.append(dns_rrset.from_text(question.name, 60, "IN", "TXT", chunks))
        else:
            reply.set_rcode(dns_rcode.NXDOMAIN)
        try:
            self.sock.sendto(reply.to_wire(), peer)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- hostile records


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body


def rsa_record(modulus_bits: int, exponent_bits: int) -> str:
    """A DKIM key record with an RSA key of the given sizes (random numbers: verifying with it
    costs the same as with a real key of that size, and it never matches)."""
    rng = random.Random(modulus_bits * 7 + exponent_bits)
    n = rng.getrandbits(modulus_bits) | 1 | (1 << (modulus_bits - 1))
    e = 65537 if exponent_bits <= 17 else rng.getrandbits(exponent_bits) | 1 | (1 << (exponent_bits - 1))
    integer = lambda v: _der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))  # noqa: E731
    rsa_key = _der(0x30, integer(n) + integer(e))
    algorithm = _der(0x30, bytes.fromhex("06092a864886f70d0101010500"))
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_key))
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()


BAD_KEYS = {  # selector under evil.example -> key record
    "rsa16k-e16k": rsa_record(16384, 16384),  # 8 s of pure-Python pow() per signature before
    "rsa16k": rsa_record(16384, 17),
    "rsa-huge": rsa_record(370_000, 17),  # a 62 KB TXT record (over TCP)
    "revoked": "v=DKIM1; k=rsa; p=",
    "badb64": "v=DKIM1; k=rsa; p=!!!not*base64",
    "ed-garbage": "v=DKIM1; k=ed25519; p=AAAAgarbagegarbage",
    "rsa-garbage": "v=DKIM1; k=rsa; p=" + base64.b64encode(b"x" * 300).decode(),
}
MANY = 500  # DKIM signatures on one message, each with its own selector and domain
SLOW_KEYS = {f"k{i}._domainkey.slow.example": key("good").record for i in range(4)}


def hostile_world(log: Path, slow: SlowZone) -> CountingDns:
    world = dns_server()
    txt = list(world.txt) + [(f"{s}._domainkey.evil.example", r) for s, r in BAD_KEYS.items()]
    txt += [(f"s{i}._domainkey.d{i}.many.example", key("good").record) for i in range(MANY)]
    txt += [
        ("_dmarc.evil.example", "v=DMARC1; p=none"),
        # SPF whose 9 mx: terms ask the slow zone 99 times (MX, then 10 hosts each)
        ("evil.example", "v=spf1 " + " ".join(f"mx:mx{i}.slow.example" for i in range(9)) + " -all"),
        ("helo.evil.example", "v=spf1 " + " ".join(f"mx:mx{i}h.slow.example" for i in range(9)) + " -all"),
        ("loop.example", "v=spf1 include:loop2.example -all"),
        ("loop2.example", "v=spf1 include:loop.example -all"),
        ("many-terms.example", "v=spf1 " + " ".join(f"a:h{i}.nowhere.example" for i in range(20)) + " -all"),
        ("voids.example", "v=spf1 a:n1.nowhere.example a:n2.nowhere.example a:n3.nowhere.example -all"),
        ("redirect.example", "v=spf1 redirect=r1.redirect.example"),
    ]
    txt += [(f"r{i}.redirect.example", f"v=spf1 redirect=r{i + 1}.redirect.example") for i in range(1, 30)]
    forward = list(world.forward) + [("slow.example", slow.port)]
    return CountingDns(txt=txt, hosts=world.hosts, forward=forward, log_path=log)


@pytest.fixture(scope="module")
def slow() -> Iterator[SlowZone]:
    zone = SlowZone(SLOW_KEYS)
    yield zone
    zone.close()


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory, slow: SlowZone) -> Iterator[CountingDns]:
    with hostile_world(tmp_path_factory.mktemp("dns") / "queries.log", slow) as server:
        yield server


def scanner_for(server: DnsServer, tmp: Path | None = None, **auth: object) -> mailguard.Scanner:
    return mailguard.Scanner(Config.from_dict(auth_config(server.address, **auth), tmp and tmp / "mailguard.toml"))


def smtp(mail_from: str, ip: str = ATTACKER_IP, helo: str = "mail.other.example") -> Envelope:
    return Envelope(mail_from, ("frontdesk@practice.example",), ip, helo)


def auth_rules(verdict: mailguard.Verdict) -> set[str]:
    return {f.rule for f in verdict.findings if f.analyzer == "authcheck"}


# ---------------------------------------------------------------------- DKIM


def test_hundreds_of_signatures_cost_max_signatures_key_lookups(dns: CountingDns) -> None:
    raw = message("<news@many.example>", subject="many signatures")
    headers = b"".join(dkim.sign(raw, f"s{i}".encode(), f"d{i}.many.example".encode(), key("good").private_pem,
                                 include_headers=[b"from", b"subject"]) for i in range(MANY))
    before = dns.queries("_domainkey")
    verdict = scanner_for(dns).scan(headers + raw, smtp("news@many.example"))
    # dkimpy keeps signatures in header order, topmost first: the topmost max_signatures (5) are checked
    assert dns.queries("_domainkey") - before == 5
    assert [s.result for s in verdict.auth.dkim[:5]] == ["pass"] * 5
    assert {s.result for s in verdict.auth.dkim[5:]} == {"neutral"} and len(verdict.auth.dkim) == MANY


@pytest.mark.parametrize("selector", sorted(BAD_KEYS))
def test_a_huge_or_malformed_key_is_permerror_never_fail(dns: CountingDns, selector: str) -> None:
    """A key too large to verify cheaply, or one dkimpy cannot use, proves nothing either way:
    "permerror", and no finding says the message was changed or forged."""
    raw = message("<a@evil.example>", subject=f"key {selector}")
    signed = dkim.sign(raw, selector.encode(), b"evil.example", key("good").private_pem,
                       include_headers=[b"from", b"subject"]) + raw
    verdict = scanner_for(dns).scan(signed, smtp("a@other.example"))
    assert [s.result for s in verdict.auth.dkim] == ["permerror"]
    assert "AUTH_DKIM_FAIL" not in verdict.rules


def test_l_tag_leaves_appended_content_unproven(dns: CountingDns) -> None:
    raw = message("Good Bank <alerts@good.example>", subject="statement, l=")
    signature = dkim.sign(raw, b"sel", b"good.example", key("good").private_pem,
                          include_headers=[b"from", b"subject"], length=True)
    scanner = scanner_for(dns)
    intact = scanner.scan(signature + raw, smtp("bounce@other.example"))
    assert [s.result for s in intact.auth.dkim] == ["pass"] and intact.auth.proven_domain == "good.example"
    appended = signature + raw + b"\r\nUrgent: pay the invoice at https://pay.evil.example/now today.\r\n"
    verdict = scanner.scan(appended, smtp("bounce@other.example"))
    assert [s.result for s in verdict.auth.dkim] == ["policy"]  # valid for the first l= bytes only
    assert verdict.auth.dmarc == "fail" and verdict.auth.proven_domain == ""
    assert "AUTH_DMARC_REJECT" in verdict.rules and "AUTH_DKIM_FAIL" not in verdict.rules


def _sign_headers_only(raw: bytes, signed: list[str]) -> bytes:
    """A DKIM-Signature (relaxed/simple) over exactly ``signed``, which dkimpy refuses to make
    without From: the form a broken or hostile signer could produce."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = {}
    for line in head.split(b"\r\n"):
        name, _, value = line.decode().partition(":")
        fields.setdefault(name.lower(), " ".join(value.split()))
    body_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    value = (f" v=1; a=rsa-sha256; c=relaxed/simple; d=good.example; s=sel; h={':'.join(signed)};"
             f" bh={body_hash}; b=")
    data = "".join(f"{n}:{fields[n]}\r\n" for n in signed) + "dkim-signature:" + " ".join(value.split())
    private = serialization.load_pem_private_key(key("good").private_pem, None)
    b = base64.b64encode(private.sign(data.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()  # type: ignore[union-attr, call-arg]
    return f"DKIM-Signature:{value}{b}\r\n".encode() + raw


def test_a_signature_that_does_not_cover_from_proves_nothing(dns: CountingDns) -> None:
    raw = _sign_headers_only(message("CEO <ceo@good.example>", subject="no From in h="), ["subject", "date"])
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: key("good").record.encode())  # dkimpy alone: valid
    verdict = scanner_for(dns).scan(raw, smtp("bounce@other.example"))
    assert [s.result for s in verdict.auth.dkim] == ["permerror"]  # RFC 6376 6.1.1
    assert verdict.auth.proven_domain == "" and "AUTH_DMARC_REJECT" in verdict.rules


# ---------------------------------------------------------------------- several From


@pytest.mark.parametrize("extra, first", [
    ("From: <x@evil.example>\r\n", "Bank Security <security@bank.example>"),  # two From fields
    ("From: Bank Security <security@bank.example>\r\n", "<x@evil.example>"),  # the forged one second
    ("", "Bank Security <security@bank.example>, <x@evil.example>"),  # one field, two addresses
])
def test_a_second_from_domain_does_not_hide_a_forgery(dns: CountingDns, extra: str, first: str) -> None:
    """RFC 7489 6.6.1: each From domain is checked and the strictest failing policy applies.
    The lookalike analyzer and the mail client show bank.example; DMARC must judge it too."""
    verdict = scanner_for(dns).scan(message(first, extra_headers=extra), smtp("x@other.example"))
    auth = verdict.auth
    assert auth.dmarc == "fail" and auth.dmarc_policy == "reject" and auth.from_domain == "bank.example"
    assert auth.proven_domain == ""
    reject = [f for f in verdict.findings if f.rule == "AUTH_DMARC_REJECT"]
    assert reject and "claims to be bank.example" in reject[0].summary
    assert verdict.action >= mailguard.Action.TAG


def test_several_from_domains_that_pass_are_still_never_proven(dns: CountingDns) -> None:
    raw = message("<alerts@good.example>", extra_headers="From: <x@nowhere.example>\r\n")
    verdict = scanner_for(dns).scan(raw, smtp("bounce@good.example", ip="192.0.2.10"))
    assert verdict.auth.dmarc == "permerror" and verdict.auth.proven_domain == ""
    assert not auth_rules(verdict)


# ---------------------------------------------------------------------- ARC


def _fake_arc_sets(count: int) -> bytes:
    out = b""
    for i in range(1, count + 1):
        d = f"h{i}.sealers.example"
        out = (f"ARC-Seal: i={i}; a=rsa-sha256; cv={'none' if i == 1 else 'pass'}; d={d}; s=s; t=1; b=AAAA\r\n"
               f"ARC-Message-Signature: i={i}; a=rsa-sha256; c=relaxed/relaxed; d={d}; s=m; h=from; bh=AAAA;"
               f" b=AAAA\r\nARC-Authentication-Results: i={i}; {d}; arc=pass\r\n").encode() + out
    return out


def test_more_arc_sets_than_a_chain_may_have_fail_without_lookups(dns: CountingDns) -> None:
    scanner = scanner_for(dns)
    for sets in (ARC_MAX_SETS + 1, 400):  # 400 forged sets: 403 queries before
        raw = _fake_arc_sets(sets) + message("<a@evil.example>", subject=f"{sets} ARC sets")
        before = dns.queries("sealers.example")
        verdict = scanner.scan(raw, smtp("a@other.example"))
        assert verdict.auth.arc == "fail" and dns.queries("sealers.example") == before
    # up to the limit every set is still verified (each key looked up once): nothing refused early
    before = dns.queries("sealers.example")
    assert scanner.scan(_fake_arc_sets(3) + message("<a@evil.example>"), smtp("a@other.example")).auth.arc == "fail"
    assert dns.queries("sealers.example") - before == 6


def test_a_duplicated_arc_instance_cannot_carry_a_forged_dmarc_pass(dns: CountingDns) -> None:
    """list.example (trusted) sealed a forgery of bank.example with its honest dmarc=fail; the
    attacker adds a second ARC-Authentication-Results for i=1 that says dmarc=pass."""
    forged = (b"Authentication-Results: list.example; dmarc=fail header.from=bank.example\r\n"
              + message("Bank <security@bank.example>", subject="sealed forgery"))
    seal = dkim.arc_sign(forged, b"arc", b"list.example", key("list").private_pem, b"list.example",
                         include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    sealed = b"".join(seal) + forged
    scanner = scanner_for(dns, trusted_arc_sealers=["list.example"])
    assert scanner.scan(sealed, smtp("owner@list.example", ip="192.0.2.20")).auth.arc == "pass"
    for where in ("top", "bottom"):
        extra = b"ARC-Authentication-Results: i=1; list.example; dmarc=pass header.from=bank.example\r\n"
        raw = extra + sealed if where == "top" else sealed.replace(b"From: Bank", extra + b"From: Bank")
        verdict = scanner.scan(raw, smtp("owner@list.example", ip="192.0.2.20"))
        assert verdict.auth.arc == "fail" and verdict.auth.proven_domain == ""
        assert "AUTH_DMARC_REJECT" in verdict.rules


# ---------------------------------------------------------------------- slow DNS


def test_a_slow_sender_zone_is_bounded_and_never_hides_a_forgery(dns: CountingDns, slow: SlowZone,
                                                                 tmp_path: Path) -> None:
    """MAIL FROM, HELO and four signatures all point at a zone that answers just inside the
    timeout: 206 queries and 82 s for this message before. Now the sender's names share one
    allowance (BUDGET_TIMEOUTS x timeout); bank.example's DMARC, its own signature's key and
    the blocklist are asked from allowances of their own, so the forgery is still judged."""
    raw = message("Bank Security <security@bank.example>", subject="slow zone")
    signatures = b"".join(dkim.sign(raw, f"k{i}".encode(), b"slow.example", key("good").private_pem,
                                    include_headers=[b"from", b"subject"]) for i in range(4))
    # last (the fifth checked): a signature claiming bank.example, whose key does not exist
    forged = dkim.sign(raw, b"nokey", b"bank.example", key("good").private_pem, include_headers=[b"from", b"subject"])
    scanner = scanner_for(dns, tmp_path, dnsbl_zones=["bl.test"], dnsbl_file=str(zone_file(tmp_path)))
    received = slow.received
    verdict = scanner.scan(signatures + forged + raw, smtp("x@evil.example", ip=LISTED_IP, helo="helo.evil.example"))
    auth = verdict.auth
    # each slow answer takes SLOW_DELAY, so the allowance holds at most this many (plus the one cut short)
    assert slow.received - received <= BUDGET_TIMEOUTS * 0.5 / SLOW_DELAY + 1
    assert auth.spf == "temperror" and auth.spf_helo == "temperror" and "AUTH_SPF_FAIL" not in verdict.rules
    assert [s.result for s in auth.dkim] == ["temperror"] * 4 + ["permerror"]  # never "fail"
    assert auth.dmarc == "fail" and auth.dmarc_policy == "reject" and "AUTH_DMARC_REJECT" in verdict.rules
    assert ("bl.test", LISTED_IP) in {(zone, name) for zone, name, _ in auth.blocklists}
    assert not scanner.authenticator.resolver.down  # the sender's zone did not switch DNS off


def test_time_spent_verifying_between_lookups_does_not_spend_the_budget(dns: CountingDns) -> None:
    """The budget is time spent waiting for DNS: hashing a large body for ten ARC sets between
    two lookups must not spend the From domain's allowance before its DMARC record is asked."""
    now = [0.0]
    resolver = Resolver(ResolverSettings(nameservers=(("127.0.0.1", dns.port),), timeout=0.5), clock=lambda: now[0])
    with resolver.budget([["bank.example"]]) as budget:
        assert resolver.txt("bank.example").found
        now[0] += 3600.0  # an hour of CPU between the two lookups
        assert resolver.txt("_dmarc.bank.example").found and budget.refused == 0


# ---------------------------------------------------------------------- SPF and DMARC limits (already sound)


@pytest.mark.parametrize("domain, most", [("loop.example", 11), ("many-terms.example", 11),
                                          ("voids.example", 4), ("redirect.example", 11)])
def test_spf_limits_hold_against_the_server(dns: CountingDns, domain: str, most: int) -> None:
    scanner = scanner_for(dns)
    before = dns.queries()
    verdict = scanner.scan(message(f"<a@{domain}>", subject=domain), smtp(f"a@{domain}", helo=""))
    assert verdict.auth.spf == "permerror" and "AUTH_SPF_FAIL" not in verdict.rules
    assert dns.queries() - before <= most + 2  # SPF's lookups, plus the From domain's two DMARC names


def test_a_deep_subdomain_costs_two_dmarc_lookups(dns: CountingDns) -> None:
    deep = ".".join(f"l{i}" for i in range(60)) + ".bank.example"
    before = dns.queries("_dmarc")
    verdict = scanner_for(dns).scan(message(f"<security@{deep}>"), smtp("x@other.example"))
    assert dns.queries("_dmarc") - before == 2
    assert verdict.auth.dmarc == "fail" and verdict.auth.dmarc_policy == "reject"


# ---------------------------------------------------------------------- forged Authentication-Results


@pytest.mark.parametrize("value", [
    f"{AUTHSERV_ID}; dmarc=pass header.from=bank.example",
    f"{AUTHSERV_ID.upper()}.; dmarc=pass header.from=bank.example",
    f"\t(note)\r\n {AUTHSERV_ID}\t;dmarc=pass",
    f"((((nested four deep)))) {AUTHSERV_ID}; dmarc=pass header.from=bank.example",
    f"(a(b\\)c(d(e)))){AUTHSERV_ID} 1; dmarc=pass",
    f'"{AUTHSERV_ID}"; dmarc=pass header.from=bank.example',
    f"{AUTHSERV_ID}(comment); dmarc=pass",
])
def test_forged_results_bearing_our_id_are_removed(value: str) -> None:
    """Whatever a reader that skips comments and quotes (authres, a mail client) takes for
    our header, we remove; other servers' headers stay."""
    auth = AuthResults(source="computed", authserv_id=AUTHSERV_ID, from_domain="bank.example", spf="fail",
                       spf_domain="bank.example", dmarc="fail", dmarc_policy="reject")
    raw = (f"Authentication-Results: {value}\r\n"
           "Authentication-Results: mx.provider.test; spf=pass\r\n").encode() + message("<a@bank.example>")
    head = stamp(raw, auth, AUTHSERV_ID, "x@evil.example").split(b"\r\n\r\n")[0].decode()
    fields = [line for line in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n")
              if line.lower().startswith("authentication-results")]
    assert len(fields) == 2 and "dmarc=fail" in fields[0] and "mx.provider.test" in fields[1]
    assert "dmarc=pass" not in head
