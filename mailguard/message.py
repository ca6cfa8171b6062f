"""Parse raw message bytes once into a ``ParsedMessage`` that every analyzer reads.

Mail in the wild is broken in every way: bare LF, 8-bit headers, unknown charsets, bad
base64, endless nesting, zip bombs. Parsing never raises: whatever cannot be understood is
kept as far as it goes, and every limit that is hit becomes a ``Finding`` (analyzer
``message``) so the policy can weigh it, instead of a crash or a memory blow-up.
"""
from __future__ import annotations

import email
import email.errors
import email.feedparser
import email.header
import email.parser
import email.utils
import binascii
import io
import quopri
import re
import zlib
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import Message
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from email_validator import EmailNotValidError, validate_email

from mailguard.headers import split_head_body
from mailguard.options import Option
from mailguard.htmltext import html_to_text
from mailguard.model import Action, AuthResults, Envelope, Finding

if TYPE_CHECKING:
    import zipfile

CONFIG_SCHEMA: Mapping[str, Option] = {
    "max_depth": Option(
        20, "int",
        "Deepest nesting unpacked: of MIME parts within one message, and of attached messages (message/rfc822) "
        "within each other. A message nested deeper is held (MIME_TOO_DEEP forces quarantine).", minimum=1),
    "max_message_bytes": Option(
        64 * 1024 * 1024, "int",
        "Largest message examined whole. A larger one is examined up to this many bytes and held "
        "(MESSAGE_TOO_LARGE forces quarantine: what was not read could hide anything); `mailguard check` reads "
        "no more than this of a file. The relay and the milter refuse larger mail before (their own size limits).",
        minimum=65536,
    ),
    "max_parts": Option(2000, "int", "Most MIME parts looked at in one message.", minimum=1),
    "max_decoded_bytes": Option(
        64 * 1024 * 1024, "int", "Most decoded bytes (bodies and attachments) kept per message.", minimum=1024
    ),
    "max_header_chars": Option(
        65536, "int", "Longest header value kept for analysis; longer ones are cut.", minimum=256
    ),
    "max_text_chars": Option(
        1_000_000, "int", "Most characters of body text kept for analysis.", minimum=1024
    ),
    "max_archive_depth": Option(3, "int", "Deepest archive-in-archive nesting that is unpacked.", minimum=0),
    "max_archive_members": Option(500, "int", "Most archive members unpacked per message.", minimum=1),
    "max_archive_ratio": Option(
        200.0, "float", "Largest expansion ratio of one archive member before it counts as a bomb.", minimum=1
    ),
    "max_archive_bytes": Option(
        64 * 1024 * 1024, "int", "Most bytes unpacked from archives per message.", minimum=1024
    ),
}


@dataclass(frozen=True)
class ParseLimits:
    """Bounds that keep one hostile message from using unbounded time or memory."""

    max_depth: int = 20
    max_message_bytes: int = 64 * 1024 * 1024
    max_parts: int = 2000
    max_decoded_bytes: int = 64 * 1024 * 1024
    max_header_chars: int = 65536
    max_text_chars: int = 1_000_000
    max_archive_depth: int = 3
    max_archive_members: int = 500
    max_archive_ratio: float = 200.0
    max_archive_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "ParseLimits":
        return cls(**{k: settings[k] for k in cls.__dataclass_fields__ if k in settings})


@dataclass(frozen=True)
class Address:
    """One parsed address. ``domain`` is lower-case Unicode (IDN decoded); ``ascii_domain``
    its punycode form, so ``xn--` tricks are visible both ways."""

    display_name: str
    address: str
    local_part: str
    domain: str
    ascii_domain: str
    valid: bool

    def __str__(self) -> str:
        return f"{self.display_name} <{self.address}>" if self.display_name else self.address


@dataclass(frozen=True)
class Link:
    """A URL in a body with the text a person sees for it ("" for a bare URL in text)."""

    url: str
    host: str  # lower case as written (may be punycode or an IP literal)
    text: str
    source: str  # "html" (<a href>), "text" (written in the text), "area" (an image map's click area)

    @property
    def unicode_host(self) -> str:
        return idna_to_unicode(self.host)


@dataclass(frozen=True)
class Attachment:
    """A decoded attachment or archive member.

    ``location`` is the path a person would follow to it: the attachment name, then member
    names inside archives, then parts of attached messages (``("fwd.eml", "invoice.zip",
    "invoice.exe")``). ``archive_depth`` is how many archives it sits inside.
    """

    filename: str
    content_type: str
    data: bytes
    location: tuple[str, ...]
    archive_depth: int = 0
    encrypted: bool = False
    truncated: bool = False
    declared_size: int = 0
    # Other names the headers give the same part: Content-Type name= when it disagrees with
    # Content-Disposition filename= (mail programs differ in which one they show and save).
    other_names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def display_name(self) -> str:
        return " > ".join(self.location) or "(unnamed attachment)"


