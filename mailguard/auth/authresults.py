"""Authentication-Results (RFC 8601): reading a trusted upstream's, writing ours, and
finding the incoming ones that claim to be ours.

Parsing and writing use the ``authres`` library. Recognising a header that bears our
authserv-id is deliberately more liberal than parsing: a header that ``authres`` cannot
parse but whose first word is our name is still removed, because a mail client or a later
filter may read it as ours.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import authres
import authres.core
from authres import AuthenticationResultsHeader, DKIMAuthenticationResult, SPFAuthenticationResult
from authres.arc import ARCAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult

from mailguard.headers import _header_lines, fold_header, line_ending, split_head_body
from mailguard.model import AuthResults, DkimSignatureResult

HEADER = "Authentication-Results"
_ID = re.compile(r"\s*([^\s;()]+)")
_DMARC_POLICY = re.compile(r"(?i)\bdmarc\s*=\s*\w+\s*\(([^)]*)\)")
_P_TAG = re.compile(r"(?i)\bp\s*=\s*(none|quarantine|reject)\b")
_SPF_RESULTS = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
_DKIM_RESULTS = {"pass", "fail", "neutral", "temperror", "permerror", "policy", "none"}
_DMARC_RESULTS = {"pass", "fail", "none", "temperror", "permerror"}


def authserv_id_of(value: str) -> str:
    """The authserv-id a header value starts with, lower case: after white space and
    comments nested to any depth (RFC 5322 CFWS), as a token or a quoted-string (RFC 8601
    ``value``). Readers such as ``authres`` skip comments of any depth, so a forged
    ``((((x)))) our.id; dmarc=pass`` is ours to them and must be ours to us, or it survives
    our removal; an unterminated comment hides everything after it."""
    i, n, depth = 0, len(value), 0
    while i < n:
        c = value[i]
        if c == "\\" and depth:
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth and not c.isspace():
            break
        i += 1
    if i >= n:
        return ""
    if value[i] == '"':
        quoted, i = [], i + 1
        while i < n and value[i] != '"':
            if value[i] == "\\" and i + 1 < n:
                i += 1
            quoted.append(value[i])
            i += 1
        return "".join(quoted).strip().lower().rstrip(".")
    match = _ID.match(value, i)
    return match.group(1).strip().lower().rstrip(".") if match else ""


def bears_id(value: str, authserv_id: str) -> bool:
    return bool(authserv_id) and authserv_id_of(value) == authserv_id.lower().rstrip(".")


@dataclass(frozen=True)
class UpstreamResults:
    authserv_id: str
    spf: str
    spf_domain: str
    dkim: tuple[DkimSignatureResult, ...]
    dmarc: str
    dmarc_policy: str
    dmarc_from: str
    arc: str


def _prop(result: authres.core.AuthenticationResult, ptype: str, name: str) -> str:
    for prop in result.properties:
        if prop.type == ptype and prop.name == name and prop.value:
            return str(prop.value).strip().lower()
    return ""


def parse_upstream(value: str) -> UpstreamResults | None:
    """A trusted server's header value, or None when it does not parse."""
    try:
        header = authres.core.AuthenticationResultsHeader.parse_value(authres.all_features(), value)
    except Exception:  # authres raises its own SyntaxError and others on hostile input
        return None
    spf, spf_domain, dmarc, dmarc_from, arc = "none", "", "none", "", "none"
    dkim: list[DkimSignatureResult] = []
    for result in header.results:
        method, outcome = str(result.method).lower(), str(result.result).lower()
        if method == "spf" and outcome in _SPF_RESULTS and spf == "none":
            spf = outcome
            mailfrom = _prop(result, "smtp", "mailfrom")
            spf_domain = mailfrom.rpartition("@")[2] if mailfrom else _prop(result, "smtp", "helo")
        elif method == "dkim" and outcome in _DKIM_RESULTS:
            domain = _prop(result, "header", "d") or _prop(result, "header", "i").rpartition("@")[2]
            if outcome != "none":
                dkim.append(DkimSignatureResult(domain, _prop(result, "header", "s"), outcome))
        elif method == "dmarc" and outcome in _DMARC_RESULTS and dmarc == "none":
            dmarc, dmarc_from = outcome, _prop(result, "header", "from")
        elif method == "arc" and outcome in ("pass", "fail", "none"):
            arc = outcome
    policy = ""
    comment = _DMARC_POLICY.search(value)
    if comment:
        tag = _P_TAG.search(comment.group(1))
        policy = tag.group(1).lower() if tag else ""
    return UpstreamResults(str(header.authserv_id).lower(), spf, spf_domain, tuple(dkim), dmarc, policy,
                           dmarc_from, arc)


