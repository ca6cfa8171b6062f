"""YARA signatures over every attachment, archive member and HTML body.

Why YARA: it is the lingua franca of malware signatures, so the project's own rule set in
``yara/`` is readable by any security person, and an operator can drop in rule folders
they already trust (``[signatures] rule_dirs``) without writing Python.

Each rule's ``meta`` says what a person should be told and how much it counts:

- ``description`` (plain English for front-desk staff) and ``score`` (an integer, or a
  string such as ``"2.5"``, because YARA meta has no floats);
- optional ``action`` (``"quarantine"`` or ``"reject"``) that the message gets whatever its
  total score: malware, executables and the EICAR test file quarantine;
- optional ``body_score`` / ``body_action`` for a match in an HTML *body* rather than in an
  attached file (mail programs do not run a body's scripts or forms the way a browser runs
  an attached ``.html`` file, so most rules count less there; ``body_score = 0`` ignores
  the rule in bodies);
- optional ``rule_id`` (UPPER_SNAKE); otherwise ``SIGNATURE_<RULE NAME IN UPPER CASE>``.

Rules may read external variables describing what is scanned: ``filename`` and
``extension`` (lower case), ``content_type`` (declared), ``is_body`` (an HTML body) and
``view``, which says what the bytes are:

- ``"file"``: an attachment or archive member as sent;
- ``"html-body"``: an HTML body of the message or of an attached message;
- ``"vba-source"``: the decompressed macro code of an Office file (VBA is stored
  compressed, so its keywords are invisible in the raw bytes);
- ``"pdf-objects"``: a PDF's decompressed object streams (where PDF 1.5+ hides actions);
- ``"decoded-script"``: what a web page's script decodes with unescape()/atob() and writes.

Compilation happens once, in the constructor; ``compile_rules`` is the same step for a
server that wants to check a reload before swapping scanners. yara-python's ``match``
creates a scanner per call, so one compiled rule set serves many threads.
"""
from __future__ import annotations

import io
import pickle
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import yara

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.hidden_content import decoded_script_literals, pdf_object_streams_view, vba_source
from mailguard.options import ConfigError, Option

if TYPE_CHECKING:  # the loader imports the analyzers, never the other way round
    from mailguard.config import Config
from mailguard.message import Attachment, ParsedMessage, iter_all_messages, url_host
from mailguard.model import Action, Finding
from mailguard.resources import cache_key, cached_build, data_dir

RULE_SUFFIXES = (".yar", ".yara")
RULE_ID_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
MAX_LOCATIONS = 10
FORM_ACTION_RE = re.compile(rb"""<form\b[^>]{0,500}?\baction\s*=\s*["']?\s*([^"'\s>]+)""", re.IGNORECASE)
# Rules with this tag are not reported for a page whose every form posts to a trusted host.
TRUSTED_FORM_TAG = "credential_form"

# External variables every rule may use; the values here are the defaults at compile time.
EXTERNALS: Mapping[str, Any] = {
    "filename": "",
    "extension": "",
    "content_type": "",
    "is_body": False,
    "view": "",
}

