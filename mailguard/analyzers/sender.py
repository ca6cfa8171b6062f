"""Structural tells in who a message says it is from and how it was put together.

Scam and phishing mail that imitates no protected brand still gives itself away in its
headers: a From line no mail program would write (an unquoted comma splitting the name,
a comma for a dot in the domain), an office name on a free-mail account ("Billing
Department <x@gmail.com>"), replies quietly diverted to a free-mail address, a subject
or sender name written in look-alike letters so filters cannot read it, the recipient's
own address spelled out in the subject, a plain subject needlessly base64-encoded, a bulk
send with every recipient hidden, no Message-ID, a sender on a throw-away top-level
domain or on a rented server's automatic host name.

Each rule is weak on its own (scores 1 to 3): together with the language and lookalike
evidence they decide; on their own they essentially never reach the tag threshold.
Checks that the lookalike analyzer makes (brand and person names in display names, an
address written into the display name, Reply-To diversion when From is a protected
sender, look-alike domains) are not repeated.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.lookalike.brands import load_brands, load_freemail
from mailguard.options import ConfigError, Option, read_data_toml
from mailguard.message import Address, ParsedMessage
from mailguard.model import Finding
from mailguard.resources import rules_file

SCORES: Mapping[str, float] = {
    "SENDER_FREEMAIL_BUSINESS_NAME": 2.0,
    "SENDER_REPLY_TO_FREEMAIL": 2.0,
    "SENDER_SUBJECT_LOOKALIKE_LETTERS": 2.0,
    "SENDER_NAME_LOOKALIKE_LETTERS": 2.0,
    "SENDER_UNDISCLOSED_RECIPIENTS": 1.0,
    "SENDER_NO_MESSAGE_ID": 1.0,
    "SENDER_RISKY_TLD": 1.0,
    "SENDER_SERVER_HOSTNAME": 1.5,
    "SENDER_FROM_MALFORMED": 3.0,
    "SENDER_SUBJECT_HAS_RECIPIENT": 2.0,
    "SENDER_NAME_HAS_RECIPIENT": 2.0,
    "SENDER_SUBJECT_ENCODED_ASCII": 1.0,
    "SENDER_FROM_SEVERAL_DOMAINS": 2.0,
    "SENDER_SUBJECT_RANDOM_CODE": 2.0,
    "SENDER_CONTACT_FREEMAIL_ELSEWHERE": 2.0,
}

_HEADER_END = re.compile(rb"\r?\n\r?\n")
# Base64 encoded words only: mail programs (Outlook, K-9) quoted-printable-encode plain
# subjects in normal use, but nothing needs base64 to send plain English.
_B64_WORD = re.compile(rb"=\?[^?\s]+\?[bB]\?[^?\s]*\?=")
_LETTER_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# "Roe, Jane <jane@example.com>", "Acme, Inc. <billing@acme.example>": a name with an
# unquoted comma, then one clean address. Wrong, but a careless real program writes it.
_COMMA_IN_NAME = re.compile(r"\s*[^,<>@\"]*[^\W\d_][^,<>@\"]*,\s*[^\W\d_][^,<>@\"]*<[^<>@\s]+@[^<>\s]+>\s*")
# Score of that milder shape: SENDER_FROM_MALFORMED's score less this.
COMMA_IN_NAME_DISCOUNT = 1.0
# A run of letters and digits standing alone in the subject (not part of an address, a
# path or a file name), long enough to be a code.
_CODE_TOKEN = re.compile(r"(?<![\w./@=#?&%-])[A-Za-z0-9]{9,64}(?![\w@/]|\.\w)")
# Product and brand names written in CamelCase ("OpenCourseWare", "iPhone15ProMax",
# "AmeriCorpsVISTA"): words run together, each starting with a capital.
_CAMEL_CASE = re.compile(r"(?:[a-z]+)?(?:[A-Z][a-z]+|[A-Z]{2,}(?![a-z])|[0-9]+)+")
# A host name with an IPv4 address written into it ("74.148.167.72.host.secureserver.net",
# "103-52-115-55.cloud.leaseweb.net"): the automatic name of a rented server or a home line.
_EMBEDDED_IP = re.compile(
    r"(?:^|[.-])((?:25[0-5]|2[0-4]\d|1?\d?\d)(?:[.-](?:25[0-5]|2[0-4]\d|1?\d?\d)){3})(?:[.-]|$)"
)
_STYLED_RANGES = (
    (0x1D400, 0x1D7FF),  # mathematical alphanumeric symbols
    (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),  # full-width letters
    (0x24B6, 0x24E9),  # circled letters
    (0x1F130, 0x1F189),  # squared and negative squared letters
)
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")


@dataclass(frozen=True)
class SenderData:
    """rules/sender.toml: office words for free-mail display names, throw-away TLDs, and
    the domains under which rented servers get their automatic names."""

    business_words: tuple[tuple[str, ...], ...]
    risky_tlds: frozenset[str]
    server_domains: frozenset[str] = frozenset()


def _string_list(data: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{path}: {key} must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip().lower() for v in value)


def load_sender_data(path: Path) -> SenderData:
    data = read_data_toml(path, "sender heuristics data")
    known = {"business_words", "risky_tlds", "server_domains"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(known))}")
    words = tuple(tuple(_LETTER_WORD.findall(w)) for w in _string_list(data, "business_words", path))
    tlds = frozenset(t.lstrip(".") for t in _string_list(data, "risky_tlds", path))
    servers = frozenset(d.strip(".") for d in _string_list(data, "server_domains", path))
    return SenderData(tuple(w for w in words if w), tlds, servers)


def embedded_ip(host: str) -> str:
    """The IPv4 address written inside a host name, or "" (a bare IP is not "inside")."""
    if not host or host.replace(".", "").isdigit() or ":" in host:
        return ""
    found = _EMBEDDED_IP.search(host)
    return found.group(1).replace("-", ".") if found else ""


def _script(char: str) -> str:
    """A coarse script name from the Unicode character name (LATIN, CYRILLIC, GREEK...)."""
    try:
        return unicodedata.name(char).split(" ", 1)[0]
    except ValueError:
        return "UNKNOWN"


# Letters in a decorative form: mathematical bold/italic/script, full-width, circled or
# squared. Ligatures (ﬁ) and superscripts come from copy-paste and are left out. One
# character class, so a subject is searched in C instead of a Python loop per character.
_STYLED = re.compile("[" + "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _STYLED_RANGES) + "]")


def lookalike_letters(text: str) -> list[str]:
    """Words that a reader sees as ordinary Latin words but that are not: Latin mixed with
    Cyrillic or Greek letters inside one word ("Pаyment" with a Cyrillic а), "styled"
    letters (mathematical bold, full-width, circled), and Latin letters strewn with
    combining marks that compose into no real letter ("Aܿmܿaܿzܿoܿn", "e̷ntre̷ga"), which
    break words for filters but not for eyes. Whole words in another alphabet, and accents
    (composed or not), are just language."""
    text = unicodedata.normalize("NFC", _INVISIBLE.sub("", text))
    words = text.split()
    out: list[str] = []
    if text.isascii():  # no styled letters, no combining marks, no other alphabet
        return out
    styled = [w for w in words if _STYLED.search(w)]
    if len(_STYLED.findall(text)) >= 3:
        out += styled
    marked = [w for w in words if not w.isascii() and _stray_marks(w)]
    if sum(_stray_marks(w) for w in marked) >= 3:
        out += [w for w in marked if w not in out]
    for word in _LETTER_WORD.findall(text):
        # Two Latin letters at least: "μg" (micrograms) is a unit, not a disguise.
        if word.isascii() or len(word) < 3:
            continue
        scripts = {_script(c) for c in word if not c.isascii()}
        latin = sum(1 for c in word if c.isascii()) + sum(1 for c in word if "LATIN" in _script(c))
        if latin >= 2 and scripts & {"CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"} and word not in out:
            out.append(word)
    return out


def _stray_marks(word: str) -> int:
    """Combining marks left on plain Latin letters after NFC composition: a real accent
    composes (e + ́ = é); a strike-through or a Syriac mark on an "a" does not."""
    return sum(
        1 for before, mark in zip(word, word[1:])
        if unicodedata.combining(mark) and before.isascii() and before.isalpha()
    )


def random_code(text: str) -> str:
    """A machine-made code in ``text`` ("Protocolo: o4M278sTaWC", "kpS5LnEqtk1"), or "":
    letters flipping between upper and lower case at random, at least three of each. Scam
    kits append one to every subject so that no two copies match. Order and ticket
    numbers (capitals and digits) and CamelCase names are not codes."""
    for token in _CODE_TOKEN.findall(text[:1000]):
        lower = sum(c.islower() for c in token)
        upper = sum(c.isupper() for c in token)
        if lower < 3 or upper < 3 or _CAMEL_CASE.fullmatch(token):
            continue
        letters = [c for c in token if c.isalpha()]
        if sum(1 for a, b in zip(letters, letters[1:]) if a.islower() != b.islower()) >= 4:
            return token
    return ""


def same_site(a: str, b: str) -> bool:
    """Whether two domains plausibly belong to one sender: equal, one under the other, or
    the same last two labels (news.example.com and mail.example.com). Erring towards
    "same" keeps the rule quiet on a company's own several domains."""
    if a == b or a.endswith("." + b) or b.endswith("." + a):
        return True
    return a.split(".")[-2:] == b.split(".")[-2:]


