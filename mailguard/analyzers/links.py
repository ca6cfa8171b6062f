"""Structural tells in a message's links, whoever the message claims to be from.

Phishing that imitates no known brand and is worded plainly still has to get the reader
to a page the attacker controls, and that page is rarely on the attacker's own domain: it
sits behind a URL shortener, on free web hosting, on a form builder or an IPFS gateway,
or under a throw-away top-level domain (the host lists are data, ``rules/links.toml``).
Kits also personalise the link with the recipient's own address (so the fake sign-in page
greets them by name), send a single picture with one link (no words for a filter to read),
or use ``javascript:``/``data:`` links that open a page no web address points to. Bulk
scam mail loads its pictures and tracking pixels from a bare internet address (a rented
server with no name), and old kits wrap a picture in a link to the real bank while its
image map sends the click elsewhere.

Every rule here is weak on its own (real mail uses shorteners and free hosting too);
the scores are meant to add to the language and lookalike evidence, never to decide
alone. Raw-IP, punycode and "text shows one domain, link goes to another" links belong to
the lookalike analyzer and are not repeated here; password forms in the body belong to
the signatures analyzer.
"""
from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from html import unescape
from urllib.parse import unquote, urlsplit

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.hidden_content import pdf_object_streams
from mailguard.analyzers.lookalike.links import is_ip_like
from mailguard.analyzers.sender import embedded_ip, recipients as message_recipients, same_site
from mailguard.options import ConfigError, Option, read_data_toml
from mailguard.message import Link, ParsedMessage, iter_all_messages, query_values, url_host, url_query
from mailguard.model import Finding
from mailguard.resources import rules_file

# Built-in scores (operators override them in [policy] scores). The host-list rules take
# their ids from rules/links.toml; their scores are here so that all weights sit together.
SCORES: Mapping[str, float] = {
    "LINKS_SHORTENER": 1.5,
    "LINKS_FREE_HOSTING": 2.0,
    "LINKS_FORM_BUILDER": 2.0,
    "LINKS_IPFS": 3.0,
    "LINKS_RISKY_TLD": 1.0,
    "LINKS_RECIPIENT_IN_URL": 2.0,
    "LINKS_SCRIPT_URL": 3.0,
    "LINKS_IMAGE_ONLY": 2.0,
    "LINKS_HIDDEN_TEXT": 1.5,
    "LINKS_SERVER_HOSTNAME": 2.0,
    "LINKS_IMAGE_IP": 2.0,
    "LINKS_IMAGE_MAP_ELSEWHERE": 3.0,
    "LINKS_IMAGE_SHARING": 1.5,
    "LINKS_DOCUMENT_ONLY_LINK": 2.0,
}
DEFAULT_HOST_SCORE = 1.0

_RULE_ID = re.compile(r"^LINKS_[A-Z0-9_]+$")
# data:application/... downloads are the signatures analyzer's (HTML_DATA_URI_DOWNLOAD).
_SCRIPT_HREF = re.compile(
    r"""<a\b[^>]{0,500}?\bhref\s*=\s*["']?\s*(javascript|data|vbscript)\s*:(?!\s*application/)""", re.I
)  # the reference for script_href(): same first match, without a 500-character try at every "<a"
_SCRIPT_HREF_VALUE = re.compile(r"""\bhref\s*=\s*["']?\s*(javascript|data|vbscript)\s*:(?!\s*application/)""", re.I)
_ANCHOR_START = re.compile(r"<a\b", re.I)
SCRIPT_HREF_REACH = 500  # most characters between "<a" and its href (the [^>]{0,500} above)
_IMG = re.compile(r"<img\b", re.I)
# The click areas of an image map (<map><area href=...>): links that show no text at all.
_AREA_HREF = re.compile(r"""<area\b[^>]{0,500}?\bhref\s*=\s*["']?\s*([^"'\s>]{1,2048})""", re.I)
_HOST_NAME = re.compile(r"^(?:[a-z0-9-]+\.)+[a-z0-9-]+$|^\[[0-9a-f:.]+\]$")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
# Hidden text also holds style sheets and scripts (layout, not words meant for a filter):
# their blocks are dropped and only plain words are counted.
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_BRACES = re.compile(r"([{}])")
MAX_HIDDEN_CHARS = 200_000
MAX_URL_CHARS = 8192  # of one link, searched for the recipient's address
MAX_B64_RUNS = 16  # base64 pieces decoded per link
MAX_IMAGE_ONLY_LINKS = 10  # distinct links in a picture-only message
MAX_RECIPIENTS = 20  # addresses looked for in links (a message to 500 people is bulk anyway)
_PLAIN_TOKEN = re.compile(r"^[^\W\d_]{2,}[.,!?]?$", re.UNICODE)
# A PDF's link annotations: /URI (literal string) or /URI <hex string>.
_PDF_URI = re.compile(rb"/URI\s*(?:\(((?:\\.|[^\\)]){1,2048})\)|<([0-9A-Fa-f\s]{2,4096})>)")
_PDF_ESCAPE = re.compile(rb"\\([nrtbf()\\]|[0-7]{1,3}|\r?\n)")
_PDF_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"(": b"(", b")": b")", b"\\": b"\\"}
_EMBEDDED_TARGET = re.compile(r"(?i)^(?:https?://|www\.)[^\s/?#]+")
_OOXML_EXTERNAL = re.compile(rb'Target="((?:https?://|www\.)[^"]{1,2048})"\s+TargetMode="External"')
MAX_DOCUMENT_LINKS = 50  # links read from one attached document
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024  # larger PDFs are not read for links
DOCUMENT_ONLY_LINK_HOSTS = 3  # a document "made to send you somewhere" links to at most this many sites
DOCUMENT_ONLY_LINK_WORDS = 50  # words of message text below which the document is the message


