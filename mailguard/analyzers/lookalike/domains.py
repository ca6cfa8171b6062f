"""Is this domain imitating a protected one, and how? The pure matching engine.

``DomainMatcher(protected).match(host)`` answers for one host name with a ``Match`` that
names the technique and explains it in plain English, or ``None``. It knows nothing about
messages, so the benchmark drives it directly. Everything is compiled in ``__init__``;
``match`` only reads, and caches its answer per host (``lru_cache`` is thread-safe).

Techniques, in the order they are tried (the clearest explanation wins):
  embedded     the whole protected domain inside a longer host (paypal.com.verify.info)
  tld_swap     the same name under another ending (paypal.net)
  homoglyph    look-alike characters (pаypal with a Cyrillic а, paypa1, rnicrosoft)
  hyphenation  a hyphen inside the name (pay-pal.com)
  split        a dot inside the name (pay.pal.com)
  combosquat   the name plus words (secure-paypal-billing.com, paypallogin.com)
  typo         a small typing slip by edit distance, length-aware (paypall.com, chsae.com)
  subdomain    the bare name in front of an unrelated domain (paypal.example-host.net)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

from rapidfuzz import process
from rapidfuzz.distance import OSA

from mailguard.analyzers.lookalike.explain import describe_changes, join_words, not_theirs, script_note
from mailguard.analyzers.lookalike.glyphs import GlyphTable
from mailguard.analyzers.lookalike.suffixes import DomainSplitter, HostParts, is_ip_host
from mailguard.message import idna_to_ascii, idna_to_unicode

__all__ = ["DomainMatcher", "DomainSplitter", "HostParts", "Match", "Protected", "is_ip_host", "protected_from_domains"]

TECHNIQUES = ("embedded", "tld_swap", "homoglyph", "hyphenation", "split", "combosquat", "typo", "subdomain")

@dataclass(frozen=True)
class Protected:
    """One protected registrable domain, e.g. paypal.com owned by "PayPal" (owner "" for the
    practice's own list). ``fuzzy`` false is for names that are ordinary words (live.com,
    box.com): no typing slips and no other endings, which are mostly other real names;
    look-alike letters, added phishing words and embedding are still caught. ``other_endings_owned`` marks
    global brands that hold their name under country endings (google.com.br, microsoft.de):
    the same name under such an ending is theirs, not an imitation (see
    ``is_country_ending``); generic endings (.net, .info) and open country endings (.co,
    .io) stay flagged unless listed as the brand's."""

    domain: str
    label: str
    suffix: str
    owner: str = ""
    fuzzy: bool = True
    other_endings_owned: bool = False

    @property
    def shown(self) -> str:
        return f"{self.domain} ({self.owner})" if self.owner else self.domain


@dataclass(frozen=True)
class Match:
    """A host that imitates ``target`` by ``technique``; ``explanation`` is the plain
    English reason ("the letter l was replaced by the digit 1")."""

    host: str
    registrable: str
    target: Protected
    technique: str
    explanation: str
    distance: int = 0

    def sentence(self) -> str:
        """The finding text: "paypa1.com imitates paypal.com (PayPal): the letter l was ..."."""
        return f"{self.shown_host} imitates {self.target.shown}: {self.explanation}"

    @property
    def shown_host(self) -> str:
        """The host as read, with its punycode form when it has special characters."""
        return self.host if self.host.isascii() else f"{self.host} ({idna_to_ascii(self.host)})"


# Country endings sold to anyone worldwide as if generic: a global brand's name under
# these is as likely an attacker's as under .net or .info.
OPEN_COUNTRY_ENDINGS = frozenset(
    "co io me tv cc ws ai ly to gg la fm am nu tk ml ga cf gq pw su vc sh ac bz mn so st cx ms sx us".split()
)


def is_country_ending(suffix: str) -> bool:
    """A country-code ending (.de, .com.br, .co.uk), not one of the open ones (.co, .io)."""
    last = suffix.rsplit(".", 1)[-1]
    return len(last) == 2 and last.isalpha() and last not in OPEN_COUNTRY_ENDINGS


