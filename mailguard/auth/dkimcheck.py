"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, keys from our resolver.

dkimpy turns a key lookup that timed out into a plain "signature invalid"; a gateway must
not call that a failure (a DNS outage would fail every signed message). So the dnsfunc we
hand it records what DNS said, and a signature whose key lookup was temporary is reported
"temperror", one whose key does not exist "permerror", and only a signature checked against
its real key and found wrong is "fail". dkimpy also turns a key record it cannot use (bad
base64, an empty p= that revokes the key, garbage after k=) into "signature invalid": that is
"permerror" here too, since nothing was checked.

Limits the sender cannot raise (each costs us, not the sender):

- ``MAX_KEY_BITS``, ``MAX_EXPONENT_BITS``: dkimpy verifies RSA in pure Python
  (``pow(signature, e, n)``), so the cost is the key's, and the key is the sender's. A
  16384-bit modulus with a 16384-bit exponent took 8 s per signature, 5 signatures 40 s; a
  64 KB key record with a large exponent, hours. A key over the limits (or a record over
  ``MAX_KEY_RECORD_CHARS``) is "permerror", never checked.
- A signature whose ``h=`` does not cover From is "permerror" (RFC 6376 6.1.1: the verifier
  MUST ignore it): it would prove nothing about the From a person reads.
- A signature with ``l=`` shorter than the body proves only the first ``l`` bytes; what was
  appended after signing (a phishing paragraph, a link) is not signed. Such a signature is
  "policy" (RFC 8601: valid, but not acceptable here) and does not count for DMARC.
- ``ARC_MAX_SETS``: a chain with a higher i= or more header fields than that many sets hold
  fails at once; dkimpy would otherwise verify every instance, two key lookups, two RSA
  checks and a hash of the whole body per set: 400 forged sets took 403 queries and 2.4 s,
  50 valid sets on a 2 MB body 5.6 s. RFC 8617 allows 50; a real chain has a set per
  forwarder (one to three), so 10 is ours: a longer chain only loses its vouching.
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

#: Largest RSA modulus verified (RFC 8301 asks verifiers for 1024 to 4096 bits).
MAX_KEY_BITS = 8192
#: Largest RSA public exponent verified, OpenSSL's bound for large moduli
#: (OPENSSL_RSA_MAX_PUBEXP_BITS); real DKIM keys use 65537 (17 bits).
MAX_EXPONENT_BITS = 64
#: Longest key record parsed: an 8192-bit RSA key is about 1,450 characters; dkimpy's pure
#: Python ASN.1 took 0.19 s for a 62 KB record before the size could even be checked.
MAX_KEY_RECORD_CHARS = 4096
#: Most ARC sets a chain may have to be verified (RFC 8617 allows i= up to 50; see above).
ARC_MAX_SETS = 10
#: Most body bytes canonicalized and hashed for DKIM per message, over all its signatures:
#: dkimpy canonicalizes and hashes the whole body again for each signature, in Python
#: (relaxed canonicalization of a body of short white-space runs costs about 36 ns a byte),
#: so ``max_signatures`` (5) signatures, each with another c= and l=, over a 24 MiB body
#: (the relay's size limit) took 4.6 s, over 64 MiB ([limits] max_message_bytes) about 12 s.
#: A signature that would go over it is "neutral" (not checked), as one past
#: ``max_signatures``: one or two signatures over any body the relay accepts are checked.
MAX_HASHED_BODY_BYTES = 64 * 1024 * 1024
UNUSABLE = "unusable"  # a key status of ours: the record exists but is no key we verify with


@dataclass
class _KeyLookups:
    """What DNS answered for each key name dkimpy asked about (one verification)."""

    resolver: Resolver
    statuses: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        answer = self.resolver.txt(text)
        key = text.rstrip(".").lower()
        self.statuses[key] = answer.status
        if not answer.found or not answer.records:
            return None
        record = answer.records[0].encode("utf-8", "replace")
        if not _usable_key(text, record):
            self.statuses[key] = UNUSABLE
            return None
        return record


def _usable_key(name: str, record: bytes) -> bool:
    """Whether dkimpy can parse the key record (at most ``MAX_KEY_RECORD_CHARS``), and an RSA
    key is within ``MAX_KEY_BITS`` and ``MAX_EXPONENT_BITS`` (checked before dkimpy spends the
    CPU)."""
    import dkim

    if len(record) > MAX_KEY_RECORD_CHARS:
        return False
    try:
        pk, _bits, ktag, _tlsrpt = dkim.evaluate_pk(name, record)
    except Exception:  # KeyFormatError, binascii.Error, and whatever hostile ASN.1 trips
        return False
    if ktag == b"rsa":
        return (int(pk["modulus"]).bit_length() <= MAX_KEY_BITS
                and int(pk["publicExponent"]).bit_length() <= MAX_EXPONENT_BITS)
    return pk is not None


