"""Lookalike senders and links: typosquats, homoglyphs and impersonated names.

The attack a front desk falls for most is mail that only looks like it comes from someone
they trust: ``paypa1.com``, ``availity-billing.net``, "Dr. Jane Roe <drjaneroe1@gmail.com>",
a Reply-To that quietly sends the answer to a Gmail account, or a link that reads
``www.chase.com`` and goes elsewhere. This analyzer checks every place a person sees or
replies to (From, Sender, Reply-To, the envelope sender, link hosts) against the protected
set: the built-in brand table (``rules/brands.toml``), the practice's own and partners'
domains (``protected_domains``) and the relay's own domains. The domain matching itself is
``lookalike_domains.DomainMatcher``; this module turns matches into findings a person can
read.

Scores: a clear imitation in a sender address quarantines on its own (10 = the default
quarantine_at); weaker signals (a link to a lookalike, a brand in the display name of an
unrelated sender) tag (5) or add to other evidence.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.lookalike_brands import Brand, check_domain, load_brands, load_freemail
from mailguard.analyzers.lookalike_domains import (
    DomainMatcher, DomainSplitter, Match, Protected, is_ip_host,
)
from mailguard.analyzers.lookalike_glyphs import GlyphTable, mixed_scripts
from mailguard.config import ConfigError, Option
from mailguard.message import (
    Address, Link, ParsedMessage, idna_to_ascii, idna_to_unicode, iter_all_messages, url_host,
)
from mailguard.model import Finding
from mailguard.resources import rules_file

# Rule ids and their built-in scores (operators override them in [policy] scores).
SCORES: Mapping[str, float] = {
    "LOOKALIKE_SENDER_DOMAIN": 10.0,
    "LOOKALIKE_REPLY_TO_DOMAIN": 10.0,
    "LOOKALIKE_ENVELOPE_DOMAIN": 6.0,
    "LOOKALIKE_SENDER_SUBDOMAIN": 4.0,
    "LOOKALIKE_LINK_DOMAIN": 5.0,
    "LOOKALIKE_MIXED_SCRIPT_DOMAIN": 4.0,
    "LOOKALIKE_DISPLAY_NAME_BRAND": 5.0,
    "LOOKALIKE_DISPLAY_NAME_PERSON": 5.0,
    "LOOKALIKE_DISPLAY_NAME_PERSON_FREEMAIL": 6.0,
    "LOOKALIKE_DISPLAY_NAME_ADDRESS": 4.0,
    "LOOKALIKE_REPLY_TO_DIVERSION": 4.0,
    "LOOKALIKE_REPLY_TO_FREEMAIL": 6.0,
    "LOOKALIKE_LINK_TEXT_MISMATCH": 2.0,
    "LOOKALIKE_LINK_TEXT_PROTECTED": 5.0,
    "LOOKALIKE_LINK_IP": 3.0,
    "LOOKALIKE_LINK_PUNYCODE": 2.0,
}

# Built-in brand names this short are matched by exact forms only (see __init__).
SHORT_BRAND = 4

# Titles and credentials dropped before comparing a display name with protected_names.
_TITLES = frozenset(
    "dr doctor mr mrs ms miss mx prof professor phd psyd md do lcsw lmft lpc lpcc lmhc ma ms msw np pa rn "
    "jr sr ii iii".split()
)
_EMAIL_IN_NAME = re.compile(r"[\w.+'-]+@((?:[\w-]+\.)+[\w-]{2,})", re.UNICODE)
_DOMAIN_TEXT = re.compile(
    r"^(?:https?://)?((?:[\w-]+\.)+[a-z\u00a1-\uffff][\w-]{1,62})\.?(?:[:/?#].*)?$", re.IGNORECASE | re.UNICODE
)
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
# Hosts that browsers read as an internet address: decimal (3232235777), hex (0xc0a80001)
# or dotted forms with hex or octal parts (0xc0.0250.1.1).
_OBFUSCATED_IP = re.compile(r"^(?:\d{8,10}|0x[0-9a-f]{1,8}|(?:(?:0x[0-9a-f]+|0[0-7]*|\d+)\.){1,3}(?:0x[0-9a-f]+|0[0-7]*|\d+))$", re.I)


@dataclass(frozen=True)
class _Place:
    """Where a person sees an address: the rule and the words for it."""

    rule: str
    label: str


_FROM = _Place("LOOKALIKE_SENDER_DOMAIN", "Sender domain")
_SENDER = _Place("LOOKALIKE_SENDER_DOMAIN", "Sender domain (Sender header)")
_REPLY_TO = _Place("LOOKALIKE_REPLY_TO_DOMAIN", "Reply-To domain")
_ENVELOPE = _Place("LOOKALIKE_ENVELOPE_DOMAIN", "Envelope sender domain")


def _name_tokens(text: str, glyphs: GlyphTable) -> tuple[str, ...]:
    """Display-name words as look-alike skeletons (case-folded, accents off, Cyrillic and
    digit look-alikes read as the letters they imitate), so "PayPaI" and "Jаne R0e" match
    the names they imitate."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return tuple(glyphs.skeleton(w) for w in _WORDS.findall(text))


