"""True file type: what an attachment IS, against what it is called and declared to be.

Ransomware reaches a practice as "invoice.pdf" that is a Windows program, a zipped
shortcut, a disk image, a script, or a file whose name hides its real ending behind
right-to-left characters or a run of spaces. Attackers choose names and Content-Types
freely but cannot change what the bytes are, so the type is read from the content with
libmagic (python-magic) and compared with the name and the declared type, using the table
of kinds in ``rules/filetypes.toml`` (operators can point ``types_file`` at their own).

Archive members are already flattened into ``message.attachments`` by the parser and get
the same checks. Members of an Office document's zip (word/document.xml, vbaProject.bin)
are its internals, not files anyone opens, so only the "is it a program" check applies to
them. Macros inside documents are the ``macros`` analyzer's business.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import olefile

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.options import ConfigError, Option, read_data_toml
from mailguard.message import Attachment, ParsedMessage
from mailguard.model import Action, Finding
from mailguard.resources import rules_file

DANGEROUS_CATEGORIES = ("executable", "installer", "script", "shortcut", "disk_image")
ORDINARY_CATEGORIES = ("document", "image", "media", "text", "web", "archive", "email", "data")
CATEGORY_RULES = {c: f"FILETYPE_{c.upper()}" for c in DANGEROUS_CATEGORIES}
# Why each dangerous category matters, in words for the front desk.
CATEGORY_WHY = {
    "executable": "Programs sent by email are a common way to install ransomware.",
    "installer": "Installers sent by email are a common way to install ransomware.",
    "script": "Scripts run as programs as soon as they are opened and are a common way to install ransomware.",
    "shortcut": "Shortcuts sent by email usually start a hidden program or open a fake sign-in page.",
    "disk_image": "Disk images are used to smuggle programs past virus checks.",
}
MAGIC_BYTES = 1 << 20  # libmagic reads at most this much; ISO needs 32 KiB + a sector
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# First bytes of programs: PE ("MZ"), ELF, Mach-O (both byte orders), fat Mach-O / Java class.
PROGRAM_MAGIC = (b"MZ", b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                 b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")

# Unicode format characters that change how a name is displayed.
# Embeddings, overrides and isolates: they reorder what follows, which is how "exe.pdf"
# is made to display as "pdf.exe". (The plain marks LRM/RLM/ALM cannot fake an ending.)
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Joiners and direction marks belong in Arabic, Hebrew, Persian and Indic names.
SCRIPT_FORMATTING = frozenset("\u200c\u200d\u200e\u200f\u061c")
# Characters that display as nothing although they are not format characters (Cf).
INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0\u00ad")


def is_invisible(ch: str) -> bool:
    return ch in INVISIBLE or unicodedata.category(ch) == "Cf"


def disguising_characters(filename: str) -> list[str]:
    """Invisible characters in a name that serve no writing system there: joiners and
    direction marks count only in a name written entirely in Latin letters."""
    non_latin = any(ch.isalpha() and ord(ch) > 0x24F for ch in filename)
    return [ch for ch in filename if is_invisible(ch) and not (non_latin and ch in SCRIPT_FORMATTING)]

# Blanks (or look-alike blanks, or underscores) pushing the real ending out of view:
# "invoice.pdf                    .exe", or trailing blanks that Windows drops anyway.
PADDING = re.compile(r"[\s\u2800\u3164\u115f\u1160\uffa0_]{5,}\.[^.\s]{1,10}$|[^\s]\s{2,}$")
PASSWORD_HINT = re.compile(
    r"(?i)\b(?:password|passcode|passwort|kennwort|contrase[ñn]a|senha|mot de passe|парол[ьи]|pwd|pw|pass|(?:access|unlock|zip) code)\b"
    r"(?:\s+for\s+the\s+(?:file|archive|attachment|zip|document|invoice)s?)?"
    r"(\s*(?:\bis\b|[:=\-–])?)\s*[\"'“«]?([^\s\"'”»]{3,40}?)[\"'”».,;!?)]*(?=\s|$)"
)
# Words that follow "password" in ordinary prose ("the password is your date of birth",
# "password reset") and are not themselves a password.
NOT_A_PASSWORD = frozenset(
    "your the a an same usual attached below above sent in on required protected will has was not for to and of "
    "reset expires expired expiring change changed update updated manager policy will be is are you we it this that "
    "here there from by with via as has have been being if when please must should can may separately "
    "separate later soon".split()
)


@dataclass(frozen=True)
class Kind:
    """One kind of file from the table."""

    name: str
    label: str
    category: str
    extensions: tuple[str, ...] = ()
    mime: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    compatible: tuple[str, ...] = ()
    ole_clsids: tuple[str, ...] = ()
    family: str = ""
    opaque: bool = False
    shown_extension: str = ""
    magic_bytes: tuple[bytes, ...] = ()

    @property
    def dangerous(self) -> bool:
        return self.category in DANGEROUS_CATEGORIES


@dataclass(frozen=True)
class RuleSetting:
    score: float
    action: Action | None = None


@dataclass(frozen=True)
class TypeTable:
    """The loaded ``filetypes.toml``: kinds indexed by extension, MIME type and CLSID."""

    kinds: Mapping[str, Kind]
    rules: Mapping[str, RuleSetting]
    generic_mime: frozenset[str]
    by_extension: Mapping[str, Kind] = field(default_factory=dict)
    by_mime: Mapping[str, Kind] = field(default_factory=dict)
    by_clsid: Mapping[str, Kind] = field(default_factory=dict)
    descriptions: tuple[tuple[str, Kind], ...] = ()
    prefixes: tuple[tuple[bytes, Kind], ...] = ()

    def kind_for_extension(self, ext: str) -> Kind | None:
        return self.by_extension.get(ext.lower())


_KIND_KEYS = {
    "label": str, "category": str, "extensions": list, "mime": list, "description": list,
    "compatible": list, "ole_clsids": list, "family": str, "opaque": bool, "shown_extension": str,
    "magic_bytes": list,
}


def load_type_table(path: Path) -> TypeTable:
    """Read and check the table; every mistake is a ConfigError naming file and key."""
    data = read_data_toml(path, "file-type table")
    unknown = set(data) - {"generic_mime", "rules", "kinds"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
                          "expected generic_mime, [rules.*] and [kinds.*]")
    rules: dict[str, RuleSetting] = {}
    for rule_id in (*CATEGORY_RULES.values(), *DEFAULT_SCORES):
        rules[rule_id] = RuleSetting(DEFAULT_SCORES.get(rule_id, 10.0), DEFAULT_ACTIONS.get(rule_id))
    for rule_id, spec in dict(data.get("rules", {})).items():
        where = f"{path}: [rules.{rule_id}]"
        if rule_id not in rules:
            raise ConfigError(f"{where}: unknown rule; known rules: {', '.join(sorted(rules))}")
        if not isinstance(spec, dict) or set(spec) - {"score", "action"}:
            raise ConfigError(f"{where}: expected only 'score' (a number) and 'action' (e.g. \"quarantine\")")
        score = spec.get("score", rules[rule_id].score)
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise ConfigError(f"{where} score: expected a number, got {score!r}")
        action = rules[rule_id].action
        if "action" in spec:
            try:
                action = None if str(spec["action"]).lower() == "none" else Action.parse(str(spec["action"]))
            except ValueError as exc:
                raise ConfigError(f"{where} action: {exc}") from None
        rules[rule_id] = RuleSetting(float(score), action)
    kinds: dict[str, Kind] = {}
    by_extension: dict[str, Kind] = {}
    by_mime: dict[str, Kind] = {}
    by_clsid: dict[str, Kind] = {}
    descriptions: list[tuple[str, Kind]] = []
    prefixes: list[tuple[bytes, Kind]] = []
    for name, spec in dict(data.get("kinds", {})).items():
        where = f"{path}: [kinds.{name}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a table")
        for key, value in spec.items():
            expected = _KIND_KEYS.get(key)
            if expected is None:
                raise ConfigError(f"{where}: unknown key '{key}'; known keys: {', '.join(_KIND_KEYS)}")
            if not isinstance(value, expected) or (expected is list and not all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{where} {key}: expected {'a list of strings' if expected is list else expected.__name__}")
        category = spec.get("category", "")
        if category not in DANGEROUS_CATEGORIES + ORDINARY_CATEGORIES:
            raise ConfigError(f"{where} category: {category!r} is not one of "
                              f"{', '.join(DANGEROUS_CATEGORIES + ORDINARY_CATEGORIES)}")
        if not spec.get("label"):
            raise ConfigError(f"{where}: 'label' is required (how staff are told what the file is)")
        kind = Kind(
            name=name, label=spec["label"], category=category,
            extensions=tuple(e.lower().lstrip(".") for e in spec.get("extensions", ())),
            mime=tuple(m.lower() for m in spec.get("mime", ())),
            description=tuple(spec.get("description", ())),
            compatible=tuple(m.lower() for m in spec.get("compatible", ())),
            ole_clsids=tuple(c.upper().strip("{}") for c in spec.get("ole_clsids", ())),
            family=spec.get("family", ""), opaque=bool(spec.get("opaque", False)),
            shown_extension=spec.get("shown_extension", "").lstrip("."),
            magic_bytes=_hex_prefixes(spec.get("magic_bytes", ()), where),
        )
        kinds[name] = kind
        for ext in kind.extensions:
            if ext in by_extension:
                raise ConfigError(f"{where} extensions: '{ext}' is already listed for [kinds.{by_extension[ext].name}]")
            by_extension[ext] = kind
        for mime in kind.mime:
            by_mime.setdefault(mime, kind)
        for clsid in kind.ole_clsids:
            by_clsid[clsid] = kind
        descriptions.extend((d, kind) for d in kind.description)
        prefixes.extend((b, kind) for b in kind.magic_bytes)
    generic = data.get("generic_mime", [])
    if not isinstance(generic, list):
        raise ConfigError(f"{path}: generic_mime: expected a list of strings")
    return TypeTable(kinds, rules, frozenset(m.lower() for m in generic), by_extension, by_mime, by_clsid,
                     tuple(descriptions), tuple(prefixes))


def _hex_prefixes(values: Iterable[str], where: str) -> tuple[bytes, ...]:
    out = []
    for value in values:
        try:
            out.append(bytes.fromhex(value))
        except ValueError:
            raise ConfigError(f"{where} magic_bytes: {value!r} is not hexadecimal bytes, e.g. \"4d5a\"") from None
    return tuple(out)


DEFAULT_SCORES = {
    "FILETYPE_DOUBLE_EXTENSION": 5.0, "FILETYPE_NAME_BIDI": 10.0, "FILETYPE_NAME_INVISIBLE": 5.0,
    "FILETYPE_NAME_PADDING": 5.0, "FILETYPE_MISMATCH": 3.0, "FILETYPE_DISGUISED_WEB_PAGE": 5.0,
    "FILETYPE_DECLARED_MISMATCH": 1.5, "FILETYPE_ENCRYPTED_ARCHIVE": 5.0,
    "FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD": 10.0, "FILETYPE_UNSCANNABLE_ARCHIVE": 1.0,
    "FILETYPE_ENCRYPTED_DOCUMENT": 3.0,
}
DEFAULT_ACTIONS = {rule: Action.QUARANTINE for rule in CATEGORY_RULES.values()}


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detected:
    """What libmagic (and a look at OLE class ids) says the content is."""

    mime: str
    description: str
    kind: Kind | None
    encrypted: bool = False  # a password-to-open Office document or PDF


UNKNOWN = Detected("application/octet-stream", "", None)


def libmagic_problem() -> str:
    """Why libmagic cannot be used ("" when it can): the services check it at start
    (``mailguard.ops.preflight``), a check of saved files meets it at the first attachment."""
    try:
        import magic

        magic.Magic(mime=True).from_buffer(b"%PDF-1.7\n")
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError, MagicException: all mean the same
        return (f"file types cannot be recognised: libmagic is missing or broken ({type(exc).__name__}: {exc}); "
                "install it (Debian: apt-get install libmagic1) and python-magic")
    return ""


class _Magic(threading.local):
    """One pair of libmagic handles per thread: libmagic handles are not thread-safe, and
    opening the database per call costs more than the check itself. Opened at the first
    attachment a thread looks at, not when the scanner is built: most messages carry none,
    and python-magic with its database costs a cold ``mailguard check`` about 20 ms."""

    mime: Any = None
    text: Any = None

    def opened(self) -> "_Magic":
        if self.mime is None:
            import magic

            self.text = magic.Magic()
            self.mime = magic.Magic(mime=True)
        return self


def _ole_facts(data: bytes) -> tuple[str, bool]:
    """(root class id, whether it is a password-to-open Office 2007+ document: those are
    OLE files holding an EncryptedPackage stream). Documents only write-protected with
    Excel's built-in password are not counted: they are common and harmless."""
    try:
        with olefile.OleFileIO(data) as ole:
            encrypted = ole.exists("EncryptedPackage") and ole.exists("EncryptionInfo")
            return (ole.root.clsid or "").upper(), bool(encrypted)
    except Exception:  # a broken OLE file is simply not recognised
        return "", False