@dataclass(frozen=True)
class ParsedMessage:
    """Everything analyzers need, decoded once. See DESIGN.md."""

    raw: bytes
    envelope: Envelope | None
    headers: tuple[tuple[str, str], ...]
    message_id: str
    subject: str
    from_: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    sender: tuple[Address, ...]
    return_path: tuple[Address, ...]
    text_parts: tuple[str, ...]
    html_parts: tuple[str, ...]
    html_text_parts: tuple[str, ...]
    html_hidden_text: str
    links: tuple[Link, ...]
    attachments: tuple[Attachment, ...]
    attached_messages: tuple["ParsedMessage", ...]
    problems: tuple[Finding, ...] = ()
    defects: tuple[str, ...] = ()
    part_count: int = 0
    image_urls: tuple[str, ...] = ()  # <img src> of the HTML bodies (tracking pixels, remote pictures)
    auth: AuthResults | None = None  # set by the authentication stage before the analyzers run
    # Results one analyzer computed that another needs too (a document's decompressed VBA):
    # kept per message, so the work is done once and nothing outlives the scan.
    _derived: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def derived(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked for on this message, then reuse it."""
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = compute()
            return value

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), decoded, or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    @property
    def from_address(self) -> Address | None:
        """The sender a person sees: the first From address that has a domain. A From line
        like ``Amazon, <x@example.net>`` parses as two addresses, the first one junk."""
        for address in self.from_:
            if address.domain and address.valid:
                return address
        for address in self.from_:
            if address.domain:
                return address
        return self.from_[0] if self.from_ else None

    @property
    def text(self) -> str:
        """Plain-text bodies, joined."""
        return "\n".join(self.text_parts)

    @property
    def html_text(self) -> str:
        """The visible text of the HTML bodies, joined (hidden text left out)."""
        return "\n".join(self.html_text_parts)

    @property
    def body_text(self) -> str:
        """What a person reads: the HTML's visible text when there is HTML, otherwise the
        plain text (multipart/alternative carries both; counting both doubles weights)."""
        return self.html_text if self.html_text_parts and self.html_text.strip() else self.text

    @property
    def envelope_sender(self) -> Address | None:
        if self.envelope and self.envelope.mail_from:
            return parse_address("", self.envelope.mail_from)
        return None


# --------------------------------------------------------------------------- addresses


@lru_cache(maxsize=65536)
def idna_to_unicode(host: str) -> str:
    host = host.lower().rstrip(".")
    if "xn--" not in host:
        return host
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=65536)
def idna_to_ascii(host: str) -> str:
    host = host.lower().rstrip(".")
    if host.isascii():
        return host
    labels = []
    for label in host.split("."):
        if not label.isascii():
            try:
                label = "xn--" + label.encode("punycode").decode("ascii")
            except UnicodeError:
                pass
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=16384)
def parse_address(display_name: str, addr: str) -> Address:
    """Check syntax with email-validator (never DNS); fall back to a plain split."""
    addr = addr.strip().strip("<>").strip()
    try:
        info = validate_email(addr, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=True)
        local, domain = info.local_part, info.domain.lower()
        valid = True
    except (EmailNotValidError, UnicodeError, ValueError, IndexError):
        local, _, domain = addr.rpartition("@") if "@" in addr else (addr, "", "")
        domain = domain.strip().lower().rstrip(".")
        valid = False
    unicode_domain = idna_to_unicode(domain)
    return Address(display_name.strip(), addr, local, unicode_domain, idna_to_ascii(unicode_domain), valid)


# The usual forms of one address, as email.utils.getaddresses (a parser in Python, one
# character at a time) reads them: "a@b.example", "<a@b.example>", "Some Name <a@b.example>",
# '"Quoted, Name" <a@b.example>'. The character classes are its own: atoms end at its
# specials, white space, CR and LF; words of a name may hold dots; quotes hold no backslash
# or CR. Atoms and words here hold no other white space either (the parser drops an atom
# that str.strip() empties). Whatever else a header holds (comments, groups, lists,
# routes) is left to it.
_ADDR_ATOM = r'[^()<>@,:;."\[\]\s]+'
_ADDR_SPEC = rf"{_ADDR_ATOM}(?:\.{_ADDR_ATOM})*@{_ADDR_ATOM}(?:\.{_ADDR_ATOM})*"
_NAME_WORD = r'[^()<>@,:;"\[\]\s]+|"[^"\\\r]*"'
_SIMPLE_ADDRESS = re.compile(
    rf"[ \t\r\n]*(?:(?P<name>(?:{_NAME_WORD})(?:[ \t\r\n]+(?:{_NAME_WORD}))*)?[ \t\r\n]*<(?P<routed>{_ADDR_SPEC})>"
    rf"|(?P<bare>{_ADDR_SPEC}))[ \t\r\n]*"
)
_NAME_WORDS = re.compile(_NAME_WORD)


def getaddresses(values: list[str]) -> list[tuple[str, str]]:
    """``email.utils.getaddresses(values)``, the same pairs, with the usual forms of
    address read by ``_SIMPLE_ADDRESS``: the stdlib parser was most of the time spent on
    a message's address headers."""
    pairs = []
    for value in values:
        match = _SIMPLE_ADDRESS.fullmatch(value)
        if match is None:
            return email.utils.getaddresses(values)
        if match.group("bare") is not None:
            pairs.append(("", match.group("bare")))
        else:
            name = match.group("name")
            words = [w[1:-1] if w[0] == '"' else w for w in _NAME_WORDS.findall(name)] if name else []
            pairs.append((" ".join(words), match.group("routed")))
    return pairs


def _parse_address_header(values: list[str], limit: int = 65536) -> tuple[Address, ...]:
    """The addresses of address fields *as sent*: split into addresses first, and only then
    each display name decoded (RFC 2047 5: an encoded word is a word of a phrase, never
    syntax). Decoding the whole field first made the name
    ``=?utf-8?q?PayPal_=3Cservice=40paypal.com=3E?= <x@evil.example>`` an address at
    paypal.com, the sender, while every mail program shows that text as the name of
    x@evil.example."""
    out = []
    for name, addr in getaddresses(values):
        if "=?" in name or not name.isascii():
            name = decode_header_value(name, limit)
        if "=?" in addr:  # an encoded word inside the address (Python's own email package writes
            addr = decode_header_value(addr, limit)  # IDN domains so): mail programs decode it
        elif not addr.isascii():
            addr = _surrogates_to_text(addr)
        if addr or name:
            out.append(parse_address(name, addr))
        if len(out) >= 100:
            break
    return tuple(out)


# --------------------------------------------------------------------------- headers

_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def decode_header_value(value: Any, limit: int) -> str:
    """RFC 2047 decoding that survives unknown charsets and garbage."""
    if isinstance(value, email.header.Header):
        value = str(value)
    text = str(value)
    if len(text) > limit:
        text = text[:limit]
    if "=?" not in text and text.isascii():  # nearly every header: nothing to decode, no surrogates
        return " ".join(text.split()) if "\n" in text or "\r" in text else text
    if "=?" in text and _ENCODED_WORD.search(text):
        try:
            parts = email.header.decode_header(text)
            pieces = []
            for chunk, charset in parts:
                if isinstance(chunk, bytes):
                    pieces.append(_unencoded_text(chunk) if charset is None else _decode_bytes(chunk, charset))
                else:
                    pieces.append(chunk)
            text = "".join(pieces)
        except (ValueError, LookupError, AssertionError, email.errors.HeaderParseError):
            pass
    text = _surrogates_to_text(text)
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def _unencoded_text(chunk: bytes) -> str:
    """A part of a header outside its encoded words, as ``email.header.decode_header``
    returns it: the text given back as bytes with 'raw-unicode-escape', which writes 8-bit
    bytes kept as surrogates and characters past Latin-1 as ``\\uXXXX``. Decoded as UTF-8,
    "\u2705 =?utf-8?b?...?=" (a raw emoji before an encoded name) became the text
    "\\udce2\\udc9c\\udc85..." that analyzers then read as the sender's name."""
    try:
        return chunk.decode("raw-unicode-escape")
    except UnicodeDecodeError:  # a lone backslash-u in the header itself
        return _decode_bytes(chunk, None)


def _surrogates_to_text(text: str) -> str:
    """compat32 keeps undecodable 8-bit header bytes as surrogates; turn them back into
    UTF-8 (the usual case) or Latin-1."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return _decode_bytes(raw, None)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    if charset:
        try:
            return data.decode(charset, errors="replace")
        except LookupError:
            pass
    return data.decode("latin-1")


# --------------------------------------------------------------------------- URLs

# An address written out in text: (?i)\b(?:https?://|www\.) and what follows, spelt without
# re.I and with the word boundary checked after the first letter, so that the regex engine
# skips ahead to an h or a w instead of trying every position (a third faster on corpus
# text; the same matches: under re.I "s" also matches the long s, h, t, p, w nothing else).
_TEXT_URL = re.compile(
    r"""(?:[hH](?<!\w.)[tT][tT][pP][sS\u017f]?://|[wW](?<!\w.)[wW][wW]\.)[^\s<>"'`{}|\\^\[\]]{2,2048}"""
)
_TRAILING = ".,;:!?)]}'\""


def url_host(url: str) -> str:
    """The host of a link (lower case, no trailing dot), "" when it has none."""
    candidate = url.strip()
    if candidate.lower().startswith("www."):
        candidate = "http://" + candidate
    simple = _SIMPLE_URL.match(candidate)
    if simple is not None:  # "https://host.example/...": the host is what lies between
        return simple.group(1).lower().rstrip(".")
    if plain_url(candidate):
        return _netloc(candidate).rpartition("@")[2].partition(":")[0].lower().rstrip(".")
    try:
        host = urlsplit(candidate).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def url_query(url: str) -> str:
    """What ``urlsplit(url).query`` is, or "" for an address urlsplit refuses."""
    if plain_url(url):
        return _unsafe_removed(url.lstrip(_C0_OR_SPACE)).partition("#")[0].partition("?")[2]
    try:
        return urlsplit(url).query
    except ValueError:
        return ""


def query_values(query: str, limit: int) -> Iterator[str]:
    """The decoded values of the first ``limit`` fields of a query, as ``parse_qsl`` gives
    them (fields without "=" or with an empty value left out), without decoding the names."""
    for field in query.split("&"):
        _name, equals, value = field.partition("=")
        if not equals or not value:
            continue
        value = value.replace("+", " ")
        yield unquote_value(value) if "%" in value else value
        limit -= 1
        if not limit:
            return


# The escapes a redirect's target is mostly written with ("https%3A%2F%2Fsite%2F"): when
# they are all a value holds, str.replace decodes it as unquote would, several times faster.
_COMMON_ESCAPES = (("%3A", ":"), ("%3a", ":"), ("%2F", "/"), ("%2f", "/"), ("%3F", "?"), ("%3f", "?"),
                   ("%3D", "="), ("%3d", "="), ("%26", "&"))


def unquote_value(value: str) -> str:
    """``unquote(value)``, with the few escapes redirect targets use decoded by str.replace."""
    decoded = value
    for escape, char in _COMMON_ESCAPES:
        if escape in decoded:
            decoded = decoded.replace(escape, char)
    return decoded if "%" not in decoded else unquote(value)


# What urlsplit does, for the ASCII addresses without brackets that nearly all links are:
# urlsplit cannot refuse those, and its cache rarely helps (a message's tracking addresses
# are its own), while taking it apart costs several times more than these few steps.
_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))  # stripped from the start, as urlsplit does
_SCHEME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."
_SIMPLE_URL = re.compile(r"[hH][tT][tT][pP][sS]?://([A-Za-z0-9.-]*)(?=[/?#]|\Z)")  # ASCII only