@dataclass(frozen=True)
class HostGroup:
    """One group of rules/links.toml: hosts (or top-level domains) and the rule they raise."""

    key: str
    rule: str
    summary: str
    hosts: frozenset[str]  # plain hosts, matched with their subdomains
    prefixes: tuple[tuple[str, str], ...]  # (host, path prefix)
    tlds: frozenset[str]
    patterns: tuple[re.Pattern[str], ...] = ()  # entries with a "*" label
    images: bool = False  # matched against picture addresses (<img src>) instead of links
    unless_links_to: frozenset[str] = frozenset()  # silent when a link goes to one of these

    def ending(self, host: str) -> str:
        """The listed ending of ``host`` ("top", "sa.com"), or its last label."""
        labels = host.split(".")
        for i in range(1, len(labels)):
            if ".".join(labels[i:]) in self.tlds:
                return ".".join(labels[i:])
        return labels[-1]

    def matches(self, host: str, path: str) -> bool:
        if self.tlds:
            return self.ending(host) in self.tlds
        candidate = host
        while candidate:  # host, then each parent domain (_suffixes, without a generator)
            if candidate in self.hosts:
                return True
            candidate = candidate.partition(".")[2]
        for prefix_host, prefix in self.prefixes:
            if (host == prefix_host or host.endswith("." + prefix_host)) and path.lower().startswith(prefix):
                return True
        return any(p.search(host) for p in self.patterns)


def _wildcard(entry: str) -> re.Pattern[str]:
    """"s3.*.amazonaws.com": the host or any subdomain of it, "*" standing for letters,
    digits and hyphens within one label."""
    return re.compile(r"(?:^|\.)" + r"[a-z0-9-]+".join(re.escape(p) for p in entry.split("*")) + "$")


def _suffixes(host: str) -> Iterator[str]:
    """host, then each parent domain: a.b.c.com, b.c.com, c.com, com."""
    while host:
        yield host
        _, _, host = host.partition(".")


