"""DNS blocklists: the connecting IP in IP lists (Spamhaus ZEN style), the sender's and the
links' registrable domains in domain lists (Spamhaus DBL, SURBL, URIBL).

Each zone's return codes and their meanings come from a table (rules/dnsbl.toml, or the
operator's own file); an answer the table does not list is ignored, because lists answer
with special codes when they refuse a query, and a refusal must never read as a listing.
Lookups go through the shared resolver, so answers are cached and an outage costs nothing.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from mailguard.auth.resolver import Resolver
from mailguard.options import ConfigError, read_data_toml
from mailguard.resources import rules_file


@dataclass(frozen=True)
class Zone:
    name: str
    kind: str  # "ip" | "domain"
    rule: str
    score: float
    codes: Mapping[str, str]
    terms: str = ""


def load_zones(path: Path | None) -> dict[str, Zone]:
    """Every zone of the table (the bundled one when ``path`` is None)."""
    source = path or rules_file("dnsbl.toml")
    data = read_data_toml(source, "blocklist table")
    zones: dict[str, Zone] = {}
    for name, spec in (data.get("zones") or {}).items():
        where = f"{source}: [zones.\"{name}\"]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table")
        kind = spec.get("kind")
        if kind not in ("ip", "domain"):
            raise ConfigError(f"{where} kind must be \"ip\" or \"domain\", got {kind!r}")
        rule, score, codes = spec.get("rule", ""), spec.get("score", 1.0), spec.get("codes", {})
        if not isinstance(rule, str) or not rule.isupper() or not rule.replace("_", "").isalnum():
            raise ConfigError(f"{where} rule must be an upper-case id like AUTH_DNSBL_ZEN, got {rule!r}")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise ConfigError(f"{where} score must be a number, got {score!r}")
        if not isinstance(codes, dict) or not codes or not all(isinstance(v, str) for v in codes.values()):
            raise ConfigError(f"{where} codes must be a table of \"127.0.0.x\" = \"what it means\"")
        zones[name.lower().rstrip(".")] = Zone(name.lower().rstrip("."), kind, rule, float(score),
                                              MappingProxyType(dict(codes)), str(spec.get("terms", "")))
    return zones


def select_zones(settings: Mapping[str, Any], resolve_path: Any) -> tuple[Zone, ...]:
    """The zones [auth] dnsbl_zones names, each checked to exist in the table."""
    names = settings.get("dnsbl_zones") or ()
    if not names:
        return ()
    table = load_zones(resolve_path(settings["dnsbl_file"]) if settings.get("dnsbl_file") else None)
    chosen = []
    for name in names:
        zone = table.get(name.lower().rstrip("."))
        if zone is None:
            known = ", ".join(sorted(table)) or "(none)"
            raise ConfigError(f"[auth] dnsbl_zones: {name!r} is not in the blocklist table; known: {known}")
        chosen.append(zone)
    return tuple(chosen)


def reversed_ip(ip: str) -> str | None:
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return None
    if not address.is_global:
        return None  # private, loopback: never listed, never worth a query
    if address.version == 4:
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


def check(resolver: Resolver, zones: tuple[Zone, ...], ip: str,
          domains: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """(zone, listed IP or domain, meaning) for every listing found."""
    found: list[tuple[str, str, str]] = []
    reverse = reversed_ip(ip) if ip else None
    for zone in zones:
        targets = [(ip, reverse)] if zone.kind == "ip" and reverse else []
        if zone.kind == "domain":
            targets = [(d, d) for d in domains]
        for shown, query in targets:
            answer = resolver.lookup(f"{query}.{zone.name}", "A")
            meanings = [zone.codes[code] for code in answer.records if code in zone.codes]
            if answer.found and meanings:
                found.append((zone.name, shown, "; ".join(dict.fromkeys(meanings))))
    return tuple(found)
