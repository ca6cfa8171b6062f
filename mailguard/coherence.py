"""Coherence: does what the message asks fit who it claims to be?

A phishing message needs three things at once: a **claim** of an identity the reader
trusts (a brand or company in the display name, subject or opening words, or simply the
From domain), a **request** to act (sign in, pay, change bank details, open a file, call a
number, reply with data: the language analyzer's categories) and a **destination** the
attacker controls (the link beside the request, Reply-To, a phone number, an attachment).
A legitimate notification has the first two as well, but its destinations belong to the
sender. No one of the three tells phish from ham (most mail of both kinds links away from
its From domain); the combination does.

This stage runs after every analyzer and sees their findings and the ``ParsedMessage``
(including ``message.auth``, the authentication stage's proof, which may be None). It
reports one finding whose summary says the three in plain English, e.g. "claims to be
Microsoft, asks you to sign in, and the sign-in link goes to a site that is not
Microsoft's (login.example.net)". Its rule id says which case it is; the scores of those
rules are fitted on labelled mail (bench/fit.py, rules/scores.toml) like every other
rule's, so a request meeting a foreign destination weighs much, and one whose every
destination is the (proven) sender's own lowers the total. The stage only reads: it is
built once per Scanner and shared between threads.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping, Sequence

from mailguard.analyzers.lookalike.brands import Brand
from mailguard.analyzers.lookalike.links import browser_host
from mailguard.message import ParsedMessage, plain_url, query_values, unquote_value, url_host, url_query
from mailguard.model import Finding
from mailguard.options import Option

NAME = "coherence"

CONFIG_SCHEMA: Mapping[str, Option] = {
    "enabled": Option(
        True, "bool",
        "Run the coherence stage after the analyzers: it weighs the request a message makes against "
        "where that request leads and who the message claims to be, and says the three in the verdict.",
    ),
}

# Rule ids. Scores are fitted (rules/scores.toml); these built-in ones apply without it.
SCORES: Mapping[str, float] = {
    "COHERENCE_CLAIM_REQUEST_ELSEWHERE": 4.0,   # claims a brand/company, asks, and the destination is not theirs
    # ... the claim being a brand of the table in the display name of a sender not the brand's:
    # a stronger claim than a brand named in the subject or text (which newsletters do).
    "COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE": 4.0,
    # The display name names a company (not in the brand table) the From domain does not carry,
    # it asks, and the destination is a third site: neither that company's nor the sender's.
    "COHERENCE_NAME_REQUEST_ELSEWHERE": 4.0,
    # The display name names a company, the address is a free-mail account, and it asks:
    # the account itself is where answers and payments go.
    "COHERENCE_NAME_REQUEST_FREEMAIL": 3.0,
    # A brand of the table is claimed (display name, subject or opening words) by a free-mail
    # account, it asks something specific, and no destination of the brand's is given:
    # brands do not write from free mail ("Paid Customer <x@gmail.com>": your PayPal order).
    "COHERENCE_BRAND_REQUEST_FREEMAIL": 3.0,
    # The From domain's own DMARC disproves the claim, it asks, and the destination is not
    # that domain's. Hand-set: the corpus has no DNS, so authentication never fails there.
    "COHERENCE_FORGED_REQUEST_ELSEWHERE": 4.0,
    "COHERENCE_REQUEST_ELSEWHERE": 1.0,         # asks, and the destination is not the sender's
    # A brand of the table, written from (or forging) that brand's own domain, asks, and the
    # destination is not the brand's: real brand mail links to the brand's own sites.
    "COHERENCE_BRAND_REQUEST_ELSEWHERE": 2.0,
    # Composites (rspamd-style): the claim-request-destination case meeting structural
    # evidence about the destination itself. Fitted like every other rule.
    "COHERENCE_REQUEST_SUSPECT_LINK": 2.0,      # the link the request leads to is itself suspect
    # A brand's name in the display name, nothing asked, and a link off the brand's sites that
    # is suspect in itself (a bare address, a look-alike, a shortener ...).
    "COHERENCE_BRAND_SUSPECT_LINK": 2.0,
    "COHERENCE_PICTURE_LINK_ELSEWHERE": 2.0,    # a picture-only message linking away from its sender
    "COHERENCE_BARE_LINK_ELSEWHERE": 2.0,       # a few words and a hidden link to a site not the sender's
    "COHERENCE_BARE_URL_ELSEWHERE": 1.0,        # the same with the address written out ("see http://...")
    # A link whose text shows the sender's own site (www.ncua.gov) goes to another one: the
    # claim of the From domain is carried into the link to hide where it leads.
    "COHERENCE_LINK_SHOWS_SENDER_ELSEWHERE": 2.0,
    "COHERENCE_FOCUSED_REQUEST_ELSEWHERE": 1.0,  # a request leading away, in a short message with few sites
    "COHERENCE_REPLY_ELSEWHERE": 2.0,           # asks for a reply, and replies go to another organisation
    "COHERENCE_CALL_NUMBER": 2.0,               # claims a company not its sender, asks you to call a number
    "COHERENCE_REQUEST_NO_DESTINATION": 0.0,    # asks, but names no destination we can judge
    "COHERENCE_REQUEST_OWNED": -1.0,            # asks, and every destination is the claimed sender's own
    "COHERENCE_REQUEST_PROVEN": -2.0,           # ... and the sender is proven (DMARC-aligned)
    "COHERENCE_NAME_NOT_SENDER": 1.0,           # a company name the From domain has nothing to do with
    # A brand of the table in the display name of a sender that is not the brand's, nothing
    # asked, and every link off the brand's sites: only the name is the brand's.
    "COHERENCE_BRAND_NAME_LINKS_ELSEWHERE": 1.0,
    "COHERENCE_NO_REQUEST": 0.0,                # no request to act: what it claims and where it links
    # It asks to sign in, pay or restore a wallet, gives no link, form, number or address to do
    # it with, and shows a picture: the only way to act is the picture (a QR code read with a
    # phone, where no filter follows). Hand-set until fitted.
    "COHERENCE_REQUEST_PICTURE_ONLY": 2.0,
}

# Cases that only describe the message (no weight of their own): said in the verdict's
# summary, not reported as findings.
SILENT = frozenset({"COHERENCE_NO_REQUEST", "COHERENCE_REQUEST_NO_DESTINATION"})

# Language categories -> (what the message asks, what the destination is called).
REQUESTS: Mapping[str, tuple[str, str]] = {
    "credential": ("asks you to sign in or confirm your details", "sign-in link"),
    "wallet": ("asks you to verify or restore a crypto wallet", "wallet link"),
    "payment": ("asks you to pay or change payment details", "payment link"),
    "account": ("says your account needs action", "link"),
    "delivery": ("asks you to act on a parcel", "delivery link"),
    "prize": ("asks you to claim money or a prize", "claim link"),
    "healthcare": ("asks you to open a claim, fax or compliance notice", "link"),
    "callback": ("asks you to call a number", "number to call"),
    "reply": ("asks you to reply with information", "reply address"),
    "attachment": ("asks you to open a file", "attached file"),
}
# Which request leads where: a call request to phone numbers, a reply request to the
# reply address, an open-file request to attachments, every other one to links.
_CALL, _REPLY, _OPEN = "callback", "reply", "attachment"
SPECIFIC = frozenset({"credential", "wallet", "payment", _CALL, _REPLY, _OPEN})

# Link text that is the button beside a request (sign in, pay, view, download ...), in
# the languages the language rules read. Lower case, matched as words.
_ACTION_WORDS = (
    r"sign[ -]?in|log[ -]?in|log[ -]?on|verify|confirm|validate|update|unlock|restore|reactivate|secure|"
    r"pay|payment|invoice|view|open|download|review|access|click|tap|here|continue|claim|track|reset|"
    r"accept|approve|release|retrieve|get started|activate|check|read|listen|schedule|reschedule|"
    r"iniciar|acceder|verificar|confirmar|actualizar|pagar|descargar|ver |aqui|"
    r"acessar|acesse|entrar|atualizar|clique|baixar|"
    r"connexion|connecter|v[eé]rifier|confirmer|payer|t[eé]l[eé]charger|ici|"
    r"anmelden|einloggen|best[aä]tigen|bezahlen|herunterladen|hier|"
    r"ログイン|確認|更新|支払|ダウンロード|こちら"
).split("|")


def _by_first_letter(alternatives: Sequence[str]) -> str:
    """The alternation with the alternatives that share a first letter grouped behind it
    ("s(?:ign[ -]?in|ecure|chedule)|..."): the same words, tried about three times
    faster at each position of a text (re tries every branch in turn). Only whether the
    pattern occurs is asked, so the branches' order does not matter."""
    groups: dict[str, list[str]] = {}
    for alternative in alternatives:
        groups.setdefault(alternative[0], []).append(alternative[1:])
    return "|".join(f"{re.escape(first)}(?:{'|'.join(rest)})" for first, rest in groups.items())