@dataclass
class DomainMatcher:
    """Matches hosts against protected domains. Build once; ``match`` is thread-safe.

    ``owned`` are further domains never flagged; ``combo_words`` the words phishers join
    to a name (default: the built-in brand table's [combosquat] words)."""

    protected: Sequence[Protected]
    owned: Iterable[str] = ()
    glyphs: GlyphTable | None = None
    combo_words: Iterable[str] | None = None
    cache_size: int = 65536
    splitter: DomainSplitter | None = None
    _by_domain: dict[str, Protected] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.glyphs is None:
            from mailguard.resources import rules_file

            self.glyphs = GlyphTable.load(rules_file("confusables.toml"))
        g = self.glyphs
        if self.combo_words is None:
            from mailguard.analyzers.lookalike.brands import load_brands
            from mailguard.resources import rules_file

            self.combo_words = load_brands(rules_file("brands.toml")).combo_words
        self._splitter = self.splitter or DomainSplitter()
        self._private_endings = frozenset(
            p.suffix for p in self.protected if not self._splitter.is_listed_suffix(p.suffix)
        )
        by_domain: dict[str, Protected] = {}
        for p in self.protected:
            by_domain.setdefault(p.domain, p)
        self._by_domain = by_domain
        self._owned = frozenset(idna_to_ascii(d) for d in self.owned) | frozenset(by_domain)
        self._by_label: dict[str, list[Protected]] = {}
        self._by_skeleton: dict[str, list[Protected]] = {}
        for p in by_domain.values():
            self._by_label.setdefault(p.label, []).append(p)
            self._by_skeleton.setdefault(g.skeleton(p.label), []).append(p)
        fuzzy = [p for p in by_domain.values() if p.fuzzy]
        self._fold_buckets = _length_buckets([(g.fold(p.label), p) for p in fuzzy])
        self._skeleton_buckets = _length_buckets([(g.skeleton(p.label), p) for p in fuzzy])
        words = {w.lower() for w in self.combo_words if w}
        self._words = frozenset(words | {g.skeleton(w) for w in words})
        self._max_word = max((len(w) for w in self._words), default=0)
        self._max_label = max((len(k) for k in self._by_skeleton), default=0)
        self._cached = lru_cache(maxsize=self.cache_size)(self._match)

    # ------------------------------------------------------------------ public API

    def match(self, host: str) -> Match | None:
        """The imitation this host commits, or None (also for protected and owned hosts)."""
        host = (host or "").strip().lower().rstrip(".")
        if not host or len(host) > 253:
            return None
        return self._cached(host)

    def is_owned(self, host: str) -> bool:
        """Whether ``host`` is, or is under, a protected or owned registrable domain."""
        parts = self.split(host)
        return parts is not None and self._owns(parts)

    def _owns(self, parts: HostParts) -> bool:
        if parts.registrable in self._owned:
            return True
        if not is_country_ending(parts.suffix):
            return False
        return any(t.other_endings_owned for t in self._by_label.get(parts.label, ()))

    def split(self, host: str) -> HostParts | None:
        """Registrable domain, label and suffix by the bundled public suffix list."""
        return self._splitter.parts(host)

    def owner_domains(self) -> frozenset[str]:
        return self._owned

    # ------------------------------------------------------------------ matching

    def _match(self, host: str) -> Match | None:
        parts = self.split(host)
        if parts is None:
            return None
        if parts.unlisted and parts.suffix not in self._private_endings:
            return None  # a name under an ending nobody can register (a typo, an intranet)
        if self._owns(parts):
            return None
        for check in (
            self._embedded, self._tld_swap, self._homoglyph, self._split_name,
            self._combosquat, self._typo, self._subdomain,
        ):
            found = check(parts)
            if found is not None:
                return found
        return None

    def _embedded(self, parts: HostParts) -> Match | None:
        labels = [*parts.subdomains, parts.label]
        end = len(labels)  # a window may end at the registrable label, never inside the suffix
        for i in range(end - 1):
            for n in (2, 3, 4):
                if i + n > end:
                    break
                window = ".".join(labels[i:i + n])
                target = self._by_domain.get(window)
                if target is not None:
                    return Match(
                        parts.host, parts.registrable, target, "embedded",
                        f"the address only begins with {target.domain}; the domain it really belongs "
                        f"to is {parts.shown_registrable}",
                    )
        return None

    def _tld_swap(self, parts: HostParts) -> Match | None:
        for target in self._by_label.get(parts.label, ()):
            # An ordinary word is someone else's name under other endings (epic.org).
            if target.suffix != parts.suffix and target.fuzzy:
                return Match(
                    parts.host, parts.registrable, target, "tld_swap",
                    f"it uses the name {target.label} with a different ending (.{parts.suffix} instead of "
                    f".{target.suffix}), and {parts.shown_registrable} is {not_theirs(target.owner)}",
                )
        return None

    def _homoglyph(self, parts: HostParts) -> Match | None:
        g = self._glyphs
        label = parts.ulabel
        for target in self._by_skeleton.get(g.skeleton(label), ()):
            if target.label == parts.label:
                continue
            return Match(
                parts.host, parts.registrable, target, "homoglyph",
                describe_changes(target.label, label, g) + script_note(label, g),
            )
        return None

    def _split_name(self, parts: HostParts) -> Match | None:
        g = self._glyphs
        pieces = [idna_to_unicode(x) for x in parts.subdomains[-2:]] + [parts.ulabel]
        for k in range(len(pieces)):
            used = pieces[k:]
            joined = "".join(used)
            if len(used) == 1 and "-" not in joined:
                continue
            plain = joined.replace("-", "")
            for target in self._by_skeleton.get(g.skeleton(plain), ()):
                shown = ".".join(used)
                if len(used) > 1:
                    return Match(
                        parts.host, parts.registrable, target, "split",
                        f"a dot splits the name {target.label} into {shown}, so the address really belongs "
                        f"to {parts.shown_registrable}",
                    )
                return Match(
                    parts.host, parts.registrable, target, "hyphenation",
                    f"a hyphen was added to the name {target.label} ({shown})"
                    + ("" if plain == target.label else "; " + describe_changes(target.label, plain, g)),
                )
        return None

    def _combosquat(self, parts: HostParts) -> Match | None:
        g = self._glyphs
        label = parts.ulabel
        for text, index in ((g.fold(label), self._by_label), (g.skeleton(label), self._by_skeleton)):
            found = self._find_brand_with_words(text, index)
            if found is not None:
                target, words = found
                said = join_words(words)
                return Match(
                    parts.host, parts.registrable, target, "combosquat",
                    f"it adds {said} to the name {target.label}, and {parts.shown_registrable} is {not_theirs(target.owner)}",
                )
        return None

    def _find_brand_with_words(
        self, text: str, index: Mapping[str, list[Protected]]
    ) -> tuple[Protected, list[str]] | None:
        """A protected name inside ``text`` with nothing around it but phishing words,
        digits and hyphens (the name's own ending counts as a word: paypalcom.com). Other
        words around a name make other real names (zoominfo, dropboxapi), so they do not
        count."""
        n = len(text)
        for i in range(n):
            for j in range(min(n, i + self._max_label), i + 2, -1):
                if i == 0 and j == n:
                    continue
                for target in index.get(text[i:j], ()):
                    words = self._segment(text[:i] + "-" + text[j:], self._suffix_words(target))
                    if words is None:
                        continue
                    # An ordinary word plus a number is usually another real name (1office).
                    if target.fuzzy or any(not w.isdigit() for w in words):
                        return target, words
        return None

    def _suffix_words(self, target: Protected) -> frozenset[str]:
        return self._words | frozenset(target.suffix.split("."))

    def _segment(self, text: str, words: frozenset[str]) -> list[str] | None:
        """Split ``text`` into known words and numbers (hyphens are free separators), or
        None when it is not made of them."""
        out: list[str] = []
        for piece in re.split(r"-+|([0-9]+)", text):
            if not piece:
                continue
            if piece.isdigit():
                out.append(piece)
                continue
            found = _word_break(piece, words, self._max_word)
            if found is None:
                return None
            out.extend(found)
        return out

    def _typo(self, parts: HostParts) -> Match | None:
        """Edit distance (optimal string alignment: a swap of neighbours is one slip) to
        each fuzzy-protected name, both on the letters as written (paypcl) and on the
        look-alike skeleton (rnicrosft), since reading "rn" as "m" can hide a plain typing
        slip as much as reveal one. Short names use the letters as written only: their
        skeletons collide too easily."""
        g = self._glyphs
        label = parts.ulabel
        best: tuple[int, Protected] | None = None
        for text, buckets, short_ok in (
            (g.fold(label), self._fold_buckets, True), (g.skeleton(label), self._skeleton_buckets, False)
        ):
            bucket = buckets.get(len(text))
            if len(text) < 2 or bucket is None:
                continue
            choices, targets = bucket
            for choice, distance, idx in process.extract(
                text, choices, scorer=OSA.distance, score_cutoff=MAX_TYPO_DISTANCE, limit=8
            ):
                target, distance = targets[idx], int(distance)
                if len(choice) <= 5 and not short_ok:
                    continue
                if distance == 2 and g.visual_distance(choice, text) <= 1:
                    distance = 1  # two misreadable letters (actma for aetna) read as one slip
                added = len(text) == len(choice) + distance and is_subsequence(choice, text)
                if not typo_allowed(distance, len(choice), target.suffix == parts.suffix, added):
                    continue
                if best is None or distance < best[0]:
                    best = (distance, target)
        if best is None:
            return None
        distance, target = best
        return Match(
            parts.host, parts.registrable, target, "typo",
            describe_changes(target.label, label, g) + script_note(label, g), distance,
        )

    def _subdomain(self, parts: HostParts) -> Match | None:
        for sub in parts.subdomains:
            for target in self._by_label.get(sub, ()):
                if len(target.label) >= 4:
                    return Match(
                        parts.host, parts.registrable, target, "subdomain",
                        f"the name {target.label} is put in front of an unrelated domain, {parts.shown_registrable}",
                    )
        return None

    @property
    def _glyphs(self) -> GlyphTable:
        assert self.glyphs is not None
        return self.glyphs


