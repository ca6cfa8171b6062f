"""The [auth] keys: who we are in Authentication-Results, whose results and Received lines
we believe, and when authentication runs. Imports only ``mailguard.options``."""
from __future__ import annotations

import socket
from typing import Any, Mapping

from mailguard.options import Option


def our_authserv_id(config: Any) -> str:
    """Our name in Authentication-Results: [auth] authserv_id, else [relay] hostname, else
    this machine's name (socket.getfqdn may ask DNS: call it once, off any event loop)."""
    name = config.section("auth")["authserv_id"] or config.section("relay")["hostname"] or socket.getfqdn()
    return str(name).strip().lower().rstrip(".")

CONFIG_SCHEMA: Mapping[str, Option] = {
    "enabled": Option(
        True, "bool",
        "Check SPF, DKIM, DMARC and ARC before the analyzers run (the relay and the milter also write an "
        "Authentication-Results header). Needs DNS; without a reachable resolver results are \"temperror\" "
        "(not checked), never \"fail\".",
    ),
    "authserv_id": Option(
        "", "str",
        "The name in our Authentication-Results headers (RFC 8601 authserv-id); incoming headers bearing it are "
        "removed, so a sender cannot forge our results. Empty: [relay] hostname, else this machine's name.",
    ),
    "trusted_authserv_ids": Option(
        [], "list[str]",
        "authserv-ids of upstream servers whose Authentication-Results are believed and reused instead of "
        "checking again, e.g. [\"mx.provider.example\"] for the provider's Postfix with OpenDMARC, or the "
        "mailbox saved files come from. Only the topmost header of such an id counts. List only servers that "
        "stamp every message and remove forged headers of their own id.",
    ),
    "trusted_relays": Option(
        [], "list[str]",
        "Networks (CIDR) of the practice's or provider's own mail servers. For saved files (mailguard check) "
        "the connecting IP for SPF is taken from the topmost Received line such a host added; Received lines "
        "and Authentication-Results from other hosts are never believed. Empty: saved files get no SPF check.",
    ),
    "trusted_arc_sealers": Option(
        [], "list[str]",
        "Domains of forwarders and mailing lists (ARC-Seal d=) whose ARC chain, when valid, may override a "
        "DMARC failure: their earlier dmarc=pass for the From domain is believed. E.g. [\"google.com\"].",
    ),
    "verify_saved_mail": Option(
        False, "bool",
        "Look up DNS (DKIM keys, DMARC, SPF via trusted_relays) for messages scanned without an SMTP envelope "
        "(mailguard check on saved files, library scans). Off: they only reuse trusted upstream results, so "
        "checking files does no DNS and is never slowed by an unreachable resolver.",
    ),
    "max_signatures": Option(
        5, "int", "Most DKIM signatures verified per message (each costs a DNS lookup); the rest count as "
        "not checked.", minimum=1,
    ),
    "dnsbl_zones": Option(
        [], "list[str]",
        "DNS blocklists to ask, by name from the bundled table (rules/dnsbl.toml or dnsbl_file), e.g. "
        "[\"zen.spamhaus.org\", \"dbl.spamhaus.org\"]. Empty (the default): no blocklist is asked. Read each "
        "list's terms of use first (docs/authentication.md): most are free only for small, non-commercial use "
        "and refuse queries sent through public resolvers.",
    ),
    "dnsbl_file": Option(
        "", "path", "A TOML file of blocklist zones replacing the bundled table (same form as rules/dnsbl.toml)."
    ),
    "dnsbl_max_domains": Option(
        10, "int", "Most distinct link domains looked up in domain blocklists per message.", minimum=0
    ),
}

DNS_SCHEMA: Mapping[str, Option] = {
    "nameservers": Option(
        [], "list[str]",
        "DNS servers as \"HOST:PORT\" (e.g. [\"127.0.0.1:53\"]); empty: the system resolver (/etc/resolv.conf). "
        "Blocklists need a resolver of your own (a local unbound), not a public one.",
    ),
    "timeout_ms": Option(
        1500, "int",
        "Milliseconds one lookup may take. After a timeout, DNS counts as down for down_seconds: lookups answer "
        "\"not checked\" at once, so an unreachable resolver slows one message, not every one.",
        minimum=50,
    ),
    "down_seconds": Option(
        30.0, "float", "How long DNS counts as down after a timeout before one lookup tries again.", minimum=0
    ),
    "cache_size": Option(10_000, "int", "Most DNS answers kept in memory (each for its TTL).", minimum=0),
    "negative_ttl": Option(
        300.0, "float", "Seconds a \"no such name\" or empty answer is kept.", minimum=0
    ),
    "max_ttl": Option(3600.0, "float", "Longest time any answer is kept, whatever its TTL.", minimum=0),
}