CONFIG_SCHEMA: Mapping[str, Option] = {
    "builtin_rules_dir": Option(
        "", "path",
        "Folder that replaces the built-in YARA rule set (yara/ shipped with mailguard); empty for the "
        "built-in one. Every *.yar and *.yara file directly in it is compiled.",
    ),
    "rule_dirs": Option(
        [], "list[path]",
        "Extra folders (or single files) of YARA rules compiled together with the built-in set. Each rule's "
        "meta gives description (shown to staff), score, and optionally action = \"quarantine\" or \"reject\", "
        "body_score, body_action and rule_id; conditions may use the external variables filename, extension, "
        "content_type, is_body and view. A broken file stops start-up with its name and line.",
    ),
    "tag_actions": Option(
        {}, "dict[str,str]",
        "Least action for every rule carrying a YARA tag, when it matches an attachment, e.g. "
        "{ executable = \"reject\", malware = \"reject\" } to refuse programs and malware outright. "
        "Built-in tags: executable, script, office, pdf, html, container, shortcut, exploit, malware, phishing, "
        "credential_form, test (EICAR).",
    ),
    "disabled_rules": Option(
        [], "list[str]", "Rule ids (e.g. SIGNATURE_PDF_AUTO_ACTION) whose matches are ignored."
    ),
    "default_score": Option(
        5.0, "float", "Score of a matching rule that has no score in its meta (operators' own rules).", minimum=0
    ),
    "timeout_s": Option(
        3, "int",
        "Most seconds YARA may spend on one message (all its attachments and HTML bodies together). "
        "What is left unscanned is reported as SIGNATURE_SCAN_INCOMPLETE. Keep it below "
        "[policy] analyzer_time_budget_ms.",
        minimum=1,
    ),
    "max_scan_bytes": Option(
        32 * 1024 * 1024, "int",
        "Largest part of one attachment that is scanned; a bigger one is scanned up to this size and "
        "reported as SIGNATURE_SCAN_TRUNCATED.",
        minimum=4096,
    ),
    "scan_html_bodies": Option(True, "bool", "Also scan the HTML bodies of the message and of attached messages."),
    "trusted_form_hosts": Option(
        ["res.cisco.com"], "list[str]",
        "Hosts (and their subdomains) of secure-message services whose attached envelopes ask for a "
        "password and post it to the service, e.g. Cisco's securedoc.html to res.cisco.com. A page whose "
        "every form posts to one of these is not reported as a credential form. Add your encryption "
        "provider's host; never add a host you do not know.",
    ),
    "decode_hidden_content": Option(
        True, "bool",
        "Also scan what attachments hide from a plain byte scan: a PDF's compressed object streams and "
        "the text a web page's script decodes (unescape, atob) before showing it.",
    ),
    "extract_vba": Option(
        True, "bool",
        "Decompress the VBA macro code of Office files (with oletools) and scan it too, so rules about "
        "auto-running macros and suspicious calls see the code.",
    ),
}


@dataclass(frozen=True)
class RuleInfo:
    """What one YARA rule means for mailguard, read and checked from its meta."""

    identifier: str
    rule_id: str
    description: str
    score: float
    action: Action | None
    body_score: float
    body_action: Action | None
    source: Path
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompiledRules:
    """A compiled rule set and the meaning of each rule, keyed by (namespace, identifier)."""

    rules: yara.Rules
    info: Mapping[tuple[str, str], RuleInfo]
    files: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.info)


@dataclass(frozen=True)
class ScanTarget:
    """One thing handed to YARA: an attachment's bytes, its macro code, or an HTML body."""

    data: bytes
    where: str
    view: str
    filename: str = ""
    content_type: str = ""
    truncated: bool = False
    # A derived view (a PDF's compressed objects) stopped at its bound: the rest is unknown.
    view_incomplete: bool = False

    @property
    def is_body(self) -> bool:
        return self.view == "html-body"

    def externals(self) -> dict[str, Any]:
        name = self.filename.lower().strip()
        return {
            "filename": name,
            "extension": name.rsplit(".", 1)[1] if "." in name else "",
            "content_type": self.content_type,
            "is_body": self.is_body,
            "view": self.view,
        }


@dataclass
class _Hits:
    """Matches of one rule across a message, so one rule gives one finding."""

    info: RuleInfo
    score: float = 0.0
    action: Action | None = None
    locations: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- compiling


def rule_files(settings: Mapping[str, Any], config: Config) -> list[Path]:
    """The rule files to compile, built-in first, each folder's files in name order."""
    builtin = str(settings.get("builtin_rules_dir") or "")
    sources: list[tuple[str, Path]] = [
        ("[signatures] builtin_rules_dir", config.resolve_path(builtin)) if builtin else ("built-in", data_dir("yara"))
    ]
    sources += [("[signatures] rule_dirs", config.resolve_path(p)) for p in settings.get("rule_dirs", ())]
    files: list[Path] = []
    for origin, path in sources:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in RULE_SUFFIXES and p.is_file()))
        else:
            raise ConfigError(
                f"{origin}: YARA rule folder {path} does not exist; create it or correct the path"
            )
    return files