MAX_TYPO_DISTANCE = 2


def _length_buckets(
    names: list[tuple[str, Protected]]
) -> dict[int, tuple[list[str], list[Protected]]]:
    """For each length, the names close enough in length to be within MAX_TYPO_DISTANCE,
    so one lookup compares a host with a few dozen names instead of every one."""
    out: dict[int, tuple[list[str], list[Protected]]] = {}
    lengths = {len(n) for n, _ in names}
    for length in range(1, max(lengths, default=0) + MAX_TYPO_DISTANCE + 1):
        near = [(n, p) for n, p in names if abs(len(n) - length) <= MAX_TYPO_DISTANCE]
        if near:
            out[length] = ([n for n, _ in near], [p for _, p in near])
    return out


def typo_allowed(distance: int, length: int, same_suffix: bool, only_added: bool = False) -> bool:
    """Length-aware edit distance. One slip in a short name such as uhc.com turns it into
    many real, unrelated names, so names of up to 5 letters allow one slip under the same
    ending only; names of 6-9 letters one slip, or two added letters under the same
    ending (microsesoft: every letter of the name is still there, in order); names of 10
    letters or more two slips under the same ending."""
    if distance <= 0:
        return False
    if length <= 5:
        return distance == 1 and same_suffix
    if distance == 1:
        return True
    if distance == 2 and same_suffix:
        return length >= 10 or only_added
    return False


def is_subsequence(short: str, long: str) -> bool:
    """Whether every letter of ``short`` appears in ``long`` in the same order."""
    it = iter(long)
    return all(ch in it for ch in short)


def _word_break(text: str, words: frozenset[str], max_word: int) -> list[str] | None:
    n = len(text)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for end in range(1, n + 1):
        for start in range(max(0, end - max_word), end):
            prefix = best[start]
            if prefix is not None and text[start:end] in words:
                best[end] = prefix + [text[start:end]]
                break
    return best[n]


def protected_from_domains(
    domains: Iterable[str], owner: str = "", fuzzy: bool = True, splitter: DomainSplitter | None = None
) -> list[Protected]:
    """Protected entries (registrable domain, label, suffix) from domain names."""
    split = splitter or DomainSplitter()
    out = []
    for d in domains:
        parts = split.parts(d)
        if parts is not None:
            out.append(Protected(parts.registrable, parts.label, parts.suffix, owner, fuzzy))
    return out