def pdf_needs_password(data: bytes) -> bool:
    """Whether a PDF cannot be opened without a password. PDFs encrypted with an empty user
    password (only printing or copying restricted, common in real invoices and statements)
    open for anyone, so they do not count; pypdf is asked only when the file has an
    /Encrypt entry at all, which keeps the cost to the few files that do."""
    if b"/Encrypt" not in data:
        return False
    from mailguard.analyzers.pdf import bounded_pdf, pdf_errors

    try:
        with bounded_pdf(data) as reader:
            return bool(reader.is_encrypted) and not reader.decrypt("")
    except pdf_errors():
        return False


def name_parts(filename: str) -> tuple[str, list[str]]:
    """(name as Windows would treat it, its extensions, innermost first). Windows drops
    trailing dots and spaces, so "invoice.exe. " runs as .exe."""
    visible = "".join(ch for ch in filename if not is_invisible(ch))
    base = visible.replace("\\", "/").rsplit("/", 1)[-1]
    trimmed = base.rstrip(" .\t\u3000\u00a0")
    pieces = trimmed.split(".")
    exts = [p.strip().lower() for p in pieces[1:]] if len(pieces) > 1 else []
    return trimmed, [e for e in exts if e and len(e) <= 20]


def shown(attachment: Attachment) -> str:
    """The attachment's path for a summary, hidden characters made visible."""
    return show_name(attachment.display_name)