def compile_rules(settings: Mapping[str, Any], config: Config) -> CompiledRules:
    """Compile the built-in rules and the operator's folders; raise ConfigError naming the
    file and line of the first problem. Servers call this on reload (SIGHUP) to check new
    rules before building a new Scanner with them."""
    files = rule_files(settings, config)
    default_score = float(settings.get("default_score", 5.0))
    if any(b"include" in path.read_bytes() for path in files):  # included files are not in the key
        return _compile_files(files, default_score)
    # Compiled rules are cached (yara-python saves and loads them), keyed by the files'
    # contents, yara's version and the default score; a changed rule means a new compile.
    key = cache_key("yara", files, [yara.__version__, repr(default_score), repr(sorted(EXTERNALS.items()))])
    return cached_build("yara", key, lambda: _compile_files(files, default_score), _dump_compiled, _load_compiled)


def _dump_compiled(compiled: CompiledRules) -> bytes:
    buffer = io.BytesIO()
    compiled.rules.save(file=buffer)
    return pickle.dumps((buffer.getvalue(), compiled.info, compiled.files), protocol=pickle.HIGHEST_PROTOCOL)


def _load_compiled(data: bytes) -> CompiledRules:
    saved, info, files = pickle.loads(data)
    return CompiledRules(yara.load(file=io.BytesIO(saved)), info, files)


def _compile_files(files: list[Path], default_score: float) -> CompiledRules:
    info: dict[tuple[str, str], RuleInfo] = {}
    seen_namespaces: set[str] = set()
    filepaths: dict[str, str] = {}
    for path in files:
        namespace = str(path)
        if namespace in seen_namespaces:
            continue
        seen_namespaces.add(namespace)
        filepaths[namespace] = namespace
        single = _compile({namespace: namespace}, path)
        for rule in single:
            info[(namespace, rule.identifier)] = _rule_info(rule, path, default_score)
    rules = _compile(filepaths, None) if filepaths else yara.compile(source="", externals=dict(EXTERNALS))
    return CompiledRules(rules, info, tuple(files))


def _compile(filepaths: Mapping[str, str], path: Path | None) -> yara.Rules:
    try:
        return yara.compile(filepaths=dict(filepaths), externals=dict(EXTERNALS))
    except yara.SyntaxError as exc:
        raise ConfigError(_describe_yara_error(str(exc), path)) from None
    except yara.Error as exc:
        where = str(path) if path else "YARA rules"
        raise ConfigError(f"{where}: cannot compile YARA rules: {exc}; fix or remove the file") from None


def _describe_yara_error(message: str, path: Path | None) -> str:
    """yara says "/x/y.yar(12): syntax error, ..."; say it as file, line, problem, remedy."""
    match = re.match(r"^(?P<file>.*)\((?P<line>\d+)\): (?P<what>.*)$", message, re.S)
    if match:
        return (
            f"{match['file']}, line {match['line']}: YARA rule error: {match['what']}. "
            "Fix the rule or remove the file from the rule folder."
        )
    where = str(path) if path else "YARA rules"
    return f"{where}: YARA rule error: {message}. Fix the rule or remove the file from the rule folder."


def _parse_action(value: Any, where: str) -> Action | None:
    if value in (None, "", "none"):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected \"quarantine\" or \"reject\", got {value!r}")
    try:
        action = Action.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return action if action > Action.TAG else None


def _parse_score(value: Any, where: str, default: float) -> float:
    if value is None:
        return default
    try:
        score = float(value) if not isinstance(value, bool) else None
    except ValueError:
        score = None
    if score is None or score < 0:
        raise ConfigError(f"{where}: expected a score (a whole number, or a string such as \"2.5\"), got {value!r}")
    return score