def load_host_groups(path: Path) -> tuple[HostGroup, ...]:
    """Read rules/links.toml (or an operator's copy); every problem is a ConfigError
    naming the file and the group."""
    data = read_data_toml(path, "link host lists")
    groups = []
    for key, table in data.items():
        where = f"{path}: [{key}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table with rule, summary and hosts (or tlds)")
        unknown = set(table) - {"rule", "summary", "hosts", "tlds", "applies_to", "unless_links_to"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected rule, summary, hosts, tlds, "
                "applies_to or unless_links_to"
            )
        unless = table.get("unless_links_to", [])
        if not isinstance(unless, list) or not all(isinstance(v, str) and v.strip() for v in unless):
            raise ConfigError(f"{where}: unless_links_to must be a list of hosts, got {unless!r}")
        applies_to = table.get("applies_to", "links")
        if applies_to not in ("links", "images"):
            raise ConfigError(f"{where}: applies_to must be \"links\" or \"images\", got {applies_to!r}")
        rule = table.get("rule")
        if not isinstance(rule, str) or not _RULE_ID.match(rule):
            raise ConfigError(f"{where}: rule must be an id such as \"LINKS_SHORTENER\" (LINKS_ and capitals), got {rule!r}")
        summary = table.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise ConfigError(f"{where}: summary must be a sentence for staff (may use {{host}} and {{tld}})")
        try:
            summary.format(host="example.com", tld="com")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{where}: summary may only use {{host}} and {{tld}} ({exc})") from None
        if ("hosts" in table) == ("tlds" in table):
            raise ConfigError(f"{where}: give either hosts = [...] or tlds = [...]")
        values = table.get("hosts", table.get("tlds"))
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(f"{where}: expected a list of non-empty strings, got {values!r}")
        hosts: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        prefixes: list[tuple[str, str]] = []
        tlds: set[str] = set()
        for value in values:
            entry = value.strip().lower().strip(".")
            if "://" in entry or "@" in entry or " " in entry:
                raise ConfigError(f"{where}: {value!r} is not a host; write it as example.com or example.com/path")
            if "tlds" in table:
                tlds.add(entry.lstrip("."))
            elif "*" in entry:
                if "/" in entry:
                    raise ConfigError(f"{where}: {value!r}: a \"*\" entry cannot have a path")
                patterns.append(_wildcard(entry))
            elif "/" in entry:
                host, _, rest = entry.partition("/")
                prefixes.append((host, "/" + rest))
            else:
                hosts.add(entry)
        groups.append(
            HostGroup(
                key, rule, summary.strip(), frozenset(hosts), tuple(prefixes), frozenset(tlds), tuple(patterns),
                applies_to == "images", frozenset(v.strip().lower().strip(".") for v in unless),
            )
        )
    return tuple(groups)


_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))  # what urlsplit strips from the start
_SCHEME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."