def show_name(filename: str) -> str:
    """The name with hidden characters made visible, for a summary."""
    out = []
    for ch in filename:
        if is_invisible(ch):
            out.append(f"[U+{ord(ch):04X}]")
        else:
            out.append(ch)
    shown = "".join(out)
    return re.sub(r" {5,}", lambda m: f" [{len(m.group(0))} spaces] ", shown)


# --------------------------------------------------------------------------- analyzer


class FiletypeAnalyzer(Analyzer):
    name = "filetype"
    config_schema = {
        "types_file": Option(
            "", "path",
            "File-type table (TOML): kinds of file by extension, MIME type and libmagic description, which are "
            "dangerous, and rule scores. Empty: the built-in rules/filetypes.toml.",
        ),
        "check_declared_type": Option(
            True, "bool", "Also compare the sender's declared Content-Type with the detected type."),
        "allowed_extensions": Option(
            [], "list[str]",
            "Extensions (no dot) never reported as dangerous by name, e.g. [\"cab\"] if the practice gets such "
            "files from a supplier. Content is still checked: a program is a program whatever it is called.",
        ),
    }

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        configured = str(settings.get("types_file", ""))
        path = context.config.resolve_path(configured) if configured else rules_file("filetypes.toml")
        self.table = load_type_table(path)
        self.check_declared = bool(settings.get("check_declared_type", True))
        self.allowed = frozenset(e.lower().lstrip(".") for e in settings.get("allowed_extensions", ()))
        self._magic = _Magic()

    # -- detection

    def detect(self, data: bytes) -> Detected:
        if not data:
            return Detected("application/x-empty", "empty", None)
        head = data[:MAGIC_BYTES]
        import magic

        handles = self._magic.opened()
        try:
            mime = (handles.mime.from_buffer(head) or "").lower()
            description = handles.text.from_buffer(head) or ""
        except magic.MagicException:  # libmagic gave up on this content: judge it by name only
            mime, description = "application/octet-stream", ""
        if mime == "text/plain" and description.startswith("Non-ISO extended-ASCII"):
            mime = "application/octet-stream"  # binary that libmagic could only call "text"
        kind = self.table.by_mime.get(mime)
        for prefix, candidate in self.table.prefixes:
            if data.startswith(prefix):
                kind = candidate
                break
        if kind is None or not kind.dangerous:
            for prefix, candidate in self.table.descriptions:
                if description.startswith(prefix):
                    kind = candidate
                    break
        encrypted = False
        if data.startswith(OLE_MAGIC):
            clsid, encrypted = _ole_facts(data)
            kind = self.table.by_clsid.get(clsid) or kind
        elif b"%PDF-" in data[:1024]:
            encrypted = pdf_needs_password(data)
        return Detected(mime, description, kind, encrypted)

    # -- the checks

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        attachments = message.attachments
        if not attachments:
            return []
        # Zips that are really one document (OOXML, OpenDocument, a .jar): their members are
        # parts, not files anyone opens. Known from marker members, or from the detected
        # type of the zip itself (the parser lists a zip before its members).
        containers = {a.location[:-1] for a in attachments
                      if a.archive_depth and a.location[-1] in CONTAINER_MARKERS}
        by_location = {a.location: a for a in attachments}
        detected: dict[tuple[str, ...], Detected] = {}
        findings: list[Finding] = []
        encrypted_archives: dict[tuple[str, ...], list[str]] = {}
        for attachment in attachments:
            parent = attachment.location[:-1]
            if attachment.archive_depth and parent in containers:
                findings.extend(self._internal(attachment, by_location.get(parent), detected))
                continue
            found = detected[attachment.location] = self.detect(attachment.data)
            if found.kind is not None and found.kind.category in ("document", "email"):
                containers.add(attachment.location)
            if attachment.encrypted:
                # The content is locked, but the member's name is not: judge it by name.
                encrypted_archives.setdefault(attachment.location[:-1], []).append(attachment.filename)
                findings.extend(self._check(attachment, UNKNOWN))
                continue
            findings.extend(self._check(attachment, found))
            findings.extend(self._other_name_checks(attachment, found))
            if found.encrypted:
                findings.append(self._finding(
                    "FILETYPE_ENCRYPTED_DOCUMENT",
                    f"'{shown(attachment)}' is a password-protected document, so it cannot be checked for "
                    "harmful content.",
                    attachment, found, archives=[shown(attachment)],
                ))
            if found.kind is not None and found.kind.opaque:
                findings.append(self._opaque_archive(attachment, found))
        findings.extend(self._encrypted(message, encrypted_archives))
        return _merge_encrypted(findings, message, self)

    def _internal(self, attachment: Attachment, container: Attachment | None,
                  detected: Mapping[tuple[str, ...], Detected]) -> list[Finding]:
        """A part of a document: only "is it a program" applies (checked by its first
        bytes, then libmagic), and not at all inside a program (a .jar), which is already
        reported as a whole."""
        if self._dangerous_by_either(container, detected) or not attachment.data.startswith(PROGRAM_MAGIC):
            return []
        found = self.detect(attachment.data)
        if found.kind is not None and found.kind.category == "executable":
            return [self._dangerous(attachment, found, by_content=True)]
        return []

    def _dangerous_by_either(self, attachment: Attachment | None,
                             detected: Mapping[tuple[str, ...], Detected]) -> bool:
        """Whether an attachment is a dangerous kind by its content or by its name."""
        if attachment is None:
            return False
        found = detected.get(attachment.location)
        if found is not None and found.kind is not None and found.kind.dangerous:
            return True
        _, exts = name_parts(attachment.filename)
        named = self.table.kind_for_extension(exts[-1]) if exts else None
        return named is not None and named.dangerous

    def _check(self, attachment: Attachment, found: Detected) -> list[Finding]:
        findings = self._name_checks(attachment, found)
        _, exts = name_parts(attachment.filename)
        named = self.table.kind_for_extension(exts[-1]) if exts else None
        if found.kind is not None and found.kind.dangerous and not (
            # Script text under a harmless name (a .txt, an .html) opens in an editor or a
            # browser, not in a script host: a mismatch at most, judged below.
            found.kind.category == "script" and named is not None and not named.dangerous
        ):
            findings.append(self._dangerous(attachment, found, by_content=True, named=named))
            return findings
        if named is not None and named.dangerous and exts[-1] not in self.allowed:
            findings.append(self._dangerous(attachment, found, by_content=False, named=named))
            return findings
        if named is not None and found.kind is not None and not self._compatible(named, found):
            rule = "FILETYPE_DISGUISED_WEB_PAGE" if found.kind.category == "web" else "FILETYPE_MISMATCH"
            findings.append(self._finding(
                rule,
                f"'{shown(attachment)}' is really {found.kind.label}, not {named.label} as its name says.",
                attachment, found, named=named.name,
            ))
            return findings
        if self.check_declared and found.kind is not None and attachment.content_type not in self.table.generic_mime:
            declared = self.table.by_mime.get(attachment.content_type)
            if declared is not None and not self._compatible(declared, found) and declared.mime[0] not in (
                found.kind.compatible
            ):
                findings.append(self._finding(
                    "FILETYPE_DECLARED_MISMATCH",
                    f"'{shown(attachment)}' was sent as {declared.label} but is really {found.kind.label}.",
                    attachment, found,
                ))
        return findings

    def _other_name_checks(self, attachment: Attachment, found: Detected) -> list[Finding]:
        """The checks by name, for each other name the headers give the part (Content-Type
        name= against Content-Disposition filename=). Mail programs differ in which one they
        show and which one they save under, so a script sent as "invoice.txt" and also named
        "invoice.vbs" runs for whoever's program picks the second. Only the rules the shown
        name did not already raise are added, each saying which name carries it."""
        if not attachment.other_names:
            return []
        already = {f.rule for f in self._check(attachment, found)}
        findings: list[Finding] = []
        for other in attachment.other_names[:4]:
            alias = replace(attachment, filename=other, location=attachment.location[:-1] + (other,), other_names=())
            for finding in self._check(alias, found):
                if finding.rule in already:
                    continue
                already.add(finding.rule)
                prefix = (f"The attachment '{shown(attachment)}' is also named '{show_name(other)}' in its headers, "
                          "and some mail programs show and save it under that name. ")
                findings.append(replace(finding, summary=prefix + finding.summary,
                                        details={**finding.details, "other_name": show_name(other)}))
        return findings

    def _compatible(self, named: Kind, found: Detected) -> bool:
        kind = found.kind
        if kind is None or kind is named:  # nothing known about the content, or the same kind
            return True
        if found.mime in named.compatible or found.mime in named.mime:
            return True
        if named.family and named.family == kind.family:
            return True
        # Plain text can be any text-like kind; an unknown text is not evidence.
        return found.mime == "text/plain" and named.category in ("text", "data", "web", "script")

    def _dangerous(self, attachment: Attachment, found: Detected, by_content: bool,
                   named: Kind | None = None) -> Finding:
        kind = found.kind if by_content and found.kind is not None else named
        assert kind is not None
        name = shown(attachment)
        ext = f" (.{kind.shown_extension})" if kind.shown_extension else ""
        if by_content and named is not None and named is not kind and not named.dangerous:
            summary = f"'{name}' is really {kind.label}{ext}, not {named.label}."
        elif by_content and named is None:
            summary = f"'{name}' is really {kind.label}{ext}, whatever its name says."
        else:
            summary = f"'{name}' is {kind.label}."
        summary += " " + CATEGORY_WHY[kind.category] + " Do not open it."
        return self._finding(CATEGORY_RULES[kind.category], summary, attachment, found, kind=kind.name,
                             by="content" if by_content else "name")

    def _name_checks(self, attachment: Attachment, found: Detected | None) -> list[Finding]:
        filename = attachment.filename
        findings: list[Finding] = []
        visible_name = show_name(filename)
        trimmed, exts = name_parts(filename)
        real_ext = f".{exts[-1]}" if exts else "its real ending"
        if any(ch in BIDI_CONTROLS for ch in filename):
            findings.append(self._finding(
                "FILETYPE_NAME_BIDI",
                f"The name of attachment '{visible_name}' contains hidden characters that reverse the text, so it "
                f"displays a false ending; it really ends in {real_ext}.",
                attachment, found,
            ))
        elif disguising_characters(filename):
            findings.append(self._finding(
                "FILETYPE_NAME_INVISIBLE",
                f"The name of attachment '{visible_name}' contains invisible characters, a trick to disguise it.",
                attachment, found,
            ))
        if PADDING.search(filename.replace("\t", " ")) and exts:
            findings.append(self._finding(
                "FILETYPE_NAME_PADDING",
                f"The name of attachment '{visible_name}' is padded with blanks to push its real ending ({real_ext}) "
                "out of sight.",
                attachment, found,
            ))
        if len(exts) >= 2:
            inner = self.table.kind_for_extension(exts[-2])
            outer = self.table.kind_for_extension(exts[-1])
            detected_danger = found is not None and found.kind is not None and found.kind.dangerous
            if inner is not None and not inner.dangerous and (
                (outer is not None and outer.dangerous and exts[-1] not in self.allowed) or detected_danger
            ):
                opens_as = outer.label if outer is not None and outer.dangerous else found.kind.label  # type: ignore[union-attr]
                findings.append(self._finding(
                    "FILETYPE_DOUBLE_EXTENSION",
                    f"'{shown(attachment)}' has two endings: it looks like {inner.label} (.{exts[-2]}) but "
                    f"Windows would open it as {opens_as} (.{exts[-1]}).",
                    attachment, found,
                ))
        return findings

    def _opaque_archive(self, attachment: Attachment, found: Detected) -> Finding:
        encrypted = archive_is_encrypted(attachment.data)
        if encrypted:
            return self._finding(
                "FILETYPE_ENCRYPTED_ARCHIVE",
                f"'{shown(attachment)}' is a password-protected archive, so it cannot be checked for "
                "viruses; criminals send malware this way.",
                attachment, found, archives=[shown(attachment)],
            )
        return self._finding(
            "FILETYPE_UNSCANNABLE_ARCHIVE",
            f"'{shown(attachment)}' is {found.kind.label if found.kind else 'an archive'}, which cannot be "
            "opened here to check what is inside.",
            attachment, found,
        )

    def _encrypted(self, message: ParsedMessage, archives: Mapping[tuple[str, ...], list[str]]) -> list[Finding]:
        findings = []
        for location, members in archives.items():
            display = " > ".join(location) or "(an archive)"
            findings.append(self.finding(
                "FILETYPE_ENCRYPTED_ARCHIVE",
                self.table.rules["FILETYPE_ENCRYPTED_ARCHIVE"].score,
                f"'{display}' is a password-protected archive, so it cannot be checked for viruses; criminals "
                "send malware this way.",
                {"attachment": display, "archives": [display], "members": members[:20]},
                self.table.rules["FILETYPE_ENCRYPTED_ARCHIVE"].action,
            ))
        return findings

    def _finding(self, rule: str, summary: str, attachment: Attachment, found: Detected | None,
                 **details: Any) -> Finding:
        setting = self.table.rules[rule]
        info: dict[str, Any] = {"attachment": shown(attachment)}
        if found is not None:
            info["detected_mime"] = found.mime
            info["detected"] = found.description[:120]
        if attachment.content_type:
            info["declared_type"] = attachment.content_type
        info.update(details)
        return self.finding(rule, setting.score, summary, info, setting.action)