def plain_url(url: str) -> bool:
    """ASCII without brackets: an address urlsplit cannot refuse, read by the quick paths."""
    return url.isascii() and "[" not in url and "]" not in url


def _unsafe_removed(url: str) -> str:
    if "\t" in url or "\r" in url or "\n" in url:
        return url.replace("\t", "").replace("\r", "").replace("\n", "")
    return url


def _netloc(url: str) -> str:
    """urlsplit(url).netloc of a ``_plain`` address."""
    url = _unsafe_removed(url.lstrip(_C0_OR_SPACE))
    colon = url.find(":")
    if colon > 0 and url[0].isalpha() and not url[:colon].strip(_SCHEME_CHARS):
        url = url[colon + 1:]
    if not url.startswith("//"):
        return ""
    end = len(url)
    for delimiter in "/?#":
        found = url.find(delimiter, 2)
        if 0 <= found < end:
            end = found
    return url[2:end]


def _text_links(text: str, limit: int) -> list[Link]:
    links = []
    for match in _TEXT_URL.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        host = url_host(url)
        if host:
            links.append(Link(url, host, "", "text"))
        if len(links) >= limit:
            break
    return links


# --------------------------------------------------------------------------- parser


class _Budget:
    """Shared counters for one parse, so limits hold across nesting."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.parts = 0
        self.decoded = 0
        self.text_chars = 0
        self.archive_members = 0
        self.archive_bytes = 0
        self.problems: dict[str, Finding] = {}

    def problem(self, rule: str, score: float, summary: str, min_action: Action | None = None, **details: Any) -> None:
        if rule not in self.problems:
            self.problems[rule] = Finding("message", rule, score, summary, details, min_action)

    def too_deep(self, summary: str = "") -> None:
        """Nesting past the limit holds the message (quarantine at least): what was not
        unpacked was not analysed, and wrapping a phish deep enough must never lower its
        verdict."""
        limit = self.limits.max_depth
        self.problem("MIME_TOO_DEEP", 3.0, summary or f"The message's parts or attached messages are nested more "
                     f"than {limit} deep; deeper parts were not examined, so it is held.",
                     min_action=Action.QUARANTINE, limit=limit)


@dataclass
class _Collected:
    text_parts: list[str] = field(default_factory=list)
    html_parts: list[str] = field(default_factory=list)
    html_text_parts: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    attached: list[ParsedMessage] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


MAX_LINKS = 2000


def parse(raw: bytes, envelope: Envelope | None = None, limits: ParseLimits | None = None) -> ParsedMessage:
    """Parse ``raw`` (CRLF or LF line endings) into a ParsedMessage. Never raises for bad
    input; problems become findings in ``ParsedMessage.problems``."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    limits = limits or ParseLimits()
    budget = _Budget(limits)
    if len(raw) > limits.max_message_bytes:  # a 3 GB file took 22 GB of memory and 70 s to parse
        raw = raw[: limits.max_message_bytes]
        budget.problem("MESSAGE_TOO_LARGE", 3.0, f"The message is larger than {limits.max_message_bytes // 1048576} MB; "
                       "only its beginning was examined, so it is held.", min_action=Action.QUARANTINE,
                       limit=limits.max_message_bytes)
    try:
        return _parse_message(bytes(raw), envelope, budget, depth=0, location=())
    except RecursionError:
        budget.too_deep("The message's structure is nested too deeply to unpack.")
    except Exception as exc:  # last resort: a verdict for every message, never a crash
        budget.problem(
            "MESSAGE_UNPARSEABLE", 3.0, "The message could not be parsed; it was judged on what could be read.",
            error=f"{type(exc).__name__}: {exc}"[:200],
        )
    return _minimal_message(bytes(raw), envelope, budget)