def _rule_info(rule: Any, path: Path, default_score: float) -> RuleInfo:
    meta: Mapping[str, Any] = rule.meta
    where = f"{path}: rule {rule.identifier} meta"
    rule_id = str(meta.get("rule_id") or f"SIGNATURE_{rule.identifier.upper()}")
    if not RULE_ID_RE.match(rule_id):
        raise ConfigError(f"{where} rule_id: {rule_id!r} must be UPPER_SNAKE_CASE, e.g. SIGNATURE_MY_RULE")
    score = _parse_score(meta.get("score"), f"{where} score", default_score)
    action = _parse_action(meta.get("action"), f"{where} action")
    description = str(meta.get("description") or f"It matches the signature {rule.identifier}.")
    return RuleInfo(
        identifier=rule.identifier,
        rule_id=rule_id,
        description=description,
        score=score,
        action=action,
        body_score=_parse_score(meta.get("body_score"), f"{where} body_score", score),
        body_action=_parse_action(meta.get("body_action", meta.get("action")), f"{where} body_action"),
        source=path,
        tags=tuple(rule.tags),
    )


# --------------------------------------------------------------------------- scanning


class SignaturesAnalyzer(Analyzer):
    name = "signatures"
    config_schema = CONFIG_SCHEMA

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        self.compiled = compile_rules(settings, context.config)
        self.disabled = frozenset(settings["disabled_rules"])
        self.tag_actions: dict[str, Action] = {}
        for tag, name in settings["tag_actions"].items():
            action = _parse_action(name, f"[signatures] tag_actions {tag}")
            if action is None:
                raise ConfigError(f"[signatures] tag_actions {tag}: expected \"quarantine\" or \"reject\", got {name!r}")
            self.tag_actions[tag] = action
        self.timeout_s = int(settings["timeout_s"])
        self.max_scan_bytes = int(settings["max_scan_bytes"])
        self.scan_html_bodies = bool(settings["scan_html_bodies"])
        self.extract_vba = bool(settings["extract_vba"])
        self.decode_views = bool(settings["decode_hidden_content"])
        self.trusted_form_hosts = tuple(h.lower().strip(".") for h in settings["trusted_form_hosts"] if h.strip("."))

    def targets(self, message: ParsedMessage) -> Iterator[ScanTarget]:
        """Everything to scan: attachments (already flattened: archive members and attached
        messages' parts included), their macro code, and the HTML bodies."""
        for attachment in message.attachments:
            yield from self._attachment_targets(attachment, message)
        if self.scan_html_bodies:
            for inner in iter_all_messages(message):
                for html in inner.html_parts:
                    data = html.encode("utf-8", "surrogateescape")[: self.max_scan_bytes]
                    yield ScanTarget(data, "the message text (HTML)", "html-body", content_type="text/html")

    def _attachment_targets(self, attachment: Attachment, message: ParsedMessage | None = None
                            ) -> Iterator[ScanTarget]:
        if attachment.encrypted or not attachment.data:
            return
        data = attachment.data
        where = f"the attachment {attachment.display_name}"
        truncated = len(data) > self.max_scan_bytes
        yield ScanTarget(data[: self.max_scan_bytes], where, "file", attachment.filename,
                         attachment.content_type, truncated)
        name, ctype, shown = attachment.filename, attachment.content_type, attachment.display_name
        if self.extract_vba:
            code = vba_source(data, message, name or "document")
            if code:
                yield ScanTarget(code.encode("utf-8", "surrogateescape"), f"the macro code in {shown}",
                                 "vba-source", name, ctype)
        if self.decode_views:
            objects, complete = pdf_object_streams_view(data)
            if objects or not complete:
                yield ScanTarget(objects, f"the attachment {shown} (compressed PDF objects)", "pdf-objects", name, ctype,
                                 view_incomplete=not complete)
            decoded = decoded_script_literals(data[: self.max_scan_bytes])
            if decoded:
                yield ScanTarget(decoded, f"the attachment {shown} (content its script decodes)", "decoded-script",
                                 name, ctype)

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        deadline = time.monotonic() + self.timeout_s
        hits: dict[str, _Hits] = {}
        incomplete: list[str] = []
        truncated: list[str] = []
        unread: list[str] = []
        for target in self.targets(message):
            if target.view_incomplete:
                unread.append(target.where)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                incomplete.append(target.where)
                continue
            if target.truncated:
                truncated.append(target.where)
            try:
                matches = self.compiled.rules.match(
                    data=target.data, externals=target.externals(), timeout=max(1, int(remaining + 0.999))
                )
            except yara.TimeoutError:
                incomplete.append(target.where)
                continue
            except yara.Error as exc:  # e.g. too many matches of one string: scan what we can
                incomplete.append(f"{target.where} ({exc})")
                continue
            for match in matches:
                self._record(hits, match, target)
        findings = [self._finding(h) for h in hits.values()]
        if incomplete:
            findings.append(self.finding(
                "SIGNATURE_SCAN_INCOMPLETE", 3.0,
                f"Part of this message could not be checked for harmful content in time ({incomplete[0]}"
                + (f" and {len(incomplete) - 1} more" if len(incomplete) > 1 else "") + "); treat it with care.",
                {"locations": incomplete[:MAX_LOCATIONS], "timeout_s": self.timeout_s},
            ))
        if unread:
            # Held, not passed: a small file whose hidden content unpacks past the bound is
            # built to hide what lies beyond it (ordinary PDFs stay far below).
            findings.append(self.finding(
                "SIGNATURE_HIDDEN_CONTENT_UNREAD", 3.0,
                f"Part of {unread[0].removeprefix('the ')} unpacks to far more than ordinary files do, so it "
                "could not be checked completely; content hidden this way can carry a harmful script, so the "
                "message is held.",
                {"locations": unread[:MAX_LOCATIONS]},
                Action.QUARANTINE,
            ))
        if truncated:
            findings.append(self.finding(
                "SIGNATURE_SCAN_TRUNCATED", 0.5,
                f"An attachment is very large and only its first {self.max_scan_bytes / 1048576:.3g} MB "
                f"were checked ({truncated[0]}).",
                {"locations": truncated[:MAX_LOCATIONS], "max_scan_bytes": self.max_scan_bytes},
            ))
        return findings

    def _record(self, hits: dict[str, _Hits], match: Any, target: ScanTarget) -> None:
        info = self.compiled.info.get((match.namespace, match.rule))
        if info is None or info.rule_id in self.disabled:
            return
        score, action = (info.body_score, info.body_action) if target.is_body else (info.score, info.action)
        if not target.is_body:
            for tag in info.tags:
                forced = self.tag_actions.get(tag)
                if forced is not None and (action is None or forced > action):
                    action = forced
        if target.is_body and score <= 0 and action is None:
            return
        if TRUSTED_FORM_TAG in info.tags and self.forms_post_to_trusted_hosts(target.data):
            return
        entry = hits.setdefault(info.rule_id, _Hits(info))
        entry.score = max(entry.score, score)
        if action is not None and (entry.action is None or action > entry.action):
            entry.action = action
        if target.where not in entry.locations and len(entry.locations) < MAX_LOCATIONS:
            entry.locations.append(target.where)

    def forms_post_to_trusted_hosts(self, data: bytes) -> bool:
        """True when the page has forms and every one posts to a trusted service's host."""
        if not self.trusted_form_hosts:
            return False
        hosts = [url_host(m.group(1).decode("latin-1")) for m in FORM_ACTION_RE.finditer(data)]
        return bool(hosts) and all(
            host and any(host == t or host.endswith("." + t) for t in self.trusted_form_hosts) for host in hosts
        )

    def _finding(self, hit: _Hits) -> Finding:
        info = hit.info
        first = hit.locations[0]
        more = f" (and in {len(hit.locations) - 1} more places)" if len(hit.locations) > 1 else ""
        summary = f"{first[0].upper()}{first[1:]}{more}: {info.description}"
        details = {
            "yara_rule": info.identifier,
            "rule_file": info.source.name,
            "locations": list(hit.locations),
        }
        if info.tags:
            details["tags"] = list(info.tags)
        return self.finding(info.rule_id, hit.score, summary, details, hit.action)