CONTAINER_MARKERS = frozenset({"[Content_Types].xml", "mimetype", "META-INF/manifest.xml", "META-INF/MANIFEST.MF",
                               "AndroidManifest.xml"})


ENCRYPTED_RULES = ("FILETYPE_ENCRYPTED_ARCHIVE", "FILETYPE_ENCRYPTED_DOCUMENT")


def _merge_encrypted(findings: list[Finding], message: ParsedMessage, analyzer: FiletypeAnalyzer) -> list[Finding]:
    """At most one finding per rule for password-protected files; when the text gives a
    password, one stronger finding instead (a password in the same email is how malware
    gets past virus checks: the recipient can open it, the gateway cannot)."""
    encrypted = [f for f in findings if f.rule in ENCRYPTED_RULES]
    if not encrypted:
        return findings
    rest = [f for f in findings if f.rule not in ENCRYPTED_RULES]
    files = [a for f in encrypted for a in f.details.get("archives", [])]
    names = ", ".join(f"'{a}'" for a in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    one = len(files) == 1
    password = find_password(message)
    if password is not None:
        rule = "FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"
        setting = analyzer.table.rules[rule]
        summary = (f"{names} {'is a password-protected file' if one else 'are password-protected files'} and the "
                   "email itself gives the password: a common trick to get malware past virus checks. "
                   "Do not open it.")
        return rest + [analyzer.finding(rule, setting.score, summary, {"archives": files}, setting.action)]
    merged = []
    for rule in ENCRYPTED_RULES:
        group = [f for f in encrypted if f.rule == rule]
        if len(group) == 1:
            merged.append(group[0])
        elif group:
            names = ", ".join(f"'{a}'" for f in group for a in f.details.get("archives", [])[:1])
            what = "archives" if rule == "FILETYPE_ENCRYPTED_ARCHIVE" else "documents"
            summary = f"{names} are password-protected {what}, so they cannot be checked for harmful content."
            archives = [a for f in group for a in f.details.get("archives", [])]
            merged.append(analyzer.finding(rule, group[0].score, summary, {"archives": archives}, group[0].min_action))
    return rest + merged


def find_password(message: ParsedMessage) -> str | None:
    """A password given in the subject or the text a person reads, if any."""
    for text in (message.subject, message.body_text, message.text):
        for match in PASSWORD_HINT.finditer(text or ""):
            separator, candidate = match.group(1).strip(), match.group(2)
            if candidate.lower() in NOT_A_PASSWORD:
                continue
            # "Password: x7Qp" or "password is hello", or a bare token with a digit in it.
            if separator or any(ch.isdigit() for ch in candidate):
                return candidate
    return None


def archive_is_encrypted(data: bytes) -> bool:
    """7-Zip and RAR archives cannot be unpacked here; tell from their headers whether
    they are password protected."""
    if data.startswith(b"7z\xbc\xaf\x27\x1c"):
        # The AES-256 coder id appears in the (possibly encoded) header of an encrypted archive.
        return b"\x06\xf1\x07\x01" in data[-65536:] or b"\x06\xf1\x07\x01" in data[:65536]
    if data.startswith(b"Rar!\x1a\x07\x01\x00"):  # RAR 5: an archive encryption header comes first
        return _rar5_first_header_type(data[8:]) == 4
    if data.startswith(b"Rar!\x1a\x07\x00"):  # RAR 4: main header flag "block headers encrypted"
        if len(data) >= 7 + 5 and data[9] == 0x73:
            flags = int.from_bytes(data[10:12], "little")
            if flags & 0x0080:
                return True
            size = int.from_bytes(data[12:14], "little")
            file_head = 7 + size
            if len(data) >= file_head + 5 and data[file_head + 2] == 0x74:
                return bool(int.from_bytes(data[file_head + 3 : file_head + 5], "little") & 0x0004)
    return False


def _rar5_first_header_type(data: bytes) -> int:
    pos = 4  # header CRC32
    for _ in range(2):  # header size, then header type (both vints)
        value, shift = 0, 0
        while pos < len(data):
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return value