def _split(url: str) -> tuple[str, str, str]:
    """(path, query, fragment) of a URL, "" parts when it cannot be split."""
    url = url.strip()
    if url.isascii() and "[" not in url and "]" not in url:
        return _split_plain(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "", "", ""
    return parts.path, parts.query, parts.fragment


def _split_plain(url: str) -> tuple[str, str, str]:
    """What urlsplit gives (path, query, fragment) for an ASCII address without brackets,
    which it never refuses, in a few string operations: urlsplit's own steps (drop the
    leading controls, tabs and line breaks, a scheme, the //netloc) without its argument
    coercion, cache and result tuple (checked against urlsplit on fuzzed addresses)."""
    url = url.lstrip(_C0_OR_SPACE)
    if "\t" in url or "\r" in url or "\n" in url:
        url = url.replace("\t", "").replace("\r", "").replace("\n", "")
    colon = url.find(":")
    if colon > 0 and url[0].isalpha() and not url[:colon].strip(_SCHEME_CHARS):
        url = url[colon + 1:]
    if url[:2] == "//":
        end = len(url)
        for delimiter in "/?#":
            found = url.find(delimiter, 2)
            if 0 <= found < end:
                end = found
        url = url[end:]
    fragment = query = ""
    if "#" in url:
        url, fragment = url.split("#", 1)
    if "?" in url:
        url, query = url.split("?", 1)
    return url, query, fragment


def _split_once(memo: dict[str, tuple[str, str, str]], url: str) -> tuple[str, str, str]:
    """``_split(url)``, each address split once per message (the host lists, the picture
    lists and the recipient check all read the same links)."""
    parts = memo.get(url)
    if parts is None:
        parts = memo[url] = _split(url)
    return parts


def _decoded_forms(text: str, plain: bool = True, holding: bytes = b"") -> Iterator[tuple[str, bool]]:
    """(form, disguised) pairs: the text percent-decoded (twice: kits double-encode), then
    every long base64 run in it decoded, the ways a kit writes the recipient's address
    into a link. ``plain=False``: the disguised (base64) forms only; ``holding``: only
    decoded runs that hold these bytes (b"@" when looking for addresses)."""
    once = unquote(text)
    if plain:
        yield once.lower(), False
        twice = unquote(once)
        if twice != once:
            yield twice.lower(), False
    for run in islice(_B64_RUN.finditer(once), MAX_B64_RUNS):
        run = run.group(0)
        compact = run.replace("-", "+").replace("_", "/").rstrip("=")
        try:  # base64.b64decode(..., validate=True) without its Python wrapper
            decoded = binascii.a2b_base64(compact + "=" * (-len(compact) % 4), strict_mode=True)
        except (binascii.Error, ValueError):
            continue
        if holding and holding not in decoded:
            continue
        yield decoded.decode("latin-1").lower(), True


def _has_words(text: str, limit: int) -> bool:
    """More than ``limit`` words in ``text`` (stops counting there: bodies can be huge)."""
    return any(True for _ in islice(_WORD.finditer(text), limit, limit + 1))


def _prose_words(text: str) -> int:
    """Words of prose in hidden text: tokens made only of letters, once CSS comments and
    CSS or script blocks are dropped with the selector or function head before each block
    (nested @media blocks too). One linear pass over the braces, no backtracking."""
    text = _CSS_COMMENT.sub(" ", text[:MAX_HIDDEN_CHARS])
    pieces = _BRACES.split(text)
    kept: list[str] = []
    depth = 0
    for index, piece in enumerate(pieces):
        if piece == "{":
            depth += 1
        elif piece == "}":
            depth = max(depth - 1, 0)
        elif depth == 0 and not (index + 1 < len(pieces) and pieces[index + 1] == "{"):
            kept.append(piece)
    return sum(1 for token in " ".join(kept).split() if _PLAIN_TOKEN.match(token))


def redirect_target(url: str) -> str:
    """Where a redirect link sends the click when the address says so in its query
    (google.com/url?q=https://..., ...?url=https%3A%2F%2F...): the host list checks the
    target too, since a shortener or a throw-away domain behind a respectable redirector is
    still where the reader lands. "" when no target is written in the link."""
    if "?" not in url or ("http" not in url[url.find("?"):].lower() and "www." not in url):
        return ""
    for value in query_values(url_query(url), 20):
        value = value.strip()
        if _EMBEDDED_TARGET.match(value):
            return value
    return ""


def _pdf_unescape(literal: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code in _PDF_ESCAPES:
            return _PDF_ESCAPES[code]
        if code[:1].isdigit():
            return bytes([int(code, 8) & 0xFF])
        return b""  # an escaped line break continues the string
    return _PDF_ESCAPE.sub(one, literal)


def _encrypted_pdf_uris(data: bytes) -> list[str]:
    """Link targets of a PDF encrypted without a user password: it opens in any viewer
    with no question asked, but its strings (the links too) are encrypted, so no byte
    scan reads them. pypdf decrypts with the empty password; anything else gives []."""
    from mailguard.analyzers.pdf import bounded_pdf, pdf_errors

    out: list[str] = []
    try:
        with bounded_pdf(data) as reader:
            if reader.is_encrypted and not reader.decrypt(""):
                return []
            for page in reader.pages[:5]:
                for annotation in page.get("/Annots") or []:
                    action = annotation.get_object().get("/A")
                    uri = action.get_object().get("/URI") if action is not None else None
                    if uri:
                        out.append(str(uri))
                        if len(out) >= MAX_DOCUMENT_LINKS:
                            return out
    except pdf_errors():
        return out
    return out


def pdf_uris(data: bytes) -> list[str]:
    """The web addresses a PDF's links (URI actions) open: read from its bytes and its
    decompressed object streams, or through pypdf when the file is encrypted."""
    if b"%PDF-" not in data[:1024] or len(data) > MAX_DOCUMENT_BYTES:
        return []
    if b"/Encrypt" in data:
        return _encrypted_pdf_uris(data)
    out: list[str] = []
    for view in (data, pdf_object_streams(data)):
        if b"/URI" not in view:
            continue
        for match in islice(_PDF_URI.finditer(view), MAX_DOCUMENT_LINKS):
            literal, hexed = match.groups()
            if literal is not None:
                raw = _pdf_unescape(literal)
            else:
                try:
                    raw = binascii.unhexlify(re.sub(rb"\s", b"", hexed))
                except (binascii.Error, ValueError):
                    continue
            out.append(raw.decode("latin-1").strip())
    return out[:MAX_DOCUMENT_LINKS]


def document_links(message: ParsedMessage) -> list[tuple[str, Link]]:
    """(attachment shown, link) for every web link inside the PDFs and Office documents
    attached to the message (and to its attached messages): a lure is often a one-page PDF whose button is the
    only way on, so the message itself carries no link for a filter to read. Computed once
    per message (other analyzers may read them too)."""
    def compute() -> list[tuple[str, Link]]:
        out: list[tuple[str, Link]] = []
        for attachment in message.attachments:
            if attachment.encrypted:
                continue
            if attachment.data[:1024].find(b"%PDF-") >= 0:
                urls = pdf_uris(attachment.data)
                shown = attachment.display_name
            elif attachment.archive_depth and attachment.filename.endswith(".rels") and b"External" in attachment.data:
                # an Office document's (docx, xlsx, pptx) hyperlinks: its unpacked relationship files
                urls = [m.decode("utf-8", "replace") for m in
                        islice(_OOXML_EXTERNAL.findall(attachment.data), MAX_DOCUMENT_LINKS)]
                shown = " > ".join(attachment.location[:-1])
            else:
                continue
            seen: set[str] = set()
            for url in urls:
                if url in seen or not url.lower().startswith(("http://", "https://", "www.")):
                    continue
                seen.add(url)
                host = url_host(url)
                if host:
                    out.append((shown, Link(url, host, "", "document")))
        return out
    return message.derived("links.document_links", compute)


def _with_targets(links: list[Link]) -> Iterator[tuple[str, str]]:
    """(host, address) of each link, followed by its redirect target's when it has one."""
    for link in links:
        yield link.host, link.url
        target = redirect_target(link.url)
        if target:
            host = url_host(target)
            if host:
                yield host, target


class LinksAnalyzer(Analyzer):
    name = "links"
    config_schema = {
        "hosts_file": Option(
            "", "path",
            "Link host lists (TOML): shorteners, free web hosting, form builders, IPFS gateways, "
            "throw-away top-level domains; each group names its rule. Empty for the built-in rules/links.toml.",
        ),
        "allow_hosts": Option(
            [], "list[str]",
            "Hosts never counted against a link (with their subdomains): services the practice "
            "really uses, e.g. its own form provider.",
        ),
        "hidden_words": Option(
            40, "int", "Words of hidden (invisible) HTML text from which it counts as stuffing.", minimum=1
        ),
        "image_only_words": Option(
            12, "int", "Fewest words of visible text in an HTML message for it not to count as picture-only.",
            minimum=0,
        ),
        "max_links": Option(500, "int", "Most links looked at per message.", minimum=1),
    }

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        value = str(settings["hosts_file"])
        if value:
            path = context.config.resolve_path(value)
            if not path.is_file():
                raise ConfigError(
                    f"[links] hosts_file: {path} does not exist or is not a file; fix the path or leave it "
                    "empty for the built-in list"
                )
        else:
            path = rules_file("links.toml")
        self.groups = load_host_groups(path)
        self.allow = frozenset(h.strip().lower().strip(".") for h in settings["allow_hosts"] if h.strip("."))
        self.hidden_words = int(settings["hidden_words"])
        self.image_only_words = int(settings["image_only_words"])
        self.max_links = int(settings["max_links"])

    def _score(self, rule: str) -> float:
        return SCORES.get(rule, DEFAULT_HOST_SCORE)

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        links = self._links(message)
        images = self._images(message)
        splits: dict[str, tuple[str, str, str]] = {}
        documents = document_links(message)
        # A shortener or a free-hosting page behind a PDF's button is the same tell as in the body.
        reachable = links + [link for _, link in documents[: self.max_links]] if documents else links
        findings: list[Finding] = []
        findings += self._host_groups(reachable, splits)
        findings += self._image_host_groups(links, images, splits)
        findings += self._server_hostnames(reachable)
        findings += self._document_only_link(message, documents)
        findings += self._image_ip(links, images)
        findings += self._image_map(message, links)
        findings += self._recipient_in_url(message, links, splits)
        findings += self._script_urls(message)
        findings += self._image_only(message)
        findings += self._hidden_text(message)
        return findings

    def _links(self, message: ParsedMessage) -> list[Link]:
        out: list[Link] = []
        for part in iter_all_messages(message):
            for link in part.links:
                out.append(link)
                if len(out) >= self.max_links:
                    return out
        return out

    def _images(self, message: ParsedMessage) -> list[tuple[str, str]]:
        """(address, host) of the pictures of every part, each address once, in the order
        they first appear: a newsletter loads dozens of pictures from a few addresses, and
        the rules reading these ask only whether (and where first) an address matches."""
        hosts: dict[str, str] = {}
        for part in iter_all_messages(message):
            for src in part.image_urls[: self.max_links]:
                if src not in hosts:
                    hosts[src] = url_host(src)
        return list(hosts.items())

    def _allowed(self, host: str) -> bool:
        allow = self.allow
        if not allow:  # the default: no operator allow list
            return False
        while host:  # host, then each parent domain (_suffixes, without a generator)
            if host in allow:
                return True
            host = host.partition(".")[2]
        return False

    # ------------------------------------------------------------------ host lists

    def _host_groups(self, links: list[Link], splits: dict[str, tuple[str, str, str]]) -> Iterator[Finding]:
        hits: dict[str, list[str]] = {}
        seen: set[tuple[str, str]] = set()
        seen_urls: set[tuple[str, str]] = set()  # the same address gives the same key
        for host, url in _with_targets(links):
            if (host, url) in seen_urls:
                continue
            seen_urls.add((host, url))
            path = _split_once(splits, url)[0]
            key = (host, path[:64])
            if key in seen or self._allowed(host):
                continue
            seen.add(key)
            for group in self.groups:
                if not group.images and group.matches(host, path):
                    found = hits.setdefault(group.key, [])
                    if host not in found:
                        found.append(host)
        for group in self.groups:
            hosts = hits.get(group.key)
            if not hosts:
                continue
            tld = group.ending(hosts[0])
            summary = group.summary.format(host=hosts[0], tld=tld)
            if len(hosts) > 1:
                summary += f" (and {len(hosts) - 1} more such links)"
            yield self.finding(group.rule, self._score(group.rule), summary, {"hosts": hosts[:10]})

    def _image_host_groups(
        self, links: list[Link], images: list[tuple[str, str]], splits: dict[str, tuple[str, str, str]]
    ) -> Iterator[Finding]:
        """Groups with applies_to = "images": where the pictures are loaded from (anonymous
        image-sharing sites that businesses' mail never uses)."""
        groups = [g for g in self.groups if g.images]
        if not groups:
            return
        link_hosts = {host for name in {link.host for link in links} for host in _suffixes(name)}
        groups = [g for g in groups if not g.unless_links_to & link_hosts]
        hits: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()  # the same picture host and path matches the same groups
        for src, host in images:
            if not host or self._allowed(host):
                continue
            path = _split_once(splits, src)[0]
            if (host, path) in seen:
                continue
            seen.add((host, path))
            for group in groups:
                if group.key not in hits and group.matches(host, path):
                    hits[group.key] = host
        done: set[str] = set()  # two groups under one rule count once
        for group in groups:
            host = hits.get(group.key)
            if host and group.rule not in done:
                done.add(group.rule)
                summary = group.summary.format(host=host, tld=group.ending(host))
                yield self.finding(group.rule, self._score(group.rule), summary, {"host": host})

    # ------------------------------------------------------------------ server names

    def _server_hostnames(self, links: list[Link]) -> Iterator[Finding]:
        """Bare-IP hosts are the lookalike analyzer's; this is the IP written inside a name."""
        seen: set[str] = set()
        for link in links:
            if link.host in seen:
                continue
            seen.add(link.host)
            address = embedded_ip(link.host)
            if address and not self._allowed(link.host):
                host = link.host
                yield self.finding(
                    "LINKS_SERVER_HOSTNAME", self._score("LINKS_SERVER_HOSTNAME"),
                    f"A link goes to {host}, the automatic name of a rented server (it contains the internet "
                    f"address {address}), not a company's web site",
                    {"host": host, "address": address},
                )
                return

    # ------------------------------------------------------------------ pictures from bare addresses

    def _image_ip(self, links: list[Link], images: list[tuple[str, str]]) -> Iterator[Finding]:
        """Pictures (tracking pixels, banners) loaded from a bare internet address
        (``<img src="http://104.219.248.205/track/...">``): the sender's server has no
        name, the mark of a bulk-mail script on a rented machine. Real senders, ESPs
        included, serve pictures from a named host or CDN. When a link itself goes to a
        bare address the lookalike analyzer already reports that server; not counted twice."""
        if any(is_ip_like(host) for host in {link.host for link in links}):
            return
        for _, host in images:
            if host and is_ip_like(host) and not self._allowed(host):
                yield self.finding(
                    "LINKS_IMAGE_IP", self._score("LINKS_IMAGE_IP"),
                    f"The message loads its pictures from a bare internet address ({host}) instead of "
                    "a company's web site, as bulk-mail scripts on rented servers do",
                    {"host": host},
                )
                return

    def _image_map(self, message: ParsedMessage, links: list[Link]) -> Iterator[Finding]:
        """A picture wrapped in an ordinary link to the real company (signin.ebay.com) but
        cut into an image map whose click area goes to another site: what the reader
        hovers over and what the click opens differ. Image maps in real newsletters point
        where their other links point. Only with at least one ordinary link to compare."""
        shown = [link.host for link in links if link.source == "html"]
        if not shown:
            return
        for part in iter_all_messages(message):
            for html in part.html_parts:
                for found in islice(_AREA_HREF.finditer(html), self.max_links):
                    host = url_host(found.group(1))
                    if not host or not _HOST_NAME.match(host) or self._allowed(host):
                        continue
                    if any(same_site(host, other) for other in shown):
                        continue
                    yield self.finding(
                        "LINKS_IMAGE_MAP_ELSEWHERE", self._score("LINKS_IMAGE_MAP_ELSEWHERE"),
                        f"A picture in the message is a hidden link to {host}, while its visible links "
                        f"point to {shown[0]}: clicking takes you somewhere other than it shows",
                        {"host": host, "shown": shown[0]},
                    )
                    return

    # ------------------------------------------------------------------ personalised links

    def _recipient_in_url(
        self, message: ParsedMessage, links: list[Link], splits: dict[str, tuple[str, str, str]]
    ) -> Iterator[Finding]:
        own = {a.address.lower() for a in message.from_}
        recipients = sorted(a for a in message_recipients(message) if a not in own and len(a) >= 6)[:MAX_RECIPIENTS]
        if not recipients:
            return
        holding = b"@" if all("@" in a for a in recipients) else b""
        checked: set[tuple[str, str]] = set()  # a text already read found nothing
        for link in links:
            path, query, fragment = _split_once(splits, link.url[:MAX_URL_CHARS])
            for where, text in (("fragment", fragment), ("address", path + "?" + query)):
                if len(text) < 6 or (where, text) in checked:
                    continue
                checked.add((where, text))
                # In the fragment (never sent to the web server, read by the page's
                # script) or base64-encoded: a kit prefilling a fake sign-in page. A
                # plain ?email= in the query is how real newsletters build unsubscribe
                # links, so that alone does not count (its plain forms are not made).
                for form, disguised in _decoded_forms(text, where == "fragment", holding):
                    address = next((a for a in recipients if a in form), None)
                    if address is None:
                        continue
                    yield self.finding(
                        "LINKS_RECIPIENT_IN_URL", self._score("LINKS_RECIPIENT_IN_URL"),
                        f"A link carries your own email address ({address}){' in disguised form' if disguised else ''}, "
                        "so the page it opens can pretend to know you; fake sign-in pages do this",
                        {"host": link.host, "recipient": address, "where": where, "encoded": disguised},
                    )
                    return

    # ------------------------------------------------------------------ script links

    def _script_urls(self, message: ParsedMessage) -> Iterator[Finding]:
        for part in iter_all_messages(message):
            for html in part.html_parts:
                scheme = script_href(html)
                if scheme:
                    yield self.finding(
                        "LINKS_SCRIPT_URL", self._score("LINKS_SCRIPT_URL"),
                        f"A link in the message is a \"{scheme}:\" link: it runs code or opens a page "
                        "built into the message instead of going to a web site",
                        {"scheme": scheme},
                    )
                    return

    # ------------------------------------------------------------------ picture-only mail

    def _image_only(self, message: ParsedMessage) -> Iterator[Finding]:
        if not message.html_parts:
            return
        html_links = [l for l in message.links if l.source == "html"]
        # Up to ten links: picture promos cut the picture into clickable slices. Real
        # all-picture newsletters still carry a written footer (address, why you get it),
        # which the word count sees (measured: 3-10 links adds 1.9% of phishing_pot, no ham).
        if not 1 <= len({l.url for l in html_links}) <= MAX_IMAGE_ONLY_LINKS:
            return
        if not any(_IMG.search(h) for h in message.html_parts):
            return
        limit = self.image_only_words
        if _has_words(message.text, limit) or _has_words(message.html_text, limit):
            return
        host = html_links[0].host
        yield self.finding(
            "LINKS_IMAGE_ONLY", self._score("LINKS_IMAGE_ONLY"),
            f"The message is a picture with a link (to {host}) and almost no text, a way to slip "
            "past filters that read the words",
            {"host": host},
        )

    # ------------------------------------------------------------------ documents that are only a link

    def _document_only_link(self, message: ParsedMessage, documents: list[tuple[str, Link]]) -> Iterator[Finding]:
        """The message says next to nothing and its attached PDF (or Office document) links to one to three
        other sites: the document is there only to carry a button ("View invoice",
        "Claim your balance") to a page the attacker controls, where a filter reading the
        message finds no link at all. A real invoice or report PDF comes with a covering
        note, or links to the sender's own site (not counted); a paper or a manual links
        to many sites."""
        if not documents:
            return
        sender = message.from_address
        own = sender.domain if sender is not None else ""
        by_document: dict[str, list[str]] = {}
        for shown, link in documents:
            if self._allowed(link.host) or (own and same_site(link.host, own)):
                continue
            hosts = by_document.setdefault(shown, [])
            if link.host not in hosts:
                hosts.append(link.host)
        candidates = [(shown, hosts) for shown, hosts in by_document.items() if 1 <= len(hosts) <= DOCUMENT_ONLY_LINK_HOSTS]
        if not candidates:
            return
        limit = DOCUMENT_ONLY_LINK_WORDS
        if _has_words(message.text, limit) or _has_words(message.html_text, limit):
            return
        shown, hosts = candidates[0]
        yield self.finding(
            "LINKS_DOCUMENT_ONLY_LINK", self._score("LINKS_DOCUMENT_ONLY_LINK"),
            f"The message says almost nothing and its attached document ({shown}) links to {hosts[0]}, a site that "
            "is not the sender's: the document is there to send you to a web page",
            {"attachment": shown, "hosts": hosts},
        )

    # ------------------------------------------------------------------ hidden words

    def _hidden_text(self, message: ParsedMessage) -> Iterator[Finding]:
        hidden = message.html_hidden_text
        if not hidden:
            return
        words = _prose_words(hidden)
        if words < self.hidden_words:
            return
        yield self.finding(
            "LINKS_HIDDEN_TEXT", self._score("LINKS_HIDDEN_TEXT"),
            f"The message hides {words} words of invisible text, a way to fool mail filters",
            {"hidden_words": words},
        )


def script_href(html: str) -> str:
    """The scheme ("javascript", "data", "vbscript") of the first link ``_SCRIPT_HREF``
    finds in ``html``, lower-cased, or "". The regex itself tries up to 500 characters after
    every "<a": 1 MB of "<a" repeated cost 7-10 s a scan. Here each href with such a scheme
    is found once, and the "<a" it belongs to looked for only in the 500 characters before
    it (after the last ">"): the same leftmost match, in time linear in the HTML."""
    best: tuple[int, int, str] | None = None  # (start of its "<a", start of its href, scheme)
    for value in _SCRIPT_HREF_VALUE.finditer(html):
        at = value.start()
        if best is not None and at - 2 - SCRIPT_HREF_REACH > best[0]:
            break  # every later href's "<a" would start after the best one's
        earliest = max(html.rfind(">", 0, at) + 1, at - 2 - SCRIPT_HREF_REACH, 0)
        anchor = _ANCHOR_START.search(html, earliest, at)  # (\bhref: no word character before it)
        if anchor is not None and (best is None or anchor.start() < best[0]):
            best = (anchor.start(), at, value.group(1).lower())
    if best is not None:
        return best[2]
    # "java&#x09;script:", "jav&#97;script:", "java\tscript:": a browser decodes the entities and
    # drops tabs and line breaks in the scheme, so the link runs all the same.
    lower = html.lower() if "script" in html or "data" in html or "SCRIPT" in html or "DATA" in html else ""
    for found in _NOISY_HREF.finditer(lower) if ("&#" in lower or "&tab;" in lower or "&newline;" in lower
                                                 or "\t" in lower or "\n" in lower) else ():
        scheme = _SCHEME_NOISE.sub("", unescape(found.group(1))).lower()
        if scheme in ("javascript", "vbscript") or scheme == "data" and not \
                lower[found.end():found.end() + 40].lstrip().startswith("application/"):
            return scheme
    return ""


# An href whose scheme is written with entities or white space inside it (bounded: at most
# 60 characters of scheme, each run tried once per "href").
_NOISY_HREF = re.compile(r"""href\s*=\s*["']?\s*([jdv](?=[a-z]{0,12}(?:&|[\t\n\r]))[a-z&#;0-9\t\n\r]{3,60}?):""")
_SCHEME_NOISE = re.compile(r"[\t\n\r\x00-\x20]")