def _minimal_message(raw: bytes, envelope: Envelope | None, budget: _Budget) -> ParsedMessage:
    """What is left when the full parse failed: headers only, body as plain text."""
    try:
        msg = email.parser.BytesHeaderParser(_Message, policy=email_policy.compat32).parsebytes(raw[:1_000_000])
        headers = tuple((str(k), decode_header_value(v, budget.limits.max_header_chars)) for k, v in msg.items()[:2000])
    except Exception:
        headers = ()
    get = lambda name: [v for k, v in headers if k.lower() == name]  # noqa: E731
    body = raw.split(b"\n\n", 1)[-1][: budget.limits.max_text_chars]
    text = _decode_bytes(body, None)
    def addresses(name: str) -> tuple[Address, ...]:
        try:
            return _parse_address_header(get(name))
        except Exception:
            return ()
    return ParsedMessage(
        raw=raw, envelope=envelope, headers=headers,
        message_id=(get("message-id") or [""])[0].strip(), subject=(get("subject") or [""])[0],
        from_=addresses("from"), reply_to=addresses("reply-to"), sender=addresses("sender"),
        return_path=addresses("return-path"), text_parts=(text,), html_parts=(), html_text_parts=(),
        html_hidden_text="", links=tuple(_text_links(text, MAX_LINKS)), attachments=(), attached_messages=(),
        problems=tuple(budget.problems.values()), part_count=budget.parts,
    )


def _split_params(value: Any) -> list[str]:
    """``email.message._parseparam(value)``, the same list, in one pass.

    The stdlib splits a Content-Type or Content-Disposition value at each ";" outside
    quotes by slicing the rest of the value after every parameter and, for every ";",
    counting the quotes from the parameter's start again: quadratic. One read of a 250 KB
    value of "a=b; " took 0.3 s, of a 64 KB one (``a="`` and then ";" only) 2.3 s, here
    0.04 and 0.02 s; a scan reads them for the charset, file name and boundary of every
    part, so one such part held a scanner for seconds.
    Here each stretch is searched and counted once: the ";" that ends a parameter is the
    first one after which the parameter holds an even number of quotes (a backslash
    before a quote takes it out of the count), as there."""
    text = str(value)
    plist = []
    start = 0
    while True:
        end = text.find(";", start)
        if end > start:
            odd = (text.count('"', start, end) - text.count('\\"', start, end)) % 2
            while odd:
                following = text.find(";", end + 1)
                if following < 0:
                    end = -1
                    break
                # text[end] and text[following] are ";": no backslash-quote spans either
                odd = (odd + text.count('"', end, following) - text.count('\\"', end, following)) % 2
                end = following
        if end < 0:
            end = len(text)
        f = text[start:end]
        if "=" in f:
            i = f.index("=")
            f = f[:i].strip().lower() + "=" + f[i + 1:].strip()
        plist.append(f.strip())
        if end >= len(text):
            return plist
        start = end + 1


_MISSING = object()


class _Message(Message):
    """The stdlib's compat32 Message, with its parameters (charset, name, filename,
    boundary) split by ``_split_params`` instead of the quadratic ``_parseparam``, and
    split once per header value (a part's Content-Type is read for its charset and again
    for a file name): the only differences. The feedparser makes every part of a message
    with this factory. The cache is a slot, so the Message's own attributes (``vars``) are the
    stdlib's."""

    __slots__ = ("_split_params_cache",)

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        value = self.get(header, _MISSING)
        if value is _MISSING:
            return failobj
        try:
            cache = self._split_params_cache
        except AttributeError:
            cache = self._split_params_cache = {}
        known = cache.get(header.lower())
        if known is not None and known[0] is value:
            return list(known[1])
        params = []
        for p in _split_params(value):
            try:
                name, val = p.split("=", 1)
                name = name.strip()
                val = val.strip()
            except ValueError:  # a bare attribute
                name = p.strip()
                val = ""
            params.append((name, val))
        decoded = email.utils.decode_params(params)
        cache[header.lower()] = (value, decoded)
        return list(decoded)


