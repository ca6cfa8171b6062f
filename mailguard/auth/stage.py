"""The authentication stage: what is proven about the sender, before the analyzers run.

Order of trust: results a trusted upstream server wrote (``trusted_authserv_ids``) are
reused as they are; otherwise SPF, DKIM, ARC and DMARC are checked here, with the
connecting IP from the SMTP session (relay, milter) or, for saved files, from the topmost
Received line a ``trusted_relays`` host added. Without an envelope and without
``verify_saved_mail`` nothing is looked up at all: ``mailguard check`` does no DNS.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from mailguard.analyzers.lookalike.suffixes import DomainSplitter
from mailguard.auth import dnsbl
from mailguard.auth.authresults import HEADER, authserv_id_of, parse_upstream
from mailguard.auth.dkimcheck import verify_arc, verify_dkim
from mailguard.auth.dmarc import Dmarc
from mailguard.auth.resolver import Resolver, ResolverSettings, parse_nameserver
from mailguard.auth.schema import our_authserv_id
from mailguard.auth.spfcheck import check_spf
from mailguard.message import HEADER_MALFORMED, ParsedMessage, idna_to_ascii
from mailguard.model import AuthResults
from mailguard.options import ConfigError

_RECEIVED_FROM = re.compile(r"(?is)^\s*from\s+(\S+)(.*?)(?:\bby\b|;|$)")
_HOSTNAME = re.compile(r"(?i)(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")
_BRACKET_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
#: Most From domains whose DMARC is checked, the first ones (as a mail client lists them): at
#: most two lookups each, and the parser keeps up to 100 addresses.
MAX_FROM_DOMAINS = 5
_STRICTNESS = {"none": 0, "quarantine": 1, "reject": 2}


def resolver_settings(dns: Mapping[str, Any], where: str = "configuration") -> ResolverSettings:
    servers = []
    for text in dns["nameservers"]:
        try:
            servers.append(parse_nameserver(text))
        except ValueError as exc:
            raise ConfigError(f"{where}: [dns] nameservers: {exc}") from None
    return ResolverSettings(
        nameservers=tuple(servers), timeout=dns["timeout_ms"] / 1000.0, cache_size=dns["cache_size"],
        negative_ttl=dns["negative_ttl"], max_ttl=dns["max_ttl"], down_seconds=dns["down_seconds"],
    )


def _networks(values: tuple[str, ...], key: str, where: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for text in values:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{where}: [auth] {key}: {text!r} is not a network such as \"192.0.2.0/24\"") from None
    return tuple(out)


def _plain_ip(text: str) -> str:
    """"IPv6:2001:db8::1", "[192.0.2.1]" -> the bare address."""
    text = text.strip().strip("[]")
    return text[5:] if text.lower().startswith("ipv6:") else text


def _one_from(message: ParsedMessage) -> bool:
    """At most one From field (RFC 5322 3.6: exactly one; RFC 7489 6.6.1: handle more strictly)."""
    return len(message.header_all("from")) <= 1


@dataclass(frozen=True)
class Connection:
    """Who connected: the IP and HELO the SPF check is about, and the MAIL FROM."""

    ip: str
    helo: str
    mail_from: str


class Authenticator:
    """Built once per Scanner; ``authenticate`` is thread-safe (the resolver locks its cache)."""

    def __init__(self, config: Any) -> None:
        auth = config.section("auth")
        where = str(config.source) if config.source else "configuration"
        self.resolver = Resolver(resolver_settings(config.section("dns"), where))
        self.splitter = DomainSplitter()
        self.dmarc = Dmarc(self.resolver, self.splitter)
        self.authserv_id = our_authserv_id(config)
        self.trusted_ids = frozenset(x.strip().lower().rstrip(".") for x in auth["trusted_authserv_ids"]) - {""}
        self.trusted_relays = _networks(auth["trusted_relays"], "trusted_relays", where)
        self.trusted_sealers = frozenset(x.strip().lower().rstrip(".") for x in auth["trusted_arc_sealers"])
        self.verify_saved = bool(auth["verify_saved_mail"])
        self.max_signatures = int(auth["max_signatures"])
        self.zones = dnsbl.select_zones(auth, config.resolve_path)
        self.max_link_domains = int(auth["dnsbl_max_domains"])

    # ------------------------------------------------------------------ inputs

    def from_domains(self, message: ParsedMessage) -> tuple[str, ...]:
        """Every distinct domain of the From header(s) that looks like a host name. Not only
        addresses the validator accepts: a domain it refuses (a reserved ending, an odd local
        part) is still what the reader sees, and DMARC must not skip it."""
        domains = [idna_to_ascii(a.domain).rstrip(".") for a in message.from_ if a.domain]
        return tuple(dict.fromkeys(d for d in domains if _HOSTNAME.fullmatch(d)))

    def connection(self, message: ParsedMessage) -> Connection | None:
        """The SMTP client SPF is about. Over SMTP it is the session's client, unless that
        client is one of our own hops (loopback: Postfix handing mail to us as a content
        filter; or a ``trusted_relays`` host): then the Received line that hop added names
        the real sender. Without XFORWARD a content filter sees only Postfix's address, and
        checking SPF for it would fail every sender's SPF."""
        envelope = message.envelope
        if envelope is not None and envelope.client_address:
            ip = _plain_ip(envelope.client_address)
            if not self._trusted_hop(ip):
                return Connection(ip, envelope.helo, envelope.mail_from)
            found = self._received_hop(message)
            return Connection(found[0], found[1], envelope.mail_from) if found else None
        if not self.trusted_relays:
            return None
        found = self._received_hop(message)
        if found is None:
            return None
        return_path = (message.header("Return-Path") or "").strip().strip("<>").strip()
        return Connection(found[0], found[1], return_path)

    def _trusted_hop(self, ip: str) -> bool:
        """Loopback (only this machine's own programs connect from there) or a trusted relay."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return address.is_loopback or any(address in net for net in self.trusted_relays)

    def _received_hop(self, message: ParsedMessage) -> tuple[str, str] | None:
        """(IP, HELO) of the first Received line, from the top, whose sending host is not one
        of our hops, provided one of our hops wrote it: the topmost line is our own hop's
        (the caller knows it is), each further line is believed only while the hop above
        came from one of ours."""
        for value in message.header_all("Received"):
            match = _RECEIVED_FROM.match(value)
            ip_match = _BRACKET_IP.search(match.group(2) if match else "") or (
                _BRACKET_IP.fullmatch(match.group(1)) if match else None)
            if not match or not ip_match:
                return None  # a line we cannot read ends what we can believe
            ip = _plain_ip(ip_match.group(1))
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                return None
            if self._trusted_hop(ip):
                continue
            helo = match.group(1).strip("[]")
            return ip, ("" if _BRACKET_IP.fullmatch(match.group(1)) else helo)
        return None

    def trusted_upstream(self, message: ParsedMessage) -> AuthResults | None:
        if not self.trusted_ids:
            return None
        for value in message.header_all(HEADER):
            if authserv_id_of(value) not in self.trusted_ids:
                continue
            upstream = parse_upstream(value)
            if upstream is None:
                return None  # the trusted server's own header is unreadable: do not guess
            domains = self.from_domains(message)
            from_domain = domains[0] if domains else ""
            proven = (from_domain if upstream.dmarc == "pass" and len(domains) == 1 and _one_from(message)
                      and upstream.dmarc_from in ("", from_domain) else "")
            return AuthResults(
                source="trusted-upstream", authserv_id=upstream.authserv_id, from_domain=from_domain,
                spf=upstream.spf, spf_domain=upstream.spf_domain, dkim=upstream.dkim,
                dmarc=upstream.dmarc, dmarc_policy=upstream.dmarc_policy, arc=upstream.arc,
                proven_domain=proven,
            )
        return None

    # ------------------------------------------------------------------ the stage

    def authenticate(self, message: ParsedMessage) -> AuthResults:
        domains = self.from_domains(message)
        from_domain = domains[0] if domains else ""
        upstream = self.trusted_upstream(message)
        # DNS only for mail that arrives over SMTP (relay, milter: the envelope has the client's
        # address) or when saved files are to be verified: `mailguard check` does no DNS.
        may_look_up = bool(message.envelope and message.envelope.client_address) or self.verify_saved
        if upstream is not None:
            with self.resolver.budget(((), [z.name for z in self.zones])):
                return self._with_blocklists(upstream, message, may_look_up)
        if not may_look_up:
            return AuthResults(source="not-checked", authserv_id=self.authserv_id, from_domain=from_domain)
        # One DNS budget per message (resolver.LookupBudget): names of the From domains (their
        # DMARC records, their own signatures' keys, SPF of an aligned MAIL FROM) and the
        # blocklists each have an allowance of their own, so a sender's slow zone spends only
        # the allowance of the names it chose, never the lookups the verdict rests on.
        groups = ([self.dmarc.org_domain(d) for d in domains[:MAX_FROM_DOMAINS]], [z.name for z in self.zones])
        with self.resolver.budget(groups):
            return self._with_blocklists(self._computed(message, domains), message, True)

    def _computed(self, message: ParsedMessage, domains: tuple[str, ...]) -> AuthResults:
        """SPF, DKIM, ARC and DMARC checked here (inside the message's DNS budget)."""
        from_domain = domains[0] if domains else ""
        conn = self.connection(message)
        spf_result, spf_domain, spf_helo = "none", "", "none"
        if conn is not None:
            spf = check_spf(self.resolver, conn.ip, conn.mail_from, conn.helo)
            spf_result, spf_domain = spf.result, spf.domain
            if spf.identity == "mailfrom" and conn.helo:
                spf_helo = check_spf(self.resolver, conn.ip, "", conn.helo).result
            else:
                spf_helo = spf.result if spf.identity == "helo" else "none"
        names = {name.lower() for name, _ in message.headers}
        dkim = verify_dkim(self.resolver, message.raw, self.max_signatures) if "dkim-signature" in names else ()
        arc = verify_arc(self.resolver, message.raw) if "arc-seal" in names else None
        malformed = any(p.rule == HEADER_MALFORMED for p in message.problems)
        if malformed:
            # dkimpy reads a malformed header block its own way (a lone CR is no line end to it,
            # a line that is no field makes it give up): a signature valid over bytes that mail
            # programs and our analyzers read differently proves nothing about what they read.
            dkim = tuple(replace(s, result="policy") if s.result == "pass" else s for s in dkim)
        dmarc_result, policy, proven = "none", "", ""
        if len(domains) > 1 or not _one_from(message):
            # Several From domains (one From with several addresses, or several From fields):
            # never proven, and RFC 7489 6.6.1 says to check each and apply the strictest
            # policy among those that fail. Reading it as "permerror" alone let a forgery of a
            # p=reject domain pass untagged by adding a second From of any other domain. Two From
            # fields of one domain are never proven either: DKIM signs the last one, mail
            # programs and our analyzers show the first, a name and address the sender chose.
            dmarc_result = "permerror"
            worst = -1
            for domain in domains[:MAX_FROM_DOMAINS]:
                dm = self.dmarc.evaluate(domain, spf_result, spf_domain, dkim, message.message_id or domain)
                strength = _STRICTNESS.get(dm.policy, 0)
                if dm.result == "fail" and strength > worst:
                    worst, dmarc_result, policy, from_domain = strength, "fail", dm.policy, domain
        elif from_domain:
            dm = self.dmarc.evaluate(from_domain, spf_result, spf_domain, dkim, message.message_id or from_domain)
            dmarc_result, policy = dm.result, dm.policy or dm.published_policy
            proven = from_domain if dm.result == "pass" else ""
            if dm.result == "fail" and arc is not None and not malformed and self._arc_vouches(arc, from_domain):
                proven = from_domain
        return AuthResults(
            source="computed", authserv_id=self.authserv_id, from_domain=from_domain,
            spf=spf_result, spf_domain=spf_domain, dkim=dkim, dmarc=dmarc_result, dmarc_policy=policy,
            arc=arc.result if arc else "none", arc_sealers=arc.sealers if arc else (), proven_domain=proven,
            spf_helo=spf_helo,
        )

    def _arc_vouches(self, arc: Any, from_domain: str) -> bool:
        """A valid chain whose newest sealer we trust, and whose results say DMARC passed."""
        if arc.result != "pass" or not arc.sealers or arc.sealers[0] not in self.trusted_sealers:
            return False
        earlier = parse_upstream(arc.newest_aar) if arc.newest_aar else None
        return bool(earlier and earlier.dmarc == "pass" and earlier.dmarc_from in ("", from_domain))

    def _with_blocklists(self, result: AuthResults, message: ParsedMessage, may_look_up: bool) -> AuthResults:
        if not self.zones or not may_look_up:
            return result
        conn = self.connection(message)
        domains: list[str] = []
        for host in [result.from_domain, (conn.mail_from.rpartition("@")[2] if conn else "")] + [
                link.host for link in message.links]:
            parts = self.splitter.parts(host) if host else None
            if parts and parts.registrable not in domains:
                domains.append(parts.registrable)
            if len(domains) >= self.max_link_domains + 2:
                break
        listed = dnsbl.check(self.resolver, self.zones, conn.ip if conn else "", tuple(domains))
        return replace(result, blocklists=listed) if listed else result
