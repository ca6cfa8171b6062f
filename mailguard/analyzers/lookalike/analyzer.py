"""Lookalike senders and links: typosquats, homoglyphs and impersonated names.

The attack a front desk falls for most is mail that only looks like it comes from someone
they trust: ``paypa1.com``, ``availity-billing.net``, "Dr. Jane Roe <drjaneroe1@gmail.com>",
a Reply-To that quietly sends the answer to a Gmail account, or a link that reads
``www.chase.com`` and goes elsewhere. This analyzer checks every place a person sees or
replies to (From, Sender, Reply-To, the envelope sender, link hosts) against the protected
set: the built-in brand table (``rules/brands.toml``), the practice's own and partners'
domains (``protected_domains``) and the relay's own domains. The domain matching itself is
``domains.DomainMatcher``; this module turns matches into findings a person can
read.

Scores: a clear imitation in a sender address quarantines on its own (10 = the default
quarantine_at); weaker signals (a link to a lookalike, a brand in the display name of an
unrelated sender) tag (5) or add to other evidence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.lookalike.brands import Brand, Ownership, check_domain, load_brands, load_freemail
from mailguard.analyzers.lookalike.domains import DomainMatcher, DomainSplitter, Match, Protected
from mailguard.analyzers.lookalike.glyphs import GlyphTable, mixed_scripts
from mailguard.analyzers.lookalike.links import LinkInspector
from mailguard.analyzers.lookalike.names import NameMatcher
from mailguard.options import ConfigError, Option
from mailguard.message import Address, ParsedMessage, idna_to_unicode
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
    # A web address with a domain before an "@" (https://microsoft.com@x.example/): the browser
    # takes it for a user name and goes to what follows. No real link is written that way.
    "LOOKALIKE_LINK_USERINFO": 3.0,
    # A host name written in percent escapes (%6d%69...): browsers decode it, filters reading
    # the address as written do not. No real site writes its name that way.
    "LOOKALIKE_LINK_ENCODED_HOST": 2.0,
}

# Built-in brand names this short are matched by exact forms only (see _protected_set).
SHORT_BRAND = 4
_EMAIL_IN_NAME = re.compile(r"[\w.+'-]+@((?:[\w-]+\.)+[\w-]{2,})", re.UNICODE)


@dataclass(frozen=True)
class _Place:
    """Where a person sees an address: the rule and the words for it."""

    rule: str
    label: str


_FROM = _Place("LOOKALIKE_SENDER_DOMAIN", "Sender domain")
_SENDER = _Place("LOOKALIKE_SENDER_DOMAIN", "Sender domain (Sender header)")
_REPLY_TO = _Place("LOOKALIKE_REPLY_TO_DOMAIN", "Reply-To domain")
_ENVELOPE = _Place("LOOKALIKE_ENVELOPE_DOMAIN", "Envelope sender domain")


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
        self.splitter = DomainSplitter()
        own = list(self._domains(settings["protected_domains"], "protected_domains"))
        own += self._relay_domains(config)
        self.own_domains = frozenset(self._registrable(d) for d in own)
        allow = [self._registrable(d) for d in self._domains(settings["allow_domains"], "allow_domains")]

        self.brand_of = self._brand_ownership()
        self.ownership = Ownership(self.brand_of, self.own_domains, self.freemail, self.splitter)
        self.matcher = DomainMatcher(
            # Free-mail providers are real services, never imitations (mail.com is not gmail.com).
            list(self._protected_set().values()), owned=[*self.brand_of, *allow, *self.freemail],
            glyphs=glyphs, combo_words=table.combo_words, splitter=self.splitter,
        )
        self.names = NameMatcher(self.brands, settings["protected_names"], table.generic_words, glyphs)
        self.links = LinkInspector(self.matcher, self.ownership, int(settings["max_links"]))

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
                        "LOOKALIKE_MIXED_SCRIPT_DOMAIN", SCORES["LOOKALIKE_MIXED_SCRIPT_DOMAIN"],
                        f"{place.label} {domain} ({address.ascii_domain}) mixes {names} letters, a trick "
                        "used to imitate real names",
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
                rule, SCORES[rule], f"{place.label} {match.sentence()}",
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

    def _display_names(self, message: ParsedMessage, out: list[Finding]) -> None:
        own = self.ownership
        for address in message.from_[:3]:
            name, domain = address.display_name, address.domain
            if not name:
                continue
            brand = self.names.brand_in(name)
            if brand is not None and domain and not own.owned_by(domain, brand) and not own.is_own(domain):
                where = domain if "." in domain else f"an address without a real domain ({domain})"
                out.append(self.finding(
                    "LOOKALIKE_DISPLAY_NAME_BRAND", SCORES["LOOKALIKE_DISPLAY_NAME_BRAND"],
                    f"The sender calls itself \"{name}\" but writes from {where}, which is not one of "
                    f"{brand.name}'s domains",
                    {"brand": brand.name, "domain": domain},
                ))
            person = self.names.person_in(name)
            if person is not None and not own.is_own(domain):
                free = own.is_freemail(domain)
                rule = "LOOKALIKE_DISPLAY_NAME_PERSON_FREEMAIL" if free else "LOOKALIKE_DISPLAY_NAME_PERSON"
                where = f"a free email account at {domain}" if free else f"{domain}, outside the practice's domains"
                out.append(self.finding(
                    rule, SCORES[rule],
                    f"The sender uses the name \"{person}\" but writes from {where}; check with them "
                    "another way before acting on it",
                    {"protected_name": person, "domain": domain, "freemail": free},
                ))
            self._address_in_name(address, out)

    def _address_in_name(self, address: Address, out: list[Finding]) -> None:
        """"billing@availity.com" <x@mailer.biz>: the name shows an address that is not
        the real one. Mailing lists rewrite senders as "Name via List": not flagged."""
        name = address.display_name
        if "@" not in name or " via " in f" {name.lower()} ":
            return
        found = _EMAIL_IN_NAME.search(name[:512])
        if not found or not address.domain:
            return
        shown = idna_to_unicode(found.group(1).lower().rstrip("."))
        if self.ownership.same_owner(shown, address.domain):
            return
        out.append(self.finding(
            "LOOKALIKE_DISPLAY_NAME_ADDRESS", SCORES["LOOKALIKE_DISPLAY_NAME_ADDRESS"],
            f"The sender's name shows the address {found.group(0)} but the mail really comes from "
            f"{address.domain}",
            {"shown_domain": shown, "domain": address.domain},
        ))

    # ------------------------------------------------------------------ Reply-To

    def _reply_to(self, message: ParsedMessage, out: list[Finding], from_match: Match | None) -> None:
        """Replies diverted: From is (or imitates) a protected domain, Reply-To goes to
        another owner's domain or to free mail."""
        sender = message.from_address
        if sender is None or not sender.domain or not message.reply_to:
            return
        own = self.ownership
        protected = own.is_protected(sender.domain)
        if not protected and from_match is None:
            return
        for reply in message.reply_to[:5]:
            if not reply.domain or own.same_owner(reply.domain, sender.domain):
                continue
            free = own.is_freemail(reply.domain)
            rule = "LOOKALIKE_REPLY_TO_FREEMAIL" if free else "LOOKALIKE_REPLY_TO_DIVERSION"
            shown = from_match.target.domain if from_match is not None and not protected else sender.domain
            what = "a free email account at " + reply.domain if free else reply.domain
            claim = f"claims to come from {shown}" if protected else f"imitates {shown}"
            out.append(self.finding(
                rule, SCORES[rule], f"The message {claim}, but replies would go to {what}",
                {"from_domain": sender.domain, "reply_to_domain": reply.domain, "freemail": free},
            ))
            return

    # ------------------------------------------------------------------ links

    def _links(self, message: ParsedMessage, out: list[Finding], flagged: set[str]) -> None:
        evidence = self.links.inspect(message, flagged)
        if evidence.lookalikes:
            first, count = evidence.lookalikes[0], len(evidence.lookalikes)
            more = f" (and {count - 1} more look-alike link domains)" if count > 1 else ""
            out.append(self.finding(
                "LOOKALIKE_LINK_DOMAIN", SCORES["LOOKALIKE_LINK_DOMAIN"],
                f"A link goes to {first.shown_host}, which imitates {first.target.shown}: {first.explanation}{more}",
                {**self._match_details(first, "link"), "domains": [m.host for m in evidence.lookalikes[:10]]},
            ))
        if evidence.mismatches:
            worst = next((m for m in evidence.mismatches if m.shown_is_protected), evidence.mismatches[0])
            rule = "LOOKALIKE_LINK_TEXT_PROTECTED" if worst.shown_is_protected else "LOOKALIKE_LINK_TEXT_MISMATCH"
            count = len(evidence.mismatches)
            more = f" ({count - 1} more links like this)" if count > 1 else ""
            out.append(self.finding(
                rule, SCORES[rule], f"A link shows {worst.shown} but really goes to {worst.actual}{more}",
                {"shown": worst.shown, "actual": worst.actual, "count": count},
            ))
        if evidence.ips:
            out.append(self.finding(
                "LOOKALIKE_LINK_IP", SCORES["LOOKALIKE_LINK_IP"],
                f"A link goes to a bare internet address ({evidence.ips[0]}) instead of a named website; real "
                "companies do not send links like that",
                {"hosts": evidence.ips[:10]},
            ))
        if evidence.userinfo:
            shown, real = evidence.userinfo[0]
            out.append(self.finding(
                "LOOKALIKE_LINK_USERINFO", SCORES["LOOKALIKE_LINK_USERINFO"],
                f"A link's address begins with {shown} but really goes to {real}: a browser ignores everything "
                "before the @ in a web address, so the first name is only there to fool the reader",
                {"shown": shown, "host": real, "hosts": [h for _, h in evidence.userinfo[:10]]},
            ))
        if evidence.encoded:
            written, real = evidence.encoded[0]
            out.append(self.finding(
                "LOOKALIKE_LINK_ENCODED_HOST", SCORES["LOOKALIKE_LINK_ENCODED_HOST"],
                f"A link's site name is written in escape codes ({written[:60]}), which a browser reads as {real}: "
                "real sites never write their names that way, it is done to slip past filters",
                {"written": written[:200], "host": real, "hosts": [h for _, h in evidence.encoded[:10]]},
            ))
        if evidence.punycode:
            host = evidence.punycode[0]
            out.append(self.finding(
                "LOOKALIKE_LINK_PUNYCODE", SCORES["LOOKALIKE_LINK_PUNYCODE"],
                f"A link goes to {idna_to_unicode(host)}, a web address written with special characters "
                f"(really {host}), which is often used to imitate real names",
                {"hosts": evidence.punycode[:10]},
            ))