# A header line as the stdlib feedparser tells one (its ``headerRE``), with its line end
# (the feedparser's lines end at CR LF, CR or LF): the header block is a run of them.
_HEADER_LINES = re.compile(r"(?:(?:From |[\041-\071\073-\176]*:|[\t ])[^\r\n]*(?:\r\n|\r|\n|\Z))*")
_LINE_END = re.compile(r"\r\n|\r|\n")


def _message_from_text(text: str) -> Message:
    """``email.message_from_bytes(raw, policy=compat32)`` on the bytes decoded as ASCII
    with surrogate escapes, as it decodes them, and the same Message.

    The feedparser reads a body line by line in Python, which for a message that is not
    multipart only collects the lines to join them again into its payload: most of
    parsing a large single-part message. So when the headers are followed by a blank line
    and cannot make it multipart or message/* (neither word is in them), only the headers
    and that line are fed, and the rest of the text, which the feedparser would have made
    the payload unchanged, is set as the payload. A "From " line after the first
    (which the feedparser pushes back into the body) also takes the ordinary way."""
    parser = email.feedparser.FeedParser(_Message, policy=email_policy.compat32)
    end = _HEADER_LINES.match(text).end()
    separator = _LINE_END.match(text, end)
    if separator is not None:
        head = text[:end].lower()
        if "multipart" not in head and "message/" not in head and "\nfrom " not in head and "\rfrom " not in head:
            parser.feed(text[:separator.end()])
            msg = parser.close()
            if msg.get_content_maintype() not in ("multipart", "message"):  # always so, given the words
                msg.set_payload(text[separator.end():])
                return msg
            parser = email.feedparser.FeedParser(_Message, policy=email_policy.compat32)
    parser.feed(text)  # in one piece, not the 8192-character chunks of Parser.parse: the same result
    return parser.close()


#: Parser finding: the header block is not what any mail program writes, and programs read it
#: differently (see ``_header_block``). Its DKIM passes do not count (mailguard.auth.stage).
HEADER_MALFORMED = "HEADER_MALFORMED"
HEADER_MALFORMED_SCORE = 1.0
#: Parser finding: a field a message has once (RFC 5322 3.6, RFC 2045) appears several times;
#: mail programs, DKIM (which signs the last) and the analyzers (which read the first) differ.
HEADER_DUPLICATE = "HEADER_DUPLICATE"
HEADER_DUPLICATE_SCORE = 1.0
SINGLE_FIELDS = ("from", "sender", "reply-to", "subject", "content-type", "mime-version",
                 "content-transfer-encoding")

# A header block in the form the feedparser reads as it stands: an optional mbox "From " line,
# then fields (a name of printable ASCII and a colon) each with continuation lines, every line
# ending in CRLF or LF. Anything else is read line by line by ``_header_block``.
_CLEAN_HEAD = re.compile(r"(?:From (?![\t ]*:)[^\r\n]*\r?\n)?(?:[\041-\071\073-\176]+:[^\r\n]*\r?\n(?:[\t ][^\r\n]*\r?\n)*)*")
_OBS_NAME = re.compile(r"([\041-\071\073-\176]+)[\t ]+:")  # "Subject :" (RFC 5322 4.5 obsolete syntax)
_FIELD_NAME = re.compile(r"[\041-\071\073-\176]+:")
_ANY_LINE_END = re.compile(r"\r\n|\r|\n")
#: Most lines of a malformed header block read by ``_header_block`` (real ones have a few
#: dozen; the parser keeps at most 2000 fields in any case).
MAX_HEADER_LINES = 20_000


def _header_block(head: str) -> tuple[str, list[str]]:
    """The header block ``split_head_body`` found, as lines the feedparser reads as fields,
    and what had to be changed for that.

    Without this the feedparser ended the headers at the first line it does not take for a
    field ("X-A 1", "Subject : x", a NUL or 8-bit byte in a name, a lone CR making an empty
    line) and read every field after it as body text, while mail programs, Postfix, dkimpy
    and our own header edits read on to the blank line: one line put in front hid the From a
    person sees from every analyzer. Here every line of the block is kept where mail programs
    find it: "Name :" is read as "Name:" (as the obsolete syntax allows), lone CRs end lines
    (some programs show what follows as a field; the block still ends at the blank line), and
    lines that are no field at all are left out."""
    out: list[str] = []
    problems: list[str] = []
    lines = _ANY_LINE_END.split(head, maxsplit=MAX_HEADER_LINES)
    if len(lines) > MAX_HEADER_LINES:  # one Python step per line: bounded, the rest unread
        lines.pop()
        problems.append(f"more than {MAX_HEADER_LINES} header lines; the rest were not read")
    for index, line in enumerate(lines):
        if not line:
            continue
        if line[0] in " \t":
            if out:
                out.append(line)
            else:
                problems.append("the first header line is a continuation line")
            continue
        obs = _OBS_NAME.match(line)
        if obs is not None:
            out.append(obs.group(1) + line[obs.end() - 1:])
            problems.append(f"white space before the colon of {obs.group(1)[:40]!r}")
        elif line.startswith("From "):
            if index == 0:
                out.append(line)  # the mbox separator line, as the parser keeps it
            else:
                problems.append("an mbox 'From ' line among the header fields")
        elif _FIELD_NAME.match(line):
            out.append(line)
        else:
            problems.append("a header line that is not a field (no name and colon, or other bytes in the name)")
    if "\r" in head.replace("\r\n", ""):
        problems.append("a carriage return without a line feed in the header block")
    return "".join(f"{line}\r\n" for line in out), list(dict.fromkeys(problems))