_ACTION_TEXT = re.compile(r"\b(?:" + _by_first_letter(_ACTION_WORDS) + ")", re.IGNORECASE)
# Query parameters that carry a click-tracking redirect's target (url=, u=, q=, ...):
# any parameter whose value is itself an http(s) address counts.
_EMBEDDED_URL = re.compile(r"^(?:https?:|www\.)", re.IGNORECASE)
# A redirect's target in the first field of the query ("?u=https%3A%2F%2Fsite.example%2F..."),
# plain or escaped once: the host up to what ends it once decoded (/ ? # as written or
# escaped, the end of the field or of the address). For ASCII addresses without brackets,
# tabs or line breaks it is what the general reading (``_target_host_read``) finds: the host
# holds no character that decoding or stripping would change. Anything else (a port, a
# user, an escape inside the host, a target in a later field) does not match and is read
# the general way.
_FIRST_FIELD_TARGET = re.compile(
    r"[^?#]*\?[^=&#]*=[hH][tT][tT][pP][sS]?(?::|%3[aA])(?:/|%2[fF])(?:/|%2[fF])"
    r"([A-Za-z0-9][A-Za-z0-9.-]*)(?=[/?#&]|%2[fF]|%3[fF]|%23|\Z)")
# A phone number as written in a callback lure: +1 (800) 555-0199, 1-888-555-0100, 0800 123 4567.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?!\w)")
# Words that make a display name an organisation's rather than a person's.
_ORG_WORDS = frozenset(
    "team support service services security billing bank banking inc llc ltd corp co corporation company "
    "admin administrator helpdesk desk department dept notification notifications alert alerts account "
    "accounts customer customers care center centre office group mail email webmail online payroll hr "
    "it payments finance financial insurance health healthcare pharmacy delivery shipping express post "
    "postal logistics airlines airline airways bank express rewards member members services official "
    "verification noreply no-reply info refund refunds claims claim "
    # the words of crypto and investment lures' senders ("BlockGames Airdrop", "Tether Cashback",
    # "TotalEnergies-Invest"): a person's name holds none of them
    "airdrop airdrops token tokens cashback wallet wallets crypto nft nfts staking invest investments "
    "foundation finance".split()
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_DOMAIN_IN_NAME = re.compile(r"\b((?:[a-z0-9-]+\.)+[a-z]{2,})\b", re.IGNORECASE)
# What a person's name never holds and an organisation's or a lure's often does: digits
# ("Order #2548574", "Protocolo:716..."), separators of a title ("Itaucard - Pague sua
# fatura |", "[ Ourocard ]"), or a word in CamelCase ("BlockGames", "CyberLama").
_TITLE_MARKS = re.compile(r"\d|[|\[\]:#]|\s[-–]\s")
_CAMEL = re.compile(r"[A-Z][a-z]{2,}(?:[A-Z][a-z]{2,})+")
_IN_BRACKETS = re.compile(r"\([^)]{0,60}\)")
NO_SENDER = "an address without a domain"
FORGED = "From address, disproved by its DMARC"
MAX_DESTINATIONS = 200  # links looked at per message (bounds work on huge newsletters)
MAX_NAME_CHARS = 256
BRAND_TEXT_CHARS = 300  # opening characters of the visible body searched for a brand name


@dataclass(frozen=True)
class Claim:
    """Who the message says it is. ``domains`` are the registrable domains that identity
    owns; ``foreign`` is True when the claim is not the sender's own domain (a brand or a
    company named by a sender outside it)."""

    name: str
    domains: frozenset[str]
    where: str  # "display name", "subject", "text", "From address"
    foreign: bool
    brand: Brand | None = None
    loose: bool = False  # a display name read as a title, not a person's (see Coherence._title_in)

    @property
    def brand_in_name(self) -> bool:
        """A brand of the table in the display name: a stronger claim than a brand named
        in the subject or the text, which newsletters do."""
        return self.brand is not None and self.where == "display name"


@dataclass(frozen=True)
class Review:
    findings: tuple[Finding, ...]
    sentence: str  # what it claims, asks and where that leads, for the verdict's summary


@dataclass(frozen=True)
class Destination:
    kind: str  # "link", "reply", "phone", "attachment"
    shown: str  # host, address, number or file name as a person sees it
    owned: bool | None  # True: the claimed (or proven) sender's; False: not; None: cannot tell


class Coherence:
    """Built once per Scanner from the lookalike analyzer's brand table and ownership."""

    def __init__(self, lookalike: Any) -> None:
        self.names = lookalike.names
        self.ownership = lookalike.ownership
        self.splitter = lookalike.splitter
        # Pure, asked for every link of every message, and the same sites recur: kept per
        # pair of names (lru_cache is thread-safe), as the splitter keeps its answers per host.
        self._related = lru_cache(maxsize=65536)(self._related)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ the stage

    def review(self, message: ParsedMessage, findings: Sequence[Finding]) -> Review:
        """The stage's finding (when the case carries weight) and its sentence (always,
        for the verdict's summary)."""
        sender = message.from_address
        requests = self.requests(findings)
        if sender is None or not sender.domain:  # still said: a flagged verdict always explains itself
            claim = Claim(NO_SENDER, frozenset(), "From address", False)
            sender_org = ""
        else:
            claim = self.claim(message, findings)
            sender_org = self._registrable(sender.domain)
        proven = self._registrable(message.auth.proven_domain) if message.auth and message.auth.proven_domain else ""
        script = next((str((f.details or {}).get("scheme") or "script") for f in findings
                       if f.rule == "LINKS_SCRIPT_URL"), "")
        destinations = self.destinations(message, claim, requests, sender_org, proven, script)
        finding = self._finding(message, claim, requests, destinations, sender_org, proven)
        if claim.loose and finding.rule not in LOOSE_CASES:  # a weak claim only counts with these
            claim = self.own_claim(sender_org)
            destinations = self.destinations(message, claim, requests, sender_org, proven, script)
            finding = self._finding(message, claim, requests, destinations, sender_org, proven)
        composites = tuple(self.composites(message, findings, requests, destinations, sender_org, finding.rule,
                                           claim))
        if finding.rule in SILENT or sender_org == "" or (
                finding.rule == "COHERENCE_NAME_NOT_SENDER" and self.ownership.is_freemail(sender_org)):
            return Review(composites, finding.summary)  # free mail with a company name: the sender analyzer's
        return Review((finding, *composites), finding.summary)

    # ------------------------------------------------------------------ composites

    def composites(
        self, message: ParsedMessage, findings: Sequence[Finding], requests: Sequence[str],
        destinations: Sequence[Destination], sender_org: str, case: str = "", claim: Claim | None = None,
    ) -> Iterable[Finding]:
        """Rules that fire on a combination, in the spirit of rspamd's composites: a request
        whose link is itself suspect (a bare address, a shortener, free hosting ...), a
        picture-only message or a few words with a link, leading away from the sender. Each
        part alone is common in legitimate mail; together they are the shape of a lure."""
        if case in ELSEWHERE and _words_at_most(message.body_text, FOCUSED_WORDS) and \
                len({l.host for l in message.links[:MAX_DESTINATIONS]}) <= FOCUSED_HOSTS:
            yield _make("COHERENCE_FOCUSED_REQUEST_ELSEWHERE", _cap(
                f"It is a short message whose one purpose is that request (at most {FOCUSED_WORDS} words, "
                f"{FOCUSED_HOSTS} or fewer sites linked), as lures are; newsletters and real notices say more"),
                {"case": case})
        shown = self._shows_sender_elsewhere(message, sender_org)
        if shown is not None:
            text, host = shown
            yield _make("COHERENCE_LINK_SHOWS_SENDER_ELSEWHERE", _cap(
                f"A link reads {text}, the sender's own site, but leads to {host}, which is not the sender's "
                f"({sender_org})"), {"text": text, "host": host})
        links = [d for d in destinations if d.kind == "link"]
        if not destinations and not message.links and requests and requests[0] in PICTURE_REQUESTS and \
                _shows_picture(message) and _POINTS_AT_PICTURE.search(message.body_text[:20000]):
            asks = REQUESTS[requests[0]][0]
            yield _make("COHERENCE_REQUEST_PICTURE_ONLY", _cap(
                f"It {asks}, but gives no link, form, number or address to do it with: the only thing to act on is "
                "a picture (a QR code to scan with a phone, where no filter follows the link, is the usual trick)"),
                {"request": requests[0], "pictures": min(len(message.image_urls), 10)})
        if not links:
            return
        suspects = _suspect_hosts(findings)
        if not requests and suspects and claim is not None and claim.brand_in_name:
            # A brand's name, nothing asked, and a link off the brand's sites to a bare address,
            # a look-alike, a shortener ...: the brand's own mail links to its own sites.
            for d in links:
                reason = _suspect_reason(d.shown, suspects)
                if reason and d.owned is False:
                    yield _make("COHERENCE_BRAND_SUSPECT_LINK", _cap(
                        f"It calls itself {claim.name}, and a link goes to {d.shown}, {reason}, not to a site of "
                        f"{claim.name}'s"), {"host": d.shown, "reason": reason, "brand": claim.name})
                    break
        if requests and suspects and request_leads_to_links(requests[0]):
            for d in links:
                reason = _suspect_reason(d.shown, suspects)
                if reason and d.owned is not True:
                    asks = REQUESTS[requests[0]][0]
                    yield _make("COHERENCE_REQUEST_SUSPECT_LINK", _cap(
                        f"It {asks}, and the {REQUESTS[requests[0]][1]} goes to {d.shown}, {reason}"),
                        {"host": d.shown, "reason": reason, "request": requests[0]})
                    break
        if not sender_org:
            return
        picture = any(f.rule == "LINKS_IMAGE_ONLY" for f in findings)
        hosts = list(dict.fromkeys(d.shown for d in links))
        bare = len(hosts) <= BARE_LINK_HOSTS and _words_at_most(message.body_text, BARE_LINK_WORDS)
        if picture and any(self._sender_owns(h, sender_org) for h in hosts):
            # The picture's image-map areas are what a click on it opens; a link to the
            # sender's own site beside them (often wrapped around the same picture) does not
            # change where the picture leads.
            areas = list(dict.fromkeys(l.host for l in message.links[:MAX_DESTINATIONS] if l.source == "area" and l.host))
            if areas and not any(self._sender_owns(h, sender_org) for h in areas):
                yield _make("COHERENCE_PICTURE_LINK_ELSEWHERE", _cap(
                    f"The message is a picture with almost no text, and clicking it leads to {', '.join(areas[:3])}, "
                    f"not to the sender's site ({sender_org}), although another link shows the sender's"),
                    {"hosts": areas[:10]})
            return
        if not (picture or bare) or any(self._sender_owns(h, sender_org) for h in hosts):
            return  # some link is the sender's own: not a lure that only leads away
        if picture:
            yield _make("COHERENCE_PICTURE_LINK_ELSEWHERE", _cap(
                f"The message is a picture with almost no text, and clicking it leads to {_shown(links)}, "
                f"not to the sender's site ({sender_org})"), {"hosts": hosts[:10]})
        elif any(_hides_target(l) for l in message.links[:MAX_DESTINATIONS]):
            yield _make("COHERENCE_BARE_LINK_ELSEWHERE", _cap(
                f"The message is a few words and a link to {_shown(links)}, a site that is not the sender's "
                f"({sender_org}), behind words or a picture that do not show where it leads"), {"hosts": hosts[:10]})
        else:
            yield _make("COHERENCE_BARE_URL_ELSEWHERE", _cap(
                f"The message is a few words and a web address at {_shown(links)}, a site that is not the "
                f"sender's ({sender_org})"), {"hosts": hosts[:10]})

    def _shows_sender_elsewhere(self, message: ParsedMessage, sender_org: str) -> tuple[str, str] | None:
        """(the site a link's text shows, the host it leads to) for the first HTML link
        whose text shows the sender's own domain while it leads to a host the sender does
        not own (nor names as a redirect's readable target); None otherwise."""
        if not sender_org:
            return None
        for link in message.links[:MAX_DESTINATIONS]:
            text = link.text
            if link.source != "html" or not text or "." not in text or not link.host:
                continue
            for written in _DOMAIN_IN_NAME.findall(text[:200]):
                if self._registrable(written) != sender_org:
                    continue
                target = self._target_host(link.url) or link.host
                if not self._sender_owns(target, sender_org):
                    return written.lower(), target
                break
        return None

    def _sender_owns(self, host: str, sender_org: str) -> bool:
        org = self._registrable(host)
        return bool(org) and (org == sender_org or self.ownership.same_owner(org, sender_org)
                              or self._related(org, sender_org))

    # ------------------------------------------------------------------ the claim

    def claim(self, message: ParsedMessage, findings: Sequence[Finding]) -> Claim:
        sender = message.from_address
        assert sender is not None
        sender_org = self._registrable(sender.domain)
        name = (sender.display_name or "")[:MAX_NAME_CHARS]
        brand = self.names.brand_in(name) if name else None
        where = "display name"
        if brand is None:
            for text, place in ((message.subject[:MAX_NAME_CHARS], "subject"),
                                (message.body_text[:BRAND_TEXT_CHARS], "text")):
                brand = self.names.brand_in(text) if text else None
                if brand is not None:
                    where = place
                    break
        auth = message.auth
        if brand is None and auth is not None and auth.dmarc == "fail" and not auth.proven_domain:
            return Claim(sender_org, frozenset({sender_org}), FORGED, True)
        if brand is not None:
            domains = self._brand_domains(brand)
            foreign = sender_org not in domains and not self.ownership.is_own(sender.domain)
            if foreign or where == "display name":
                return Claim(brand.name, domains, where, foreign, brand)
        company = self._company_in(name)
        if company is not None and not self._related(company, sender_org):
            claimed = self._domain_named(company)
            return Claim(company, frozenset({claimed}) if claimed else frozenset(), "display name", True)
        title = self._title_in(name, message.subject[:MAX_NAME_CHARS]) if name and company is None else None
        if title is not None and not self._related(title, sender_org):
            return Claim(title, frozenset(), "display name", True, loose=True)
        return self.own_claim(sender_org)

    @staticmethod
    def own_claim(sender_org: str) -> Claim:
        """The claim every message makes: to come from its From domain."""
        return Claim(sender_org, frozenset({sender_org}), "From address", False)

    @staticmethod
    def _named_company(claim: Claim) -> bool:
        """A company the display name names, outside the brand table (whose own sites we do
        not know: only that the From domain does not carry its name)."""
        return claim.foreign and claim.brand is None and claim.where == "display name"

    def _brand_domains(self, brand: Brand) -> frozenset[str]:
        return frozenset(self._registrable(d) for d in brand.domains + brand.also_owns)

    def _company_in(self, display_name: str) -> str | None:
        """The organisation a display name claims to be, when it reads as one and not as a
        person: a domain written in it ("ml.com"), an acronym ("ANA"), a name joined by
        "/" or "&" ("Twilio/SendGrid"), or organisation words ("Acme Billing Team")."""
        text = display_name.strip().strip("\"'")
        if not text or "@" in text:
            return None
        written = _DOMAIN_IN_NAME.search(text)
        if written and _written_ending(written.group(1)):
            parts = self.splitter.parts(written.group(1).lower())
            if parts is not None and not parts.unlisted:  # "ml.com", not "claims.celsius"
                return written.group(1).lower()
        words = _WORD.findall(text)
        if not words or len(words) > 6:
            return None
        lowered = [w.lower() for w in words]
        distinctive = [w for w in lowered if w not in _ORG_WORDS]
        if not distinctive:
            return None  # "Billing", "Support Team": no company named
        if any(w in _ORG_WORDS for w in lowered) or "/" in text or "&" in text:
            return text
        if len(words) == 1 and words[0].isupper() and 2 <= len(words[0]) <= 6 and words[0].isalpha():
            return text
        return None

    @staticmethod
    def _title_in(display_name: str, subject: str) -> str | None:
        """A display name that reads as a service's or a lure's title rather than a person's
        name, though it has no organisation word: digits or a title's separators, which a
        person's name does not hold ("Itaucard - Pague sua fatura", "Ourocard - Cod. 5864"),
        one CamelCase word ("BlockGames"), or one capitalised word the subject repeats
        ("Zephyrex" above "[Zephyrex] Review the latest terms": people do not head their mail
        with their own name). A weaker claim than ``_company_in``'s (a person may sign
        "Jo Roe - Acme"): it counts only when the request then leads to a third site or the
        address is free mail. What stands in brackets ("Peng Fan (OSS)") and names sent on
        someone's behalf ("... via B4 Relay") are left out."""
        text = _IN_BRACKETS.sub(" ", display_name).strip().strip("\"'")
        if not text or "@" in text or " via " in f" {text.lower()} ":
            return None
        words = _WORD.findall(text)
        if not words or len(words) > 6 or not any(len(w) >= 3 and w.isalpha() for w in words):
            return None
        if _TITLE_MARKS.search(text):
            return text
        if len(words) == 1 and len(text) <= 40:
            word = words[0]
            if _CAMEL.fullmatch(word):
                return text
            if word[:1].isupper() and len(word) >= 4 and word.isalpha() and \
                    re.search(r"(?<!\w)" + re.escape(word.lower()) + r"(?!\w)", subject.lower()):
                return text
        return None

    def _related(self, company: str, sender_org: str) -> bool:
        """Does the sender's registrable domain carry the company's name (a distinctive
        word of it, its acronym, or the domain written in the name)?"""
        label = sender_org.split(".")[0].lower()
        if not label:
            return False
        if "." in company and self._registrable(company) == sender_org:
            return True
        if "." in company:  # a domain: its name, not its ending ("example" of target.example is no word of it)
            parts = self.splitter.parts(company)
            company = parts.label if parts is not None else company.split(".")[0]
        words = [w.lower() for w in _WORD.findall(company)]
        distinctive = [w for w in words if w not in _ORG_WORDS and len(w) >= 3]
        squashed = label.replace("-", "")
        if any(w in squashed or (len(squashed) >= 4 and squashed in w) for w in distinctive):
            return True
        initials = "".join(w[0] for w in words if w not in _ORG_WORDS)
        return len(initials) >= 2 and squashed.startswith(initials)

    def _domain_named(self, company: str) -> str:
        return self._registrable(company) if "." in company else ""

    # ------------------------------------------------------------------ the request

    def requests(self, findings: Sequence[Finding]) -> list[str]:
        """Language categories that ask the reader to act, strongest first."""
        found: list[tuple[float, str]] = []
        for finding in findings:
            if finding.analyzer != "language":
                continue
            category = finding.details.get("category") if finding.details else None
            if isinstance(category, str) and category in REQUESTS:
                found.append((finding.score, category))
        # A specific action (sign in, pay, call, reply, open) is the request; a threat or a
        # story around it comes after, whatever its score.
        found.sort(key=lambda item: (item[1] not in SPECIFIC, -item[0]))
        return [c for _, c in found]

    # ------------------------------------------------------------------ destinations

    def destinations(
        self, message: ParsedMessage, claim: Claim, requests: Sequence[str], sender_org: str, proven: str,
        script: str = "",
    ) -> list[Destination]:
        owned_set = set(claim.domains)
        if not claim.foreign:
            owned_set.add(sender_org)
            if proven:
                owned_set.add(proven)
        out: list[Destination] = []
        links = [l for l in message.links[:MAX_DESTINATIONS] if l.url[:4].lower() in ("http", "www.")]
        asking = {id(l) for l in links if l.text and _ACTION_TEXT.search(l.text)}  # each link's text read once
        labels: dict[str, str] = {}  # per host: a newsletter's links share a few hosts
        credits = {l.url for l in links if id(l) not in asking and self._names_its_site(l, labels)}
        links = [l for l in links if l.url not in credits]
        beside = [l for l in links if id(l) in asking]
        owned: dict[str, bool | None] = {}  # per host: a newsletter's links share a few hosts
        for link in beside or links:
            host = self._target_host(link.url) or browser_host(link)
            if host not in owned:
                owned[host] = self._owns(owned_set, claim, host)
            out.append(Destination("link", host, owned[host]))
        if script and requests and request_leads_to_links(requests[0]):
            # a javascript: or data: link opens a page no web address names: nobody's site
            out.append(Destination("script", f"a {script}: link that opens a page built into the message", False))
        sender = message.from_address
        for reply in message.reply_to[:5]:
            if reply.domain and sender is not None and reply.address.lower() != sender.address.lower():
                out.append(Destination("reply", reply.address, self._owns(owned_set, claim, reply.domain)))
        if _CALL in requests:
            for number in _PHONE.findall(message.body_text[:20000])[:3]:
                out.append(Destination("phone", number.strip(), None if not claim.foreign else False))
        if _OPEN in requests:
            for attachment in message.attachments[:5]:
                out.append(Destination("attachment", attachment.display_name, None if not claim.foreign else False))
        return out

    def _names_its_site(self, link: Any, labels: dict[str, str] | None = None) -> bool:
        """A credit or footer link whose text names the site it goes to and asks nothing
        ("Powered by Crater" -> craterapp.com, "GitHub" -> github.com): the reader sees
        where it leads, so it is no destination of the request. A button that names the
        site ("Sign in to PayPal" -> paypal-secure.example) still asks, and still counts."""
        text = (link.text or "").strip()
        if not text or len(text) > 60 or link.source != "html":
            return False  # (links whose text asks something are never credits: see destinations)
        label = labels.get(link.host) if labels is not None else None  # ``labels``: the hosts' labels so far
        if label is None:
            parts = self.splitter.parts(link.host) if link.host else None
            label = parts.label.lower().replace("-", "") if parts is not None and parts.label else ""
            if labels is not None:
                labels[link.host] = label
        if len(label) < 3:
            return False
        for word in _WORD.findall(text):
            word = word.lower()
            if len(word) >= 3 and word not in _ORG_WORDS and word in label:
                break
        else:
            return False
        brand = self.names.brand_in(text)
        # "PayPal" -> paypal-help.example is an imitation, not a credit
        return brand is None or self.ownership.owned_by(link.host, brand)

    def _target_host(self, url: str) -> str:
        """The host a click-tracking redirect sends to, when its target is readable in the
        query (url=https://..., u=..., q=...); "" otherwise. Nearly every tracking link
        writes it in its first field, plain or escaped once: that form is read by one
        regular expression (``_FIRST_FIELD_TARGET``), any other the general way."""
        if "?" not in url:
            return ""
        if plain_url(url) and "\t" not in url and "\n" not in url and "\r" not in url:
            first = _FIRST_FIELD_TARGET.match(url)
            if first is not None:
                return first.group(1).lower().rstrip(".")
        return self._target_host_read(url)

    @staticmethod
    def _target_host_read(url: str) -> str:
        """``_target_host`` for any address: each of the first 20 query fields decoded in
        turn, as ``parse_qsl`` would, and read as a web address."""
        for value in query_values(url_query(url), 20):
            value = value.strip()
            if "%3a" in value.lower()[:12]:
                value = unquote_value(value)
            if not _EMBEDDED_URL.match(value):
                value = _base64_target(value)
            if _EMBEDDED_URL.match(value):
                host = url_host(value)
                if host:
                    return host
        return ""

    def _owns(self, owned_set: set[str], claim: Claim, host: str) -> bool | None:
        org = self._registrable(host)
        if not org:
            return None
        if org in owned_set or self.ownership.is_own(host):
            return True
        if claim.brand is not None and self.ownership.owned_by(host, claim.brand):
            return True
        # The sender's own domain (the claim's only domain when no brand is claimed): a
        # site carrying its name is its own. A brand is owned only by what the brand table
        # says (checked above): "ebayserversecure.com" carries eBay's name but is no site of
        # eBay's (and a brand's several domains have no order: picking one of a frozenset
        # made the answer depend on hash randomisation).
        if not claim.foreign and claim.brand is None and self._related(org, next(iter(claim.domains), "")):
            return True
        return False

    def _registrable(self, domain: str) -> str:
        domain = (domain or "").strip().lower().rstrip(".")
        if not domain:
            return ""
        parts = self.splitter.parts(domain)
        return parts.registrable if parts is not None else domain

    # ------------------------------------------------------------------ the finding

    def _finding(
        self, message: ParsedMessage, claim: Claim, requests: Sequence[str], destinations: Sequence[Destination],
        sender_org: str, proven: str,
    ) -> Finding:
        claim_text = (f"claims to be {claim.name}" if claim.foreign or claim.brand is not None
                      else f"comes from {claim.name}")
        owner = f"{claim.name}'s" if claim.foreign or claim.brand is not None else "the sender's"
        details: dict[str, Any] = {
            "claim": claim.name, "claim_from": claim.where, "claim_foreign": claim.foreign,
            "requests": list(requests),
            "destinations": [{"kind": d.kind, "where": d.shown, "owned": d.owned} for d in destinations[:10]],
        }
        if not requests:
            shown = _hosts(destinations, "link")
            where = f"and its links go to {shown}" if shown else "and it has no links"
            if claim.where == FORGED:
                rule = "COHERENCE_NO_REQUEST"
                text = f"{claim_text} (its own DMARC says it is not), asks for nothing specific, {where}"
            elif claim.foreign:
                rule = "COHERENCE_NAME_NOT_SENDER" if claim.brand is None else "COHERENCE_NO_REQUEST"
                text = f"{claim_text} but writes from {sender_org}, asks for nothing specific, {where}"
                links = [d for d in destinations if d.kind == "link"]
                if claim.brand_in_name and links and all(d.owned is False for d in links):
                    # the brand's name over a stranger's address, and every link off the brand's
                    # sites: nothing of the message is the brand's but its name
                    rule = "COHERENCE_BRAND_NAME_LINKS_ELSEWHERE"
                    text = f"{text}, none of them {owner}"
            else:
                rule, text = "COHERENCE_NO_REQUEST", f"{claim_text}, asks for nothing specific, {where}"
            return _make(rule, text[:1].upper() + text[1:], details)
        request = requests[0]
        asks, noun = REQUESTS[request]
        relevant = [d for d in destinations if _leads(request, d)] or [d for d in destinations if d.kind in ("link", "script")]
        foreign = [d for d in relevant if d.owned is False]
        if request == _REPLY:
            replies = [d for d in destinations if d.kind == "reply" and d.owned is False]
            if replies:
                text = (f"{claim_text}, {asks}, and replies go to {replies[0].shown}, which is not {owner}")
                return _make("COHERENCE_REPLY_ELSEWHERE", _cap(text), details)
        phones = [d for d in destinations if d.kind == "phone"]
        if claim.foreign and phones and (request == _CALL or not foreign and _CALL in requests):
            # the number is the destination when a call is asked, also beside a payment or
            # sign-in request that names no site ("your Norton renewal ... call to cancel")
            number = phones[0].shown
            asks = REQUESTS[_CALL][0]
            text = f"{claim_text} but writes from {sender_org}, {asks} ({number}) instead of linking to {owner} site"
            return _make("COHERENCE_CALL_NUMBER", _cap(text), details)
        if foreign:
            hosts = _shown(foreign)
            what = {"link": f"the {noun} goes to a site", "script": f"the {noun} goes to a page",
                    "reply": "replies go to an address",
                    "phone": "the number to call is given", "attachment": "the file comes from a sender"}[foreign[0].kind]
            text = f"{claim_text}, {asks}, and {what} that is not {owner} ({hosts})"
            rule = ("COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE" if claim.foreign and claim.brand_in_name
                    else "COHERENCE_CLAIM_REQUEST_ELSEWHERE" if claim.foreign
                    else "COHERENCE_BRAND_REQUEST_ELSEWHERE" if claim.brand is not None
                    else "COHERENCE_REQUEST_ELSEWHERE")
            if claim.where == FORGED:
                rule, claim_text = "COHERENCE_FORGED_REQUEST_ELSEWHERE", f"{claim_text} (its own DMARC says it is not)"
                text = f"{claim_text}, {asks}, and {what} that is not {owner} ({hosts})"
            elif self._named_company(claim) and _words_at_most(message.body_text, FOCUSED_WORDS):
                third = [d for d in foreign if _host_of(d) and not self._sender_owns(_host_of(d), sender_org)]
                if third:  # neither the company named nor the address it writes from, in a short message
                    what = "replies go to an address" if third[0].kind == "reply" else f"the {noun} goes to a site"
                    text = (f"{claim_text} but writes from {sender_org}, {asks}, and {what} that is neither "
                            f"{owner} nor the sender's ({_shown(third)})")
                    return _make("COHERENCE_NAME_REQUEST_ELSEWHERE", _cap(text), details)
            return _make(rule, _cap(text), details)
        if self._named_company(claim) and self.ownership.is_freemail(sender_org):
            account = message.from_address.address if message.from_address else sender_org
            text = f"{claim_text} but writes from a free-mail account ({account}), {asks}, and that account is where answers go"
            return _make("COHERENCE_NAME_REQUEST_FREEMAIL", _cap(text), details)
        if claim.brand is not None and claim.foreign and request in SPECIFIC and \
                self.ownership.is_freemail(sender_org) and not any(d.owned for d in relevant):
            account = message.from_address.address if message.from_address else sender_org
            text = (f"{claim_text} but writes from a free-mail account ({account}), {asks}, and gives no site of "
                    f"{owner}: {claim.name} does not write from free mail")
            return _make("COHERENCE_BRAND_REQUEST_FREEMAIL", _cap(text), details)
        judged = [d for d in relevant if d.owned is not None]
        if judged and all(d.owned for d in judged) and not claim.foreign:
            hosts = _shown(judged)
            if proven and proven == sender_org:
                text = f"{claim_text} (proven by its signature), {asks}, and the {noun} goes to its own site ({hosts})"
                return _make("COHERENCE_REQUEST_PROVEN", _cap(text), details)
            text = f"{claim_text}, {asks}, and the {noun} goes to its own site ({hosts})"
            return _make("COHERENCE_REQUEST_OWNED", _cap(text), details)
        if claim.foreign and judged and all(d.owned for d in judged):
            text = f"{claim_text} but writes from {sender_org}, {asks}, and the {noun} goes to {owner} site ({_shown(judged)})"
            return _make("COHERENCE_REQUEST_NO_DESTINATION", _cap(text), details)
        text = f"{claim_text}, {asks}, and names no link or address that can be checked"
        return _make("COHERENCE_REQUEST_NO_DESTINATION", _cap(text), details)


# A redirect's target written in base64 ("aHR0c" is how "http" begins), after a short
# prefix some redirectors put before it (bing.com/ck/a: "u=a1aHR0cHM6Ly9..."): a Microsoft
# address in front, an attacker's site behind, which a reading of plain targets misses.
_BASE64_TARGET = re.compile(r"^(?:[a-z][0-9])?(aHR0c[A-Za-z0-9+/_-]{4,2040}={0,2})$")


def _base64_target(value: str) -> str:
    found = _BASE64_TARGET.match(value.strip())
    if found is None:
        return ""
    encoded = found.group(1).replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return ""
    return decoded.decode("utf-8", "replace")


# Words that send the reader to a picture to scan ("scan the QR code", "use your phone's
# camera"), in the languages the language rules read.
_POINTS_AT_PICTURE = re.compile(
    r"\b(?:qr|scan|scann\w*|escane\w*|camera|c[aá]mara|c[aâ]mera|kamera|appareil photo)\b", re.IGNORECASE)
# Requests whose destination is a site: without a link, form or number, a picture is left.
PICTURE_REQUESTS = frozenset({"credential", "wallet", "payment"})


def _shows_picture(message: ParsedMessage) -> bool:
    """A picture in the message: an <img> of an HTML body or an attached image."""
    return bool(message.image_urls) or any(a.content_type.startswith("image/") for a in message.attachments[:20])


def request_leads_to_links(request: str) -> bool:
    return request not in (_CALL, _REPLY, _OPEN)


# Link findings whose hosts make a destination suspect in itself, and how to say so.
_SUSPECT_REASONS: Mapping[str, str] = {
    "LOOKALIKE_LINK_IP": "a bare internet address instead of a named site",
    "LOOKALIKE_LINK_DOMAIN": "a look-alike of a real company's domain",
    "LOOKALIKE_LINK_PUNYCODE": "a name written with special characters",
    "LOOKALIKE_LINK_TEXT_PROTECTED": "though the link's text shows another site",
    "LOOKALIKE_LINK_TEXT_MISMATCH": "though the link's text shows another site",
    "LINKS_SHORTENER": "a link-shortening service that hides where it leads",
    "LINKS_FREE_HOSTING": "a page on free web hosting",
    "LINKS_FORM_BUILDER": "an online form",
    "LINKS_IPFS": "a page on IPFS",
    "LINKS_RISKY_TLD": "under a throw-away internet ending",
    "LINKS_SERVER_HOSTNAME": "a rented server's automatic name",
    "LOOKALIKE_LINK_USERINFO": "behind an address that begins with another site's name",
    "LOOKALIKE_LINK_ENCODED_HOST": "a site name written in escape codes",
}
# The cases where the request leads away from the claimed identity.
ELSEWHERE = frozenset({"COHERENCE_CLAIM_REQUEST_ELSEWHERE", "COHERENCE_BRAND_REQUEST_ELSEWHERE",
                       "COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE",
                       "COHERENCE_REQUEST_ELSEWHERE", "COHERENCE_FORGED_REQUEST_ELSEWHERE",
                       "COHERENCE_REPLY_ELSEWHERE", "COHERENCE_CALL_NUMBER", "COHERENCE_NAME_REQUEST_ELSEWHERE",
                       "COHERENCE_NAME_REQUEST_FREEMAIL"})
# The cases a display name read as a title (``Claim.loose``) is reported in.
LOOSE_CASES = frozenset({"COHERENCE_NAME_REQUEST_ELSEWHERE", "COHERENCE_NAME_REQUEST_FREEMAIL"})
FOCUSED_WORDS = 300
FOCUSED_HOSTS = 3
BARE_LINK_WORDS = 25  # visible words at most for "a few words and a link"
BARE_LINK_HOSTS = 2


def _suspect_hosts(findings: Sequence[Finding]) -> dict[str, str]:
    """host -> why it is suspect, from the link findings of the other analyzers."""
    out: dict[str, str] = {}
    for finding in findings:
        reason = _SUSPECT_REASONS.get(finding.rule)
        if reason is None or not finding.details:
            continue
        details = finding.details
        hosts = list(details.get("hosts") or details.get("domains") or [])
        for key in ("host", "actual"):
            if isinstance(details.get(key), str):
                hosts.append(details[key])
        for host in hosts[:20]:
            if isinstance(host, str) and host:
                out.setdefault(host.lower().rstrip("."), reason)
    return out


def _suspect_reason(host: str, suspects: Mapping[str, str]) -> str:
    host = host.lower().rstrip(".")
    for candidate, reason in suspects.items():
        if host == candidate or host.endswith("." + candidate) or candidate.endswith("." + host):
            return reason
    return ""


def _words_at_most(text: str, limit: int) -> bool:
    """At most ``limit`` words (split on blanks; stops splitting there: bodies can be huge)."""
    return len(text.split(None, limit)) <= limit


def _written_ending(domain: str) -> bool:
    """A domain written in a name ends in one case ("ml.com", "NEWS.COM"), not as a
    person's initial and surname do ("Craig R.Hughes": .hughes is an ending too)."""
    ending = domain.rpartition(".")[2]
    return ending.islower() or ending.isupper()


def _hides_target(link: Any) -> bool:
    """A link a person clicks without seeing where it goes: an HTML link whose text (a
    button's words, a picture) does not show its host. A web address written out in the
    text, or link text showing the host, tells the reader the destination before the click."""
    if link.source != "html":
        return False
    text = (link.text or "").lower()
    host = link.host.lower().removeprefix("www.")
    return not (host and host in text)


def _host_of(destination: Destination) -> str:
    """A destination's host or mail domain (phone numbers and files have none)."""
    if destination.kind == "reply":
        return destination.shown.rpartition("@")[2]
    return destination.shown if destination.kind == "link" else ""


def _leads(request: str, destination: Destination) -> bool:
    if request == _CALL:
        return destination.kind == "phone"
    if request == _REPLY:
        return destination.kind == "reply"
    if request == _OPEN:
        return destination.kind == "attachment"
    return destination.kind in ("link", "script")


def _shown(destinations: Iterable[Destination], limit: int = 3) -> str:
    seen = list(dict.fromkeys(d.shown for d in destinations))
    more = f" and {len(seen) - limit} more" if len(seen) > limit else ""
    return ", ".join(seen[:limit]) + more


def _hosts(destinations: Iterable[Destination], kind: str) -> str:
    return _shown(d for d in destinations if d.kind == kind)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _make(rule: str, summary: str, details: Mapping[str, Any]) -> Finding:
    return Finding(NAME, rule, SCORES[rule], summary, dict(details))
