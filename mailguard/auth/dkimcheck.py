"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, keys from our resolver.

dkimpy turns a key lookup that timed out into a plain "signature invalid"; a gateway must
not call that a failure (a DNS outage would fail every signed message). So the dnsfunc we
hand it records what DNS said, and a signature whose key lookup was temporary is reported
"temperror", one whose key does not exist "permerror", and only a signature checked against
its real key and found wrong is "fail".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mailguard.auth.resolver import NODATA, NXDOMAIN, TEMPERROR, Resolver
from mailguard.model import DkimSignatureResult

# dkimpy logs every failed signature at ERROR; our findings say it in words instead.
_QUIET = logging.getLogger("mailguard.auth.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
_QUIET.setLevel(logging.CRITICAL + 1)  # even if logging is reconfigured later


@dataclass
class _KeyLookups:
    """What DNS answered for each key name dkimpy asked about (one verification)."""

    resolver: Resolver
    statuses: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        answer = self.resolver.txt(text)
        self.statuses[text.rstrip(".").lower()] = answer.status
        if not answer.found or not answer.records:
            return None
        return answer.records[0].encode("utf-8", "replace")


def _tags(value: bytes) -> dict[bytes, bytes]:
    from dkim.util import InvalidTagValueList, parse_tag_value

    try:
        return parse_tag_value(value)
    except (InvalidTagValueList, ValueError, IndexError):
        return {}


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip().lower()


def verify_dkim(resolver: Resolver, raw: bytes, max_signatures: int) -> tuple[DkimSignatureResult, ...]:
    """Every DKIM-Signature, topmost first (at most ``max_signatures``; later ones "neutral",
    not checked)."""
    import dkim  # here, not at the top: with dnspython it costs 55 ms, and saved files are not verified by default

    try:
        verifier = dkim.DKIM(raw, logger=_QUIET, timeout=resolver.settings.timeout)
    except Exception:  # dkimpy could not split the message at all
        return ()
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for index, value in enumerate(signatures):
        tags = _tags(value)
        domain, selector = _text(tags.get(b"d")), _text(tags.get(b"s"))
        if index >= max_signatures:
            results.append(DkimSignatureResult(domain, selector, "neutral"))
            continue
        lookups = _KeyLookups(resolver)
        try:
            valid = bool(verifier.verify(idx=index, dnsfunc=lookups))
            result = "pass" if valid else "fail"
        except dkim.ValidationError as exc:  # the body was changed after signing: a real failure
            valid, result = False, "fail" if "body hash mismatch" in str(exc) else "permerror"
        except dkim.DKIMException:  # malformed signature or key: RFC 8601 permerror
            valid, result = False, "permerror"
        except Exception:  # anything else dkimpy trips on in hostile input
            valid, result = False, "permerror"
        if not valid:
            key_status = lookups.statuses.get(f"{selector}._domainkey.{domain}")
            if key_status == TEMPERROR:
                result = "temperror"
            elif key_status in (NXDOMAIN, NODATA):
                result = "permerror"  # no key published: RFC 6376 6.1.2 PERMFAIL, not a forgery proof
        results.append(DkimSignatureResult(domain, selector, result))
    return tuple(results)


@dataclass(frozen=True)
class ArcResult:
    result: str  # pass | fail | none | temperror
    sealers: tuple[str, ...] = ()  # ARC-Seal d=, newest (highest i=) first
    newest_aar: str = ""  # the newest ARC-Authentication-Results value (what its sealer saw)


def verify_arc(resolver: Resolver, raw: bytes) -> ArcResult:
    import dkim

    try:
        verifier = dkim.ARC(raw, logger=_QUIET, timeout=resolver.settings.timeout)
    except Exception:
        return ArcResult("none")
    seals: list[tuple[int, str]] = []
    aars: dict[int, str] = {}
    for name, value in verifier.headers:
        lname = name.lower()
        if lname == b"arc-seal":
            tags = _tags(value)
            instance = _text(tags.get(b"i"))
            if instance.isdigit():
                seals.append((int(instance), _text(tags.get(b"d"))))
        elif lname == b"arc-authentication-results":
            text = value.decode("utf-8", "replace").strip()
            head, _, rest = text.partition(";")
            head = head.strip().lower()
            if head.startswith("i=") and head[2:].isdigit():
                aars[int(head[2:])] = rest.strip()
    if not seals:
        return ArcResult("none")
    seals.sort(reverse=True)
    sealers = tuple(domain for _, domain in seals)
    lookups = _KeyLookups(resolver)
    try:
        cv, _data, _reason = verifier.verify(dnsfunc=lookups)
    except Exception:
        cv = dkim.CV_Fail
    if cv == dkim.CV_Pass:
        result = "pass"
    elif TEMPERROR in lookups.statuses.values():
        result = "temperror"
    else:
        result = "fail"
    return ArcResult(result, sealers, aars.get(seals[0][0], ""))