def _normalized_text(raw: bytes, budget: _Budget) -> str:
    """The message as the feedparser is to read it: the header block of ``split_head_body``
    (the split every stage uses), made readable by ``_header_block`` when it is malformed,
    then a blank line, then the body, unchanged. Well-formed mail is passed as it is."""
    text = raw.decode("ascii", "surrogateescape")
    head, sep, body = split_head_body(raw)
    problems: list[str] = []
    if not sep and body:
        problems.append("the header block does not end with a blank line")
    head_text = text[: len(head)]
    if _CLEAN_HEAD.fullmatch(head_text):
        if not problems:
            return text
    else:
        head_text, found = _header_block(head_text)
        problems += found
    budget.problem(
        HEADER_MALFORMED, HEADER_MALFORMED_SCORE,
        "The message's header block is malformed in a way mail programs read differently ("
        + "; ".join(problems[:3]) + "); it was read as mail programs show it.",
        problems=problems[:10],
    )
    return head_text + (sep.decode("ascii") or "\r\n") + text[len(head) + len(sep):]


def _message_from_bytes(raw: bytes, budget: _Budget) -> Message:
    try:
        return _message_from_text(_normalized_text(raw, budget))
    except RecursionError:
        budget.too_deep("The message's parts are nested too deeply to unpack; only its headers were read.")
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        budget.problem(
            "MESSAGE_UNPARSEABLE", 3.0, "The message could not be parsed; only its headers were read.", error=repr(exc)[:200]
        )
    return email.parser.BytesHeaderParser(_Message, policy=email_policy.compat32).parsebytes(raw)


def _parse_message(
    raw: bytes, envelope: Envelope | None, budget: _Budget, depth: int, location: tuple[str, ...]
) -> ParsedMessage:
    msg = _message_from_bytes(raw, budget)
    limits = budget.limits
    headers = []
    long_header = False
    # Address fields as sent (encoded words not yet decoded): see _parse_address_header.
    address_values: dict[str, list[str]] = {"from": [], "reply-to": [], "sender": [], "return-path": []}
    counts: dict[str, int] = {}
    for key, value in msg.raw_items() if hasattr(msg, "raw_items") else msg.items():
        text_value = decode_header_value(value, limits.max_header_chars)
        if len(str(value)) > limits.max_header_chars:
            long_header = True
        name = str(key).strip()
        headers.append((name, text_value))
        lname = name.lower()
        counts[lname] = counts.get(lname, 0) + 1
        if lname in address_values:
            sent = str(value)[: limits.max_header_chars]
            address_values[lname].append(" ".join(sent.split()) if "\n" in sent or "\r" in sent else sent)
        if len(headers) >= 2000:
            budget.problem("HEADERS_TOO_MANY", 1.0, "The message has an unusual number of headers.", limit=2000)
            break
    repeated = [name for name in SINGLE_FIELDS if counts.get(name, 0) > 1]
    if repeated:
        budget.problem(
            HEADER_DUPLICATE, HEADER_DUPLICATE_SCORE,
            f"The message has more than one {', '.join(repeated)} header; mail programs, signatures and "
            "filters each pick a different one, so what is shown may not be what was checked.",
            fields=repeated,
        )
    if long_header:
        budget.problem(
            "HEADER_TOO_LONG",
            1.0,
            "A header is unusually long; only its beginning was read.",
            limit=limits.max_header_chars,
        )

    # the values of the headers read below, in one pass over the headers
    wanted: dict[str, list[str]] = {"subject": [], "message-id": [], "from": [], "reply-to": [], "sender": [],
                                    "return-path": []}
    for key, value in headers:
        found = wanted.get(key.lower())
        if found is not None:
            found.append(value)
    values = wanted.__getitem__

    collected = _Collected()
    if hasattr(msg, "walk"):
        _walk(msg, budget, collected, depth, location, is_root=True)
    collected.defects.extend(type(d).__name__ for d in getattr(msg, "defects", []))

    body_for_links = "\n".join(collected.text_parts)
    if len(collected.links) < MAX_LINKS:
        collected.links.extend(_text_links(body_for_links, MAX_LINKS - len(collected.links)))

    subjects = values("subject")
    message_ids = values("message-id")
    return ParsedMessage(
        raw=raw,
        envelope=envelope,
        headers=tuple(headers),
        message_id=(message_ids[0].strip() if message_ids else ""),
        subject=subjects[0] if subjects else "",
        from_=_parse_address_header(address_values["from"], limits.max_header_chars),
        reply_to=_parse_address_header(address_values["reply-to"], limits.max_header_chars),
        sender=_parse_address_header(address_values["sender"], limits.max_header_chars),
        return_path=_parse_address_header(address_values["return-path"], limits.max_header_chars),
        text_parts=tuple(collected.text_parts),
        html_parts=tuple(collected.html_parts),
        html_text_parts=tuple(collected.html_text_parts),
        html_hidden_text="\n".join(collected.hidden),
        links=tuple(collected.links),
        attachments=tuple(collected.attachments),
        attached_messages=tuple(collected.attached),
        problems=tuple(budget.problems.values()) if not location else (),
        defects=tuple(dict.fromkeys(collected.defects)),
        part_count=budget.parts,
        image_urls=tuple(collected.images),
    )


def _walk(
    part: Message, budget: _Budget, out: _Collected, depth: int, location: tuple[str, ...], is_root: bool = False
) -> None:
    """Walk the MIME tree iteratively (an explicit stack, so depth is ours to bound)."""
    limits = budget.limits
    stack: list[tuple[Message, int]] = [(part, depth)]
    while stack:
        node, level = stack.pop()
        budget.parts += 1
        if budget.parts > limits.max_parts:
            budget.problem(
                "MIME_TOO_MANY_PARTS",
                3.0,
                f"The message has more than {limits.max_parts} parts; the rest were not examined.",
                limit=limits.max_parts,
            )
            return
        if level > limits.max_depth:
            budget.too_deep()
            continue
        out.defects.extend(type(d).__name__ for d in getattr(node, "defects", []))
        ctype = _content_type(node)
        if node.is_multipart():
            payload = node.get_payload()
            if isinstance(payload, list):
                children = [c for c in payload if isinstance(c, Message)]
                if ctype == "message/rfc822" or ctype.startswith("message/"):
                    encoded = _transfer_encoded_message(node, children)
                    if encoded is not None:
                        name = _filename(node, limits.max_header_chars) or "attached message"
                        _attached_raw(encoded, name, budget, out, level, location)
                        continue
                    for child in children[:1]:
                        _attached_message(child, node, budget, out, level, location)
                    continue
                for child in reversed(children):
                    stack.append((child, level + 1))
            continue
        _leaf(node, ctype, budget, out, level, location)