class LookalikeAnalyzer(Analyzer):
    name = "lookalike"
    config_schema = {
        "protected_domains": Option(
            [], "list[str]",
            "The practice's own domains and its partners' (billing service, labs, referring "
            "practices). Mail and links imitating them are flagged; mail from them never is.",
        ),
        "protected_names": Option(
            [], "list[str]",
            "Names of staff, owners and billing contacts (\"Dr. Jane Roe\"). Mail whose display "
            "name carries one of them (titles such as Dr. or PsyD ignored) but comes from outside "
            "protected_domains and the relay's relay_domains is flagged, more strongly from free mail.",
        ),
        "allow_domains": Option(
            [], "list[str]",
            "Domains never called lookalikes: a real partner whose name happens to resemble a "
            "protected one.",
        ),
        "brands_file": Option(
            "", "path",
            "Brand table (TOML): brands, the domains they send from, and their names. Empty for "
            "the built-in rules/brands.toml.",
        ),
        "freemail_file": Option(
            "", "path", "Free-mail provider list (TOML, domains = [...]). Empty for the built-in rules/freemail.toml."
        ),
        "confusables_file": Option(
            "", "path",
            "Look-alike character table (TOML). Empty for the built-in rules/confusables.toml.",
        ),
        "check_links": Option(True, "bool", "Also check the hosts of links in the message bodies."),
        "max_links": Option(
            500, "int", "Most distinct link hosts checked per message (bounds work on huge newsletters).", minimum=1
        ),
    }

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        config = context.config
        glyphs = GlyphTable.load(self._data_path("confusables_file", "confusables.toml"))
        table = load_brands(self._data_path("brands_file", "brands.toml"))
        self.freemail = load_freemail(self._data_path("freemail_file", "freemail.toml"))
        self.glyphs = glyphs
        self.brands = table.brands
        self.check_links = bool(settings["check_links"])
        self.max_links = int(settings["max_links"])
        self.splitter = DomainSplitter()
        own = list(self._domains(settings["protected_domains"], "protected_domains"))
        own += self._relay_domains(config)
        self.own_domains = frozenset(self._registrable(d) for d in own)
        allow = [self._registrable(d) for d in self._domains(settings["allow_domains"], "allow_domains")]

        self.brand_of = self._brand_ownership()
        protected = self._protected_set()
        self.matcher = DomainMatcher(
            # Free-mail providers are real services, never imitations (mail.com is not gmail.com).
            list(protected.values()), owned=[*self.brand_of, *allow, *self.freemail], glyphs=glyphs,
            combo_words=table.combo_words, splitter=self.splitter,
        )
        self.generic_words = frozenset(glyphs.skeleton(w) for w in table.generic_words)
        self.titles = frozenset(glyphs.skeleton(w) for w in _TITLES)
        self._brand_names = self._compile_brand_names()
        self._person_names = self._compile_person_names(settings["protected_names"])

    # ------------------------------------------------------------------ set-up helpers

    def _brand_ownership(self) -> dict[str, Brand]:
        """Registrable domain -> the brand that owns it (its domains and also_owns)."""
        owners: dict[str, Brand] = {}
        for brand in self.brands:
            for d in brand.domains + brand.also_owns:
                parts = self.splitter.parts(d)
                if parts is not None:
                    owners.setdefault(parts.registrable, brand)
        return owners

    def _protected_set(self) -> dict[str, Protected]:
        """The brands' domains, then the practice's own (which are always matched in full,
        with the brand's name when the practice lists a brand domain)."""
        protected: dict[str, Protected] = {}
        for brand in self.brands:
            for d in brand.domains:
                parts = self.splitter.parts(d)
                if parts is None or parts.registrable in protected:
                    continue
                # Typing slips of a built-in name of 4 letters or fewer are mostly other
                # real companies (ibm.com is one slip from ibx.com): exact forms only.
                fuzzy = d not in brand.loose and len(parts.label) > SHORT_BRAND
                protected[parts.registrable] = Protected(
                    parts.registrable, parts.label, parts.suffix, brand.name, fuzzy, brand.other_endings_owned
                )
        for d in sorted(self.own_domains):
            parts = self.splitter.parts(d)
            if parts is None:
                continue
            owner = self.brand_of.get(parts.registrable)
            protected[parts.registrable] = Protected(
                parts.registrable, parts.label, parts.suffix, owner.name if owner else "", True,
                owner.other_endings_owned if owner else False,
            )
        return protected

    def _data_path(self, key: str, builtin: str) -> Path:
        value = str(self.settings[key])
        if not value:
            return rules_file(builtin)
        path = self.context.config.resolve_path(value)
        if not path.is_file():
            raise ConfigError(f"[lookalike] {key}: {path} does not exist or is not a file; fix the path or leave it empty for the built-in table")
        return path

    @staticmethod
    def _domains(values: Iterable[str], key: str) -> Iterator[str]:
        for value in values:
            domain = value.strip().lower()
            if domain.startswith("@"):
                domain = domain[1:]
            yield check_domain(domain, f"[lookalike] {key}")

    @staticmethod
    def _relay_domains(config: Any) -> list[str]:
        """The relay's own domains are the practice's: protect them too (the key may not
        exist in every version of the relay)."""
        try:
            values = config.section("relay").get("relay_domains", ())
        except KeyError:
            return []
        out = []
        for value in values or ():
            domain = str(value).strip().lower().lstrip("@").lstrip(".")
            if domain and "." in domain:
                out.append(domain)
        return out

    def _registrable(self, domain: str) -> str:
        parts = self.splitter.parts(domain)
        return parts.registrable if parts is not None else domain

    def _compile_brand_names(self) -> list[tuple[tuple[str, ...], Brand, bool]]:
        out = []
        for brand in self.brands:
            for name in brand.names:
                tokens = _name_tokens(name, self.glyphs)
                if tokens:
                    out.append((tokens, brand, False))
                joined = "".join(tokens)
                if len(tokens) > 1:
                    out.append(((joined,), brand, False))
            for name in brand.word_names:
                tokens = _name_tokens(name, self.glyphs)
                if tokens:
                    out.append((tokens, brand, True))
        return out

    def _compile_person_names(self, names: Iterable[str]) -> list[tuple[str, frozenset[str]]]:
        out = []
        for name in names:
            tokens = frozenset(t for t in _name_tokens(name, self.glyphs) if t not in self.titles)
            if tokens:
                out.append((name.strip(), tokens))
        return out

    # ------------------------------------------------------------------ analysis

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        findings: list[Finding] = []
        flagged: set[str] = set()
        from_match = self._sender_domains(message, findings, flagged)
        self._display_names(message, findings)
        self._reply_to(message, findings, from_match)
        if self.check_links:
            self._links(message, findings, flagged)
        return findings

    def _score(self, rule: str) -> float:
        return SCORES[rule]

    def _sender_domains(self, message: ParsedMessage, out: list[Finding], flagged: set[str]) -> Match | None:
        places: list[tuple[_Place, Address]] = []
        places += [(_FROM, a) for a in message.from_[:5]]
        places += [(_SENDER, a) for a in message.sender[:2]]
        places += [(_REPLY_TO, a) for a in message.reply_to[:5]]
        envelope = message.envelope_sender
        if envelope is not None:
            places.append((_ENVELOPE, envelope))
        else:
            places += [(_ENVELOPE, a) for a in message.return_path[:1]]
        from_match: Match | None = None
        for place, address in places:
            domain = address.domain
            if not domain or domain in flagged:
                continue
            match = self.matcher.match(domain)
            if match is None:
                parts = self.splitter.parts(domain)
                mixed = mixed_scripts(parts.ulabel) if parts is not None else ()
                if mixed and place is not _ENVELOPE:
                    flagged.add(domain)
                    names = " and ".join(self.glyphs.script_name(s) for s in mixed)
                    out.append(self.finding(
                        "LOOKALIKE_MIXED_SCRIPT_DOMAIN", self._score("LOOKALIKE_MIXED_SCRIPT_DOMAIN"),
                        f"{place.label} {domain} mixes {names} letters, a trick used to imitate real names",
                        {"domain": domain, "ascii_domain": address.ascii_domain, "scripts": list(mixed), "where": place.label},
                    ))
                continue
            if match.registrable in flagged:
                continue  # the same imitation already reported for a more visible place
            flagged.add(match.registrable)
            if place in (_FROM, _SENDER) and from_match is None:
                from_match = match
            rule = place.rule
            if match.technique == "subdomain":
                # A brand word in front of another domain (outlook.example-vendor.com) is
                # common in real mail: evidence, never a verdict on its own.
                if place is _ENVELOPE:
                    continue
                rule = "LOOKALIKE_SENDER_SUBDOMAIN"
            out.append(self.finding(
                rule, self._score(rule), f"{place.label} {match.sentence()}",
                self._match_details(match, place.label, address),
            ))
        return from_match

    @staticmethod
    def _match_details(match: Match, where: str, address: Address | None = None) -> dict[str, Any]:
        details: dict[str, Any] = {
            "where": where, "domain": match.host, "registrable": match.registrable,
            "imitates": match.target.domain, "technique": match.technique,
        }
        if match.target.owner:
            details["brand"] = match.target.owner
        if match.distance:
            details["distance"] = match.distance
        if address is not None and address.ascii_domain != address.domain:
            details["ascii_domain"] = address.ascii_domain
        return details

    # ------------------------------------------------------------------ display names

    def _owned_by(self, domain: str, brand: Brand) -> bool:
        registrable = self._registrable(domain)
        return self.brand_of.get(registrable) is brand

    def _display_names(self, message: ParsedMessage, out: list[Finding]) -> None:
        for address in message.from_[:3]:
            name = address.display_name
            if not name:
                continue
            domain = address.domain
            tokens = _name_tokens(name, self.glyphs)
            brand = self._brand_in_name(tokens)
            if brand is not None and domain and not self._owned_by(domain, brand) \
                    and self._registrable(domain) not in self.own_domains:
                where = domain if "." in domain else f"an address without a real domain ({domain})"
                out.append(self.finding(
                    "LOOKALIKE_DISPLAY_NAME_BRAND", self._score("LOOKALIKE_DISPLAY_NAME_BRAND"),
                    f"The sender calls itself \"{name}\" but writes from {where}, which is not one of "
                    f"{brand.name}'s domains",
                    {"brand": brand.name, "domain": domain},
                ))
            person = self._person_in_name(tokens)
            if person is not None and self._registrable(domain) not in self.own_domains:
                free = self._registrable(domain) in self.freemail
                rule = "LOOKALIKE_DISPLAY_NAME_PERSON_FREEMAIL" if free else "LOOKALIKE_DISPLAY_NAME_PERSON"
                where = f"a free email account at {domain}" if free else f"{domain}, outside the practice's domains"
                out.append(self.finding(
                    rule, self._score(rule),
                    f"The sender uses the name \"{person}\" but writes from {where}; check with them "
                    "another way before acting on it",
                    {"protected_name": person, "domain": domain, "freemail": free},
                ))
            self._address_in_name(address, out)

    def _brand_in_name(self, tokens: tuple[str, ...]) -> Brand | None:
        if not tokens:
            return None
        for pattern, brand, word_only in self._brand_names:
            n = len(pattern)
            for i in range(len(tokens) - n + 1):
                if tokens[i:i + n] != pattern:
                    continue
                if not word_only:
                    return brand
                rest = tokens[:i] + tokens[i + n:]
                if all(t in self.generic_words for t in rest):
                    return brand
        return None

    def _person_in_name(self, tokens: tuple[str, ...]) -> str | None:
        present = frozenset(t for t in tokens if t not in self.titles)
        for name, needed in self._person_names:
            if needed <= present:
                return name
        return None

    def _address_in_name(self, address: Address, out: list[Finding]) -> None:
        name = address.display_name
        if "@" not in name or " via " in f" {name.lower()} ":
            return
        found = _EMAIL_IN_NAME.search(name)
        if not found or not address.domain:
            return
        shown = idna_to_unicode(found.group(1).lower().rstrip("."))
        shown_reg, real_reg = self._registrable(shown), self._registrable(address.domain)
        if shown_reg == real_reg:
            return
        shown_brand = self.brand_of.get(shown_reg)
        if shown_brand is not None and self.brand_of.get(real_reg) is shown_brand:
            return
        out.append(self.finding(
            "LOOKALIKE_DISPLAY_NAME_ADDRESS", self._score("LOOKALIKE_DISPLAY_NAME_ADDRESS"),
            f"The sender's name shows the address {found.group(0)} but the mail really comes from "
            f"{address.domain}",
            {"shown_domain": shown, "domain": address.domain},
        ))

    # ------------------------------------------------------------------ Reply-To

    def _is_protected_sender(self, domain: str) -> bool:
        registrable = self._registrable(domain)
        if registrable in self.freemail:
            return False
        return registrable in self.own_domains or registrable in self.brand_of

    def _same_owner(self, a: str, b: str) -> bool:
        ra, rb = self._registrable(a), self._registrable(b)
        if ra == rb:
            return True
        brand = self.brand_of.get(ra)
        return brand is not None and self.brand_of.get(rb) is brand

    def _reply_to(self, message: ParsedMessage, out: list[Finding], from_match: Match | None) -> None:
        sender = message.from_address
        if sender is None or not sender.domain or not message.reply_to:
            return
        protected = self._is_protected_sender(sender.domain)
        if not protected and from_match is None:
            return
        for reply in message.reply_to[:5]:
            if not reply.domain or self._same_owner(reply.domain, sender.domain):
                continue
            free = self._registrable(reply.domain) in self.freemail
            rule = "LOOKALIKE_REPLY_TO_FREEMAIL" if free else "LOOKALIKE_REPLY_TO_DIVERSION"
            shown = from_match.target.domain if from_match is not None and not protected else sender.domain
            what = "a free email account at " + reply.domain if free else reply.domain
            claim = f"claims to come from {shown}" if protected else f"imitates {shown}"
            out.append(self.finding(
                rule, self._score(rule),
                f"The message {claim}, but replies would go to {what}",
                {"from_domain": sender.domain, "reply_to_domain": reply.domain, "freemail": free},
            ))
            return

    # ------------------------------------------------------------------ links

    def _links(self, message: ParsedMessage, out: list[Finding], flagged: set[str]) -> None:
        lookalikes: list[Match] = []
        mismatches: list[tuple[str, str, bool]] = []
        ips: list[str] = []
        puny: list[str] = []
        seen_hosts: set[str] = set()
        seen_pairs: set[tuple[str, str]] = set()
        for link in self._all_links(message):
            host = link.host
            if not host:
                continue
            if host not in seen_hosts:
                if len(seen_hosts) >= self.max_links:
                    break
                seen_hosts.add(host)
                self._check_link_host(host, flagged, lookalikes, ips, puny)
            if link.text and link.source == "html":
                self._check_link_text(link, seen_pairs, mismatches)
        if lookalikes:
            first = lookalikes[0]
            more = f" (and {len(lookalikes) - 1} more look-alike link domains)" if len(lookalikes) > 1 else ""
            out.append(self.finding(
                "LOOKALIKE_LINK_DOMAIN", self._score("LOOKALIKE_LINK_DOMAIN"),
                f"A link goes to {first.shown_host}, which imitates {first.target.shown}: "
                f"{first.explanation}{more}",
                {**self._match_details(first, "link"), "domains": [m.host for m in lookalikes[:10]]},
            ))
        protected_shown = [m for m in mismatches if m[2]]
        if protected_shown or mismatches:
            shown, real, is_protected = (protected_shown or mismatches)[0]
            rule = "LOOKALIKE_LINK_TEXT_PROTECTED" if is_protected else "LOOKALIKE_LINK_TEXT_MISMATCH"
            more = f" ({len(mismatches) - 1} more links like this)" if len(mismatches) > 1 else ""
            out.append(self.finding(
                rule, self._score(rule),
                f"A link shows {shown} but really goes to {real}{more}",
                {"shown": shown, "actual": real, "count": len(mismatches)},
            ))
        if ips:
            out.append(self.finding(
                "LOOKALIKE_LINK_IP", self._score("LOOKALIKE_LINK_IP"),
                f"A link goes to a bare internet address ({ips[0]}) instead of a named website; real "
                "companies do not send links like that",
                {"hosts": ips[:10]},
            ))
        if puny:
            out.append(self.finding(
                "LOOKALIKE_LINK_PUNYCODE", self._score("LOOKALIKE_LINK_PUNYCODE"),
                f"A link goes to {idna_to_unicode(puny[0])}, a web address written with special "
                f"characters (really {puny[0]}), which is often used to imitate real names",
                {"hosts": puny[:10]},
            ))

    @staticmethod
    def _all_links(message: ParsedMessage) -> Iterator[Link]:
        for part in iter_all_messages(message):
            yield from part.links

    def _check_link_host(
        self, host: str, flagged: set[str], lookalikes: list[Match], ips: list[str], puny: list[str]
    ) -> None:
        if is_ip_host(host) or _OBFUSCATED_IP.match(host):
            ips.append(host)
            return
        unicode_host = idna_to_unicode(host)
        if not unicode_host or self.splitter.parts(unicode_host) is None:
            return  # not a name anyone can register: nothing to imitate or visit
        match = self.matcher.match(unicode_host)
        if match is not None and match.technique == "subdomain":
            match = None  # a brand word as a subdomain of another site is too common in links
        if match is not None:
            if match.registrable not in flagged:
                flagged.add(match.registrable)
                lookalikes.append(match)
            return
        if ("xn--" in host or not host.isascii()) and not self.matcher.is_owned(host):
            puny.append(idna_to_ascii(unicode_host))

    def _check_link_text(self, link: Link, seen: set[tuple[str, str]], out: list[tuple[str, str, bool]]) -> None:
        text = link.text.strip().strip("<>[]()\"'").strip()
        if not text or " " in text or len(text) > 2048:
            return
        found = _DOMAIN_TEXT.match(text)
        if not found:
            return
        shown = url_host(found.group(0) if "://" in found.group(0) else "http://" + found.group(0))
        if not shown or "." not in shown:
            return
        shown_parts = self.splitter.parts(shown)
        real_is_ip = is_ip_host(link.host) or bool(_OBFUSCATED_IP.match(link.host))
        real_parts = None if real_is_ip else self.splitter.parts(link.host)
        if shown_parts is None or shown_parts.unlisted or (real_parts is None and not real_is_ip):
            return
        if real_parts is not None and self._same_owner(shown_parts.registrable, real_parts.registrable):
            return
        real = link.host
        key = (shown_parts.registrable, real_parts.registrable if real_parts else real)
        if key in seen:
            return
        seen.add(key)
        is_protected = self._is_protected_sender(shown_parts.registrable) or shown_parts.registrable in self.brand_of
        out.append((shown_parts.shown_registrable, idna_to_unicode(real), is_protected))