def _first_valid(addresses: tuple[Address, ...]) -> Address | None:
    """The first well-formed From address (a malformed From line may parse as several
    pieces, the real address among them)."""
    return next((a for a in addresses if a.valid and a.domain), None)


_EMAIL = re.compile(r"[\w.+'-]+@(?:[\w-]+\.)+[a-z]{2,}", re.I)
_LOCAL_PART = re.compile(r"[\w.+'-]*")  # matched on the reversed text before an "@" (see _addresses)
_AT_DOMAIN = re.compile(r"@(?:[\w-]+\.)+[a-z]{2,}", re.I)  # _EMAIL's "@" and domain
# "Write me to x@gmail.com", "reply me at", "e-mail me for details:", "it's my e-mail",
# "contact us on", "my private email", "entre em contato com": words asking to be written to,
# at most three words before an address. Forwarded-header lines ("De: Name <x@y>"), receipts
# ("Email: x@y") and footers ("This message was sent to x@y") carry no such words.
_CONTACT_CUE = re.compile(
    r"(?:\b(?:write|e-?mail|reply|respond|response|contact|reach|mail|message|text)"
    r"(?:\s+(?:me|us)\b(?:\s+(?:to|at|on|back)\b)?|\s+(?:to|at|on)\b(?:\s+(?:me|us)\b(?:\s+(?:to|at|on)\b)?)?)"
    r"|\b(?:my|it'?s|its)\s+(?:private\s+|personal\s+|direct\s+)?(?:e-?mail|email\s+address|address)\b"
    r"|\bentre\s+em\s+contato\s+com|\bescreva[\s-]+me|\bcontactez[\s-]+moi|\bescr[ií]beme|\bschreib(?:en\s+sie)?\s+mir"
    r"|\bsend\s+(?:your|us\s+your|me\s+your)\s+(?:full\s+)?(?:name|names|details|information|info|data)\s+to(?:\s+this\s+e-?mail)?)"
    r"(?:[\s:;,()\-]+[^\s@:;,()]+){0,3}[\s:;,()\-]*$",
    re.I,
)
_SUBJECT_LINE = re.compile(rb"^subject[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def _addresses(text: str) -> Iterator[re.Match[str]]:
    """``_EMAIL.finditer(text)``, in time linear in the text. Left to finditer, the pattern
    is tried at every position, and each try runs over the rest of the word before failing
    for want of an "@": a 20,000-letter word (a body anyone can send) took 1.8 s, and a
    60 KB To line 40 s. Every match is a run of local-part characters, one "@" and a
    domain, so the domains after an "@" are found first (``_AT_DOMAIN``, tried only at
    each "@"), then the run that ends at that "@" is read backwards: where finditer's
    match ending there begins (a later start in the same run meets the same "@" and domain)."""
    end = 0  # where the last match ended: the next one begins at or after it
    floor = 0  # just after the previous "@": no run crosses one
    for domain in _AT_DOMAIN.finditer(text):
        at = domain.start()
        start = at - _LOCAL_PART.match(text[max(end, floor):at][::-1]).end()
        floor = at + 1
        if start < at:
            found = _EMAIL.match(text, start)
            if found is not None:  # always, given the domain after the run
                yield found
                end = found.end()


def recipients(message: ParsedMessage) -> frozenset[str]:
    """The addresses this copy was sent to: the envelope's when known, and To/Cc. Read
    once per message (the sender and links analyzers both ask)."""
    def compute() -> frozenset[str]:
        out: set[str] = set()
        if message.envelope is not None:
            out.update(r.strip().strip("<>").lower() for r in message.envelope.rcpt_tos if "@" in r)
        for name in ("to", "cc"):
            for value in message.header_all(name):
                out.update(m.group(0).lower() for m in _addresses(value))
        return frozenset(out)
    return message.derived("sender.recipients", compute)


def _recipient_in(text: str, addresses: list[str], own: str) -> str:
    """The first of ``addresses`` (other than the sender's ``own``) written in ``text``, or ""."""
    return next((a for a in addresses if a != own and a in text), "")


def _encoded_subject(raw: bytes) -> bool:
    """Whether the Subject as sent uses base64 encoded words (read from the raw header
    block: the parsed subject is already decoded)."""
    found = _HEADER_END.search(raw, 0, 256 * 1024)
    head = raw[: found.start()] if found else raw[: 256 * 1024]
    line = _SUBJECT_LINE.search(head)
    return bool(line and _B64_WORD.search(line.group(1)))


class SenderAnalyzer(Analyzer):
    name = "sender"
    config_schema = {
        "data_file": Option(
            "", "path",
            "Business words for display names and throw-away top-level domains (TOML). Empty for the "
            "built-in rules/sender.toml.",
        ),
        "freemail_file": Option(
            "", "path", "Free-mail provider list (TOML, domains = [...]). Empty for the built-in rules/freemail.toml "
            "(the list the lookalike analyzer uses).",
        ),
    }

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        self.data = load_sender_data(self._path("data_file", "sender.toml"))
        self.freemail = load_freemail(self._path("freemail_file", "freemail.toml"))
        self.protected = self._protected_domains(context)

    @staticmethod
    def _protected_domains(context: AnalyzerContext) -> frozenset[str]:
        """Domains the lookalike analyzer protects (its brand table and the practice's
        protected_domains): for mail from them it judges Reply-To itself, so this
        analyzer stays out of the way instead of counting the same thing twice."""
        try:
            settings = context.config.section("lookalike")
        except KeyError:
            return frozenset()
        if not settings.get("enabled", True):
            return frozenset()
        value = str(settings.get("brands_file", "") or "")
        path = context.config.resolve_path(value) if value else rules_file("brands.toml")
        try:
            brands = load_brands(path).brands
        except (ConfigError, OSError):
            brands = ()  # the lookalike analyzer reports its own broken file
        domains = {d.lower() for b in brands for d in b.domains + b.also_owns}
        domains.update(str(d).strip().lower().lstrip("@") for d in settings.get("protected_domains", ()))
        return frozenset(domains)  # free-mail domains among them are dropped in _is_protected

    def _is_protected(self, domain: str) -> bool:
        """Like the lookalike analyzer: a free-mail account is nobody's protected sender."""
        if self._is_freemail(domain):
            return False
        labels = domain.lower().split(".")
        return any(".".join(labels[i:]) in self.protected for i in range(len(labels) - 1))

    def _path(self, key: str, builtin: str) -> Path:
        value = str(self.settings[key])
        if not value:
            return rules_file(builtin)
        path = self.context.config.resolve_path(value)
        if not path.is_file():
            raise ConfigError(
                f"[sender] {key}: {path} does not exist or is not a file; fix the path or leave it empty for the built-in data"
            )
        return path

    def _score(self, rule: str) -> float:
        return SCORES[rule]

    def _is_freemail(self, domain: str) -> bool:
        """The provider's own domain only: a subdomain (groups.msn.com) is a service of
        the provider, not a personal mailbox anyone can open."""
        return domain.lower() in self.freemail

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        findings: list[Finding] = []
        findings += self._from_header(message)
        findings += self._several_senders(message)
        sender = _first_valid(message.from_)
        if sender is not None:
            findings += self._risky_tld(sender)
            findings += self._server_hostname(sender)
            findings += self._business_name(sender)
            findings += self._name_letters(sender)
            findings += self._reply_to(message, sender)
            findings += self._contact_elsewhere(message, sender)
        findings += self._subject(message, sender)
        findings += self._recipients(message, sender)
        findings += self._missing_headers(message)
        return findings

    # ------------------------------------------------------------------ From

    def _from_header(self, message: ParsedMessage) -> Iterator[Finding]:
        """A From line that does not parse as one clean address: an unquoted comma in the
        name that splits it in two, a comma for a dot in the domain, no address at all.
        Mail programs never write these; careless bulk senders and kits do."""
        addresses = message.from_
        broken = [a for a in addresses if not a.valid or not a.domain]
        if addresses and not broken:
            return
        shown = " ".join(message.header_all("from"))[:200] or "(no From line)"
        # Kits write "Brand ,_<x@y>", "Name, <x@y>", "<x@host-without-ending>", two names
        # and an address: no program does. A name with an unquoted comma before one clean
        # address is the mild case (measured: 0 of 4,287 ham either way; the mild shape is
        # a third of the phishing hits).
        score = self._score("SENDER_FROM_MALFORMED")
        mild = bool(_COMMA_IN_NAME.fullmatch(shown))
        if mild:
            score = max(score - COMMA_IN_NAME_DISCOUNT, 0.0)
        yield self.finding(
            "SENDER_FROM_MALFORMED", score,
            f"The sender line is malformed ({shown}); ordinary mail programs never write it like that",
            {"from": shown, "addresses": len(addresses), "comma_in_name": mild},
        )

    def _several_senders(self, message: ParsedMessage) -> Iterator[Finding]:
        """A From line naming two addresses on unrelated domains
        (``"gutschein@team-booking.de", <service@stayfriends.de>``): one to show, one that
        sends. A message has one author in practice; bulk scams paste a convincing
        address in front of the one their mail really leaves from."""
        seen: list[str] = []
        for address in message.from_[:10]:
            if not address.valid or not address.domain:
                continue
            domain = address.domain.lower().rstrip(".")
            if any(same_site(domain, other) for other in seen):
                continue
            seen.append(domain)
        if len(seen) < 2:
            return
        yield self.finding(
            "SENDER_FROM_SEVERAL_DOMAINS", self._score("SENDER_FROM_SEVERAL_DOMAINS"),
            f"The sender line names addresses at {seen[0]} and {seen[1]}; a real message comes from one "
            "sender, scams show one address and send from another",
            {"domains": seen[:5]},
        )

    def _risky_tld(self, sender: Address) -> Iterator[Finding]:
        labels = sender.domain.split(".")
        endings = (".".join(labels[i:]) for i in range(1, len(labels)))
        tld = next((e for e in endings if e in self.data.risky_tlds), "")
        if tld:
            yield self.finding(
                "SENDER_RISKY_TLD", self._score("SENDER_RISKY_TLD"),
                f"The sender writes from {sender.domain}, under an internet ending (.{tld}) that is mostly "
                "used for throw-away addresses",
                {"domain": sender.domain, "tld": tld},
            )

    def _server_hostname(self, sender: Address) -> Iterator[Finding]:
        """Mail from the automatic name of a rented server (vmi1736435.contaboserver.net,
        an address with the server's IP in it, localhost): what a freshly set-up
        bulk-mail script sends as, never an organisation's mail."""
        domain = sender.domain
        address = embedded_ip(domain)
        labels = domain.split(".")
        listed = next((d for d in (".".join(labels[i:]) for i in range(len(labels))) if d in self.data.server_domains), "")
        if not address and not listed and "localhost" not in labels and "localdomain" not in labels:
            return
        yield self.finding(
            "SENDER_SERVER_HOSTNAME", self._score("SENDER_SERVER_HOSTNAME"),
            f"The sender writes from {domain}, the automatic name of a rented server rather than an "
            "organisation's mail domain",
            {"domain": domain, "address": address, "listed": listed},
        )

    def _name_letters(self, sender: Address) -> Iterator[Finding]:
        words = lookalike_letters(sender.display_name)
        if words:
            yield self.finding(
                "SENDER_NAME_LOOKALIKE_LETTERS", self._score("SENDER_NAME_LOOKALIKE_LETTERS"),
                f"The sender's name is written with look-alike letters from other alphabets or styled symbols "
                f"(\"{words[0]}\"), so that it reads like a name you know while fooling mail filters",
                {"display_name": sender.display_name, "words": words[:5]},
            )

    def _business_name(self, sender: Address) -> Iterator[Finding]:
        if not sender.display_name or not self._is_freemail(sender.domain):
            return
        tokens = tuple(w.lower() for w in _LETTER_WORD.findall(sender.display_name))
        for words in self.data.business_words:
            n = len(words)
            if any(tokens[i:i + n] == words for i in range(len(tokens) - n + 1)):
                yield self.finding(
                    "SENDER_FREEMAIL_BUSINESS_NAME", self._score("SENDER_FREEMAIL_BUSINESS_NAME"),
                    f"The sender calls itself \"{sender.display_name}\" but writes from a free email account "
                    f"({sender.address}); real offices write from their organisation's own address",
                    {"display_name": sender.display_name, "domain": sender.domain, "word": " ".join(words)},
                )
                return

    def _reply_to(self, message: ParsedMessage, sender: Address) -> Iterator[Finding]:
        if " via " in f" {sender.display_name.lower()} ":
            return  # sent on someone's behalf (Google Groups, list relays): Reply-To is theirs
        if self._is_protected(sender.domain):
            return  # the lookalike analyzer judges Reply-To for protected senders
        for reply in message.reply_to[:5]:
            if not reply.domain or reply.address.lower() == sender.address.lower():
                continue
            if not self._is_freemail(reply.domain):
                continue
            if reply.domain == sender.domain and not self._is_freemail(sender.domain):
                continue  # a company's own addresses; one free-mail account replying for another still counts
            yield self.finding(
                "SENDER_REPLY_TO_FREEMAIL", self._score("SENDER_REPLY_TO_FREEMAIL"),
                f"The message comes from {sender.address}, but replies would go to a different, free email "
                f"account ({reply.address})",
                {"from": sender.address, "reply_to": reply.address},
            )
            return

    def _contact_elsewhere(self, message: ParsedMessage, sender: Address) -> Iterator[Finding]:
        """The text asks to be written to at a free-mail address that is not the sender's:
        the Reply-To diversion written into the body, where no header check sees it
        (romance and advance-fee mail: "I'm going to send you my photo, write me to
        x@gmail.com"). Only an address right after words asking for mail counts, so a
        signature or a forwarded header naming some address does not; the finding names
        the provider only, never the address (it comes from the body)."""
        if " via " in f" {sender.display_name.lower()} ":
            return
        text = message.body_text[:20000]
        own = sender.address.lower()
        addressed = recipients(message)
        for found in _addresses(text):
            address = found.group(0).lower().strip(".'")
            domain = address.rpartition("@")[2]
            if address == own or address in addressed or not self._is_freemail(domain):
                continue
            if domain == sender.domain.lower() and not self._is_freemail(domain):
                continue
            if not _CONTACT_CUE.search(text, max(0, found.start() - 80), found.start()):
                continue
            yield self.finding(
                "SENDER_CONTACT_FREEMAIL_ELSEWHERE", self._score("SENDER_CONTACT_FREEMAIL_ELSEWHERE"),
                f"The message comes from {sender.address}, but its text asks you to write to another, free "
                f"email account (at {domain})",
                {"from": sender.address, "provider": domain},
            )
            return

    # ------------------------------------------------------------------ subject

    def _subject(self, message: ParsedMessage, sender: Address | None) -> Iterator[Finding]:
        subject = message.subject
        words = lookalike_letters(subject)
        if words:
            yield self.finding(
                "SENDER_SUBJECT_LOOKALIKE_LETTERS", self._score("SENDER_SUBJECT_LOOKALIKE_LETTERS"),
                f"The subject is written with look-alike letters from other alphabets or styled symbols "
                f"(\"{words[0]}\"), which hides its words from mail filters",
                {"words": words[:5]},
            )
        own = sender.address.lower() if sender is not None else ""
        addressed = sorted(recipients(message))
        names = " ".join(a.display_name for a in message.from_).lower()
        # "DocuSign via files you@practice.example" <x@unrelated.example>: no mail program
        # puts the reader's address into the sender's name; kits do, so the message looks
        # addressed to them by a system that knows them.
        address = _recipient_in(names, addressed, own) if "@" in names else ""
        if address:
            yield self.finding(
                "SENDER_NAME_HAS_RECIPIENT", self._score("SENDER_NAME_HAS_RECIPIENT"),
                f"The sender's name spells out your own email address ({address}) while the message "
                f"comes from {own or 'another address'}, a trick of automated phishing to look personal",
                {"recipient": address},
            )
        address = _recipient_in(subject.lower(), addressed, own)
        if address:
            yield self.finding(
                "SENDER_SUBJECT_HAS_RECIPIENT", self._score("SENDER_SUBJECT_HAS_RECIPIENT"),
                f"The subject spells out your own email address ({address}), a trick of automated "
                "phishing to look personal and official",
                {"recipient": address},
            )
        code = random_code(subject)
        if code:
            yield self.finding(
                "SENDER_SUBJECT_RANDOM_CODE", self._score("SENDER_SUBJECT_RANDOM_CODE"),
                f"The subject carries a string of random letters ({code}), which bulk scams add so that "
                "each copy looks different to mail filters",
                {"code": code},
            )
        if subject.isascii() and _encoded_subject(message.raw):
            yield self.finding(
                "SENDER_SUBJECT_ENCODED_ASCII", self._score("SENDER_SUBJECT_ENCODED_ASCII"),
                "The subject is plain text but was sent scrambled (base64-encoded), a way to hide its words from mail filters",
                {"subject": subject[:200]},
            )

    # ------------------------------------------------------------------ recipients and headers

    def _recipients(self, message: ParsedMessage, sender: Address | None) -> Iterator[Finding]:
        """A To line that names no one ("undisclosed-recipients:;") or only the sender
        writing to itself: the real recipients were all put in Bcc, the way bulk scams are
        sent. A message with no To line at all does not count: old and automated mail
        programs leave it out (measured: 1-4% of ham, almost no phish)."""
        to_lines = message.header_all("to")
        if not to_lines:
            return
        to = " ".join(to_lines).strip()
        cc = " ".join(message.header_all("cc")).strip()
        named = {m.group(0).lower() for m in _addresses(f"{to} {cc}")}
        if sender is not None:
            named.discard(sender.address.lower())
        if named:
            return
        shown = to or "(empty)"
        yield self.finding(
            "SENDER_UNDISCLOSED_RECIPIENTS", self._score("SENDER_UNDISCLOSED_RECIPIENTS"),
            f"The message is not addressed to you or anyone else by name (To: {shown}); it was sent in bulk "
            "with the recipients hidden",
            {"to": to[:200]},
        )

    def _missing_headers(self, message: ParsedMessage) -> Iterator[Finding]:
        if not message.message_id:
            yield self.finding(
                "SENDER_NO_MESSAGE_ID", self._score("SENDER_NO_MESSAGE_ID"),
                "The message has no Message-ID, which every ordinary mail program adds; bulk-sending tools often leave it out",
            )