def header_value(auth: AuthResults, authserv_id: str, mail_from: str = "", helo: str = "") -> str:
    """Our header's value: "<authserv_id>; spf=...; dkim=...; dmarc=... header.from=..."."""
    results: list[authres.core.AuthenticationResult] = []
    reused = f"from {auth.authserv_id}" if auth.source == "trusted-upstream" else None
    spf_kwargs = {}
    if auth.spf_domain:
        if mail_from and "@" in mail_from:
            spf_kwargs["smtp_mailfrom"] = _safe(mail_from)
        elif helo:
            spf_kwargs["smtp_helo"] = _safe(helo)
        else:
            spf_kwargs["smtp_mailfrom"] = _safe(auth.spf_domain)
    results.append(SPFAuthenticationResult(result=auth.spf, result_comment=reused, **spf_kwargs))
    if auth.dkim:
        for sig in auth.dkim:
            kwargs = {"header_d": _safe(sig.domain)} if sig.domain else {}
            if sig.selector:
                kwargs["header_s"] = _safe(sig.selector)
            results.append(DKIMAuthenticationResult(result=sig.result, **kwargs))
    else:
        results.append(DKIMAuthenticationResult(result="none"))
    comment = []
    if auth.dmarc_policy:
        comment.append(f"p={auth.dmarc_policy}")
    if auth.proven_domain and auth.dmarc != "pass":
        comment.append("override=trusted-arc")
    dmarc_kwargs = {"header_from": _safe(auth.from_domain)} if auth.from_domain else {}
    results.append(DMARCAuthenticationResult(result=auth.dmarc, result_comment=" ".join(comment) or None,
                                             **dmarc_kwargs))
    if auth.arc != "none":
        results.append(ARCAuthenticationResult(result=auth.arc))
    text = str(AuthenticationResultsHeader(authserv_id=_safe(authserv_id) or "localhost", results=results))
    return text.split(":", 1)[1].strip()


_UNSAFE = re.compile(r"[^A-Za-z0-9@._+\-=]")


def _safe(value: str) -> str:
    """Only characters that cannot break the header's syntax (a hostile MAIL FROM or d=)."""
    return _UNSAFE.sub("", value)[:200]


def is_ours(name: str, value: str, authserv_id: str) -> bool:
    """An Authentication-Results field that claims to be written by us."""
    return name.strip().lower() == HEADER.lower() and bears_id(value, authserv_id)


def stamp(raw: bytes, auth: AuthResults | None, authserv_id: str, mail_from: str = "", helo: str = "") -> bytes:
    """Remove every incoming Authentication-Results bearing our authserv-id, and (when
    authentication ran) put ours on top. Other header fields stay byte for byte."""
    head, sep, body = split_head_body(raw)
    eol = line_ending(raw)
    if sep and b"authentication-results" not in head.lower():  # nothing to remove: the usual case
        return raw if auth is None else fold_header(HEADER, header_value(auth, authserv_id, mail_from, helo), eol) + raw
    kept = []
    for field in _header_lines(head):
        name, colon, value = field.partition(b":")
        if colon and is_ours(name.decode("latin-1"), value.decode("latin-1"), authserv_id):
            continue
        kept.append(field)
    added = b""
    if auth is not None:
        added = fold_header(HEADER, header_value(auth, authserv_id, mail_from, helo), eol)
    if not sep and added:
        sep = eol
        if kept and not kept[-1].endswith(b"\n"):
            kept[-1] += eol
    return added + b"".join(kept) + sep + body