def _tags(value: bytes) -> dict[bytes, bytes]:
    from dkim.util import InvalidTagValueList, parse_tag_value

    try:
        return parse_tag_value(value)
    except (InvalidTagValueList, ValueError, IndexError):
        return {}


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip().lower()


def _signs_from(tags: dict[bytes, bytes]) -> bool:
    return b"from" in {name.strip().lower() for name in tags.get(b"h", b"").split(b":")}


def _covers_body(verifier: object, tags: dict[bytes, bytes]) -> bool:
    """False when ``l=`` leaves part of the (canonicalized) body unsigned."""
    length = tags.get(b"l")
    if length is None:
        return True
    from dkim.canonicalization import CanonicalizationPolicy

    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
        return len(policy.canonicalize_body(verifier.body)) <= int(length)  # type: ignore[attr-defined]
    except Exception:  # dkimpy verified it, so this does not happen; never a pass on doubt
        return False


#: Fields a message has once: a signature that signs fewer instances of one than the message
#: has lets a sender add one above the signed one (dkimpy verifies the last instance, mail
#: programs and our analyzers read the first; RFC 6376 8.15).
SINGLE_FIELDS = frozenset({b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id",
                           b"content-type", b"mime-version", b"content-transfer-encoding"})


def _unsigned_instance(tags: dict[bytes, bytes], headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a single-instance field the signature signs occurs more often than signed."""
    signed: dict[bytes, int] = {}
    for name in tags.get(b"h", b"").split(b":"):
        key = name.strip().lower()
        if key in SINGLE_FIELDS:
            signed[key] = signed.get(key, 0) + 1
    if not signed:
        return False
    present: dict[bytes, int] = {}
    for name, _value in headers:
        key = name.strip().lower()
        if key in signed:
            present[key] = present.get(key, 0) + 1
    return any(present.get(key, 0) > count for key, count in signed.items())


def verify_dkim(resolver: Resolver, raw: bytes, max_signatures: int) -> tuple[DkimSignatureResult, ...]:
    """Every DKIM-Signature, topmost first (at most ``max_signatures``; later ones "neutral",
    not checked). "policy": valid, but ``l=`` leaves content after it unsigned, or a field
    it signs has an unsigned second instance (``_unsigned_instance``)."""
    import dkim  # here, not at the top: with dnspython it costs 55 ms, and saved files are not verified by default

    try:
        verifier = dkim.DKIM(raw, logger=_QUIET, timeout=resolver.settings.timeout)
    except Exception:  # dkimpy could not split the message at all
        return ()
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    hashed = 0  # body bytes canonicalized and hashed so far (MAX_HASHED_BODY_BYTES)
    body_size = len(getattr(verifier, "body", b"") or b"")
    for index, value in enumerate(signatures):
        tags = _tags(value)
        domain, selector = _text(tags.get(b"d")), _text(tags.get(b"s"))
        if index >= max_signatures or (hashed and hashed + body_size > MAX_HASHED_BODY_BYTES):
            results.append(DkimSignatureResult(domain, selector, "neutral"))
            continue
        if not _signs_from(tags):
            results.append(DkimSignatureResult(domain, selector, "permerror"))  # RFC 6376 6.1.1
            continue
        lookups = _KeyLookups(resolver)
        hashed += body_size
        try:
            valid = bool(verifier.verify(idx=index, dnsfunc=lookups))
            result = "pass" if valid else "fail"
            if valid and b"l" in tags:
                hashed += body_size  # _covers_body canonicalizes the body once more
            if valid and (not _covers_body(verifier, tags) or _unsigned_instance(tags, verifier.headers)):
                result = "policy"
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
            elif key_status in (NXDOMAIN, NODATA, UNUSABLE):
                result = "permerror"  # no key we can use: RFC 6376 6.1.2 PERMFAIL, not a forgery proof
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
        highest, arc_headers = verifier.sorted_arc_headers()
    except Exception:
        return ArcResult("none")
    if highest > ARC_MAX_SETS or len(arc_headers) > 3 * ARC_MAX_SETS:
        return ArcResult("fail")  # more sets than we verify (RFC 8617 5.2 at 50); nothing looked up
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