def _transfer_encoded_message(node: Message, children: list[Message]) -> bytes | None:
    """The bytes of an attached message sent base64 or quoted-printable encoded, which
    RFC 2046 forbids but mail programs (and Python's own add_attachment) produce. The stdlib
    parses such a part as a message made of encoded text; decode it so its attachments are
    seen. None when the part is not encoded."""
    cte = str(node.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte not in ("base64", "quoted-printable") or not children:
        return None
    try:
        encoded = children[0].as_bytes(policy=email_policy.compat32)
    except Exception:
        try:
            encoded = children[0].as_string(policy=email_policy.compat32).encode("utf-8", "surrogateescape")
        except Exception:
            return None
    if cte == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", encoded)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        return binascii.a2b_base64(cleaned) if cleaned else b""
    return quopri.decodestring(encoded)


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _filename(part: Message, limit: int) -> str:
    name: Any = None
    failed = False
    try:
        name = part.get_filename()
    except Exception:
        failed = True
    # get_filename returns None only when neither parameter is there (it falls back to the
    # Content-Type "name" itself), so "name" is looked for again only when it failed.
    if failed:
        try:
            name = part.get_param("name", header="content-type")
        except Exception:
            name = None
    if isinstance(name, tuple):  # RFC 2231 tuple that collapse_rfc2231_value did not handle
        name = email.utils.collapse_rfc2231_value(name)
    if not name:
        return ""
    return decode_header_value(str(name), limit).strip()


def _other_names(part: Message, name: str, limits: ParseLimits) -> tuple[str, ...]:
    """The part's names that differ from ``name``: an attacker can send ``filename="scan.pdf"``
    with ``name="scan.js"``, and the program that saves it may use either one."""
    names: list[str] = []
    for param, header in (("name", "content-type"), ("filename", "content-disposition")):
        try:
            value: Any = part.get_param(param, header=header)
        except Exception:
            continue
        if isinstance(value, tuple):  # RFC 2231 value: (charset, language, text)
            try:
                value = email.utils.collapse_rfc2231_value(value)
            except Exception:
                continue
        if not value:
            continue
        text = decode_header_value(str(value), limits.max_header_chars).strip()
        if text and text != name and text not in names:
            names.append(text)
    return tuple(names)


def _decoded_payload(part: Message, budget: _Budget) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    remaining = budget.limits.max_decoded_bytes - budget.decoded
    if len(data) > remaining:
        budget.problem(
            "MESSAGE_TOO_LARGE_DECODED",
            2.0,
            "The message's contents are too large to examine completely; the rest was not read, so it is held.",
            min_action=Action.QUARANTINE,
            limit=budget.limits.max_decoded_bytes,
        )
        data = data[: max(remaining, 0)]
    budget.decoded += len(data)
    return data


def _part_text(part: Message, data: bytes) -> str:
    charset = None
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _decode_bytes(data, charset)


def _leaf(part: Message, ctype: str, budget: _Budget, out: _Collected, level: int, location: tuple[str, ...]) -> None:
    limits = budget.limits
    filename = _filename(part, limits.max_header_chars)
    disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    is_attachment = bool(filename) or disposition == "attachment"
    if ctype.startswith("message/") and ctype != "message/delivery-status":
        data = _decoded_payload(part, budget)
        _attached_raw(data, filename or "attached message", budget, out, level, location)
        return
    data = _decoded_payload(part, budget)
    if not is_attachment and ctype in ("text/plain", "text/html", "text/enriched"):
        text = _part_text(part, data)
        room = limits.max_text_chars - budget.text_chars
        if room <= 0:
            budget.problem("TEXT_TOO_LONG", 0.5, "The message text is very long; only its beginning was read.")
            return
        if len(text) > room:
            budget.problem("TEXT_TOO_LONG", 0.5, "The message text is very long; only its beginning was read.")
            text = text[:room]
        budget.text_chars += len(text)
        if ctype == "text/html":
            rendered = html_to_text(text)
            out.html_parts.append(text)
            out.html_text_parts.append(rendered.visible)
            if rendered.hidden:
                out.hidden.append(rendered.hidden)
            out.images.extend(rendered.images[: max(MAX_LINKS - len(out.images), 0)])
            room_links = MAX_LINKS - len(out.links)
            for href, anchor in rendered.links[: max(room_links, 0)]:
                host = url_host(href)
                if host:
                    out.links.append(Link(href, host, anchor, "html"))
            # An image map's click areas: where a click on the picture really goes.
            for href, alt in rendered.areas[: max(MAX_LINKS - len(out.links), 0)]:
                host = url_host(href)
                if host:
                    out.links.append(Link(href, host, alt, "area"))
            # An HTML body with no link but an address written out in its text ("Click for
            # date http://..."): mail clients turn the address into a link, so it is the
            # message's destination, which a filter reading only hrefs would never see.
            room_links = MAX_LINKS - len(out.links)
            if not rendered.links and room_links > 0 and ("://" in rendered.visible or "www." in rendered.visible):
                out.links.extend(_text_links(rendered.visible, room_links))
        else:
            out.text_parts.append(text)
        return
    name = filename or _default_name(ctype)
    attachment = Attachment(name, ctype, data, location + (name,), other_names=_other_names(part, name, limits))
    out.attachments.append(attachment)
    if _looks_like_zip(data):
        _expand_zip(attachment, budget, out)


def _default_name(ctype: str) -> str:
    return f"(unnamed {ctype})"


def _attached_message(
    child: Message, container: Message, budget: _Budget, out: _Collected, level: int, location: tuple[str, ...]
) -> None:
    try:
        data = child.as_bytes(policy=email_policy.compat32)
    except Exception:
        try:
            data = child.as_string(policy=email_policy.compat32).encode("utf-8", "surrogateescape")
        except Exception:
            data = b""
    name = _filename(container, budget.limits.max_header_chars) or "attached message"
    _attached_raw(data, name, budget, out, level, location)


def _attached_raw(
    data: bytes, name: str, budget: _Budget, out: _Collected, level: int, location: tuple[str, ...]
) -> None:
    if len(location) + 1 > budget.limits.max_depth:  # attached-message nesting; parts nest per message
        budget.too_deep()
        return
    inner = _parse_message(data, None, budget, 0, location + (name,))
    out.attached.append(inner)
    # Attachments of attached messages are still attachments the recipient can open.
    out.attachments.extend(inner.attachments)


# --------------------------------------------------------------------------- archives


def _looks_like_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06") or (b"PK\x05\x06" in data[-65557:] and b"PK\x01\x02" in data)


def _expand_zip(archive: Attachment, budget: _Budget, out: _Collected) -> None:
    """Unpack zip members as attachments, recursively, without trusting declared sizes:
    every member is read in chunks and stopped at the ratio and total limits."""
    import zipfile  # here, not at the top: 9 ms of every start, and most mail carries no zip

    limits = budget.limits
    if archive.archive_depth >= limits.max_archive_depth:
        budget.problem(
            "ARCHIVE_TOO_DEEP",
            2.0,
            f"An archive contains archives nested more than {limits.max_archive_depth} deep; the innermost were not "
            "opened, so it is held (what was not read could hide a program).",
            min_action=Action.QUARANTINE,
            attachment=archive.display_name,
        )
        return
    # zipfile reads the whole central directory before the first member (12 us an entry:
    # 64 MB of entries would take 17 s), so a directory far past the member limit is held
    # without being read. Every entry starts with this signature, counted in C.
    room = limits.max_archive_members - budget.archive_members
    if archive.data.count(b"PK\x01\x02") > MEMBER_SCAN_FACTOR * max(room, 1):
        _too_many_members(archive, budget)
        return
    try:
        zf = zipfile.ZipFile(io.BytesIO(archive.data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        if not archive.truncated:  # a cut-off member is already reported by the limit that cut it
            _unreadable_zip(archive, budget)
        return
    for info in infos:
        if info.is_dir():
            continue
        if budget.archive_members >= limits.max_archive_members:
            _too_many_members(archive, budget)
            return
        budget.archive_members += 1
        name = info.filename
        encrypted = bool(info.flag_bits & 0x1)
        member_location = archive.location + (name,)
        if encrypted:
            out.attachments.append(
                Attachment(name, "application/octet-stream", b"", member_location, archive.archive_depth + 1,
                           encrypted=True, declared_size=info.file_size)
            )
            continue
        data, truncated, bomb = _read_member(zf, info, budget)
        if bomb:
            budget.problem(
                "ARCHIVE_BOMB",
                6.0,
                f"The archive {archive.display_name} expands far beyond its size (a 'zip bomb'); "
                "it was not unpacked, so it is held.",
                min_action=Action.QUARANTINE,
                attachment=archive.display_name,
                member=name,
            )
        member = Attachment(name, "application/octet-stream", data, member_location, archive.archive_depth + 1,
                            truncated=truncated, declared_size=info.file_size)
        out.attachments.append(member)
        if not bomb and _looks_like_zip(data):
            _expand_zip(member, budget, out)


MEMBER_SCAN_FACTOR = 4  # a central directory this many times the members left is not read at all


def _too_many_members(archive: Attachment, budget: _Budget) -> None:
    """Past the member limit the rest is unknown, and an archive of thousands of files is
    how a program is buried (or a scan made slow): held."""
    limit = budget.limits.max_archive_members
    budget.problem(
        "ARCHIVE_TOO_MANY_MEMBERS",
        2.0,
        f"An archive holds more than {limit} files; the rest were not examined, "
        "so it is held (what was not read could hide a program).",
        min_action=Action.QUARANTINE,
        attachment=archive.display_name,
        limit=limit,
    )


def _unreadable_zip(archive: Attachment, budget: _Budget) -> None:
    """A file built like a zip that Python's zipfile cannot open. Windows, 7-Zip and WinRAR
    repair or read such files from their local headers, so attackers break an archive on
    purpose to get its program past scanners. Reported with a score, not held: broken
    attachments also come from broken mail programs (tests/test_macros.py expects them to pass)."""
    budget.problem(
        "ARCHIVE_UNREADABLE",
        2.0,
        f"The archive {archive.display_name} is damaged or built so that it cannot be opened here, though "
        "archive programs may still open it; what is inside was not checked.",
        attachment=archive.display_name,
    )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> tuple[bytes, bool, bool]:
    """Read one member in chunks; returns (data, truncated, bomb)."""
    import zipfile

    limits = budget.limits
    compressed = max(info.compress_size, 1)
    ratio_cap = int(compressed * limits.max_archive_ratio) + 64 * 1024
    declared_bomb = info.file_size > ratio_cap
    cap = min(ratio_cap, limits.max_archive_bytes - budget.archive_bytes)
    if cap <= 0:
        budget.problem(
            "ARCHIVE_TOO_LARGE",
            2.0,
            "Archives in this message unpack to more than can be examined; the rest were not opened, so it is held.",
            min_action=Action.QUARANTINE,
            limit=limits.max_archive_bytes,
        )
        return b"", True, False
    chunks = []
    total = 0
    try:
        with zf.open(info) as handle:
            while True:
                chunk = handle.read(min(65536, cap + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > cap:
                    break
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError, zlib.error):
        pass
    data = b"".join(chunks)
    truncated = total > cap
    if truncated:
        data = data[:cap]
    budget.archive_bytes += len(data)
    bomb = declared_bomb or (truncated and cap == ratio_cap)
    return data, truncated, bomb


def iter_all_messages(message: ParsedMessage) -> Iterator[ParsedMessage]:
    """The message and every attached message inside it, depth first."""
    stack = [message]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.attached_messages))
