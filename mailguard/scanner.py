"""The scanning core: parse once, authenticate the sender, run every enabled analyzer, let
the policy decide."""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Iterable, Sequence

from mailguard.analyzers import analyzer_classes
from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.auth.schema import our_authserv_id
from mailguard.coherence import Coherence
from mailguard.config import Config
from mailguard.message import ParseLimits, ParsedMessage, parse
from mailguard.model import AnalyzerError, AuthResults, Envelope, Finding, Verdict
from mailguard.policy import Decision, Policy

if TYPE_CHECKING:
    from mailguard.auth.stage import Authenticator


# Imported where they are used (a cold `mailguard check` need not pay for them), and by
# Scanner.preload for the services: every module a scan may import at its first use.
PRELOADED_MODULES = ("zipfile", "pypdf", "pypdf.errors", "pypdf.filters", "magic")
PRELOADED_AUTH_MODULES = ("dkim", "dkim.util", "spf", "dns.exception", "dns.name", "dns.nameserver", "dns.resolver")
PRELOADED_PHI_MODULES = ("stdnum.us.ssn", "stdnum.luhn")


class Scanner:
    """Built once (rules and signatures compiled once), then shared between threads.

    ``scan`` keeps no state between calls; analyzers only read what they built in their
    constructors (plus thread-safe caches).
    """

    def __init__(self, config: Config | None = None, extra_analyzers: Sequence[Analyzer] = ()) -> None:
        """``extra_analyzers`` are ready-built analyzer objects run after the registered
        ones: for library users who want one without packaging an entry point."""
        self.config = config or Config.default()
        self.limits = ParseLimits.from_settings(self.config.section("limits"))
        self.policy = Policy.from_config(self.config)
        self.time_budget_s = self.config.section("policy")["analyzer_time_budget_ms"] / 1000.0
        context = AnalyzerContext(self.config)
        analyzers: list[Analyzer] = []
        for name, cls in analyzer_classes().items():
            settings = self.config.section(name)
            if settings.get("enabled", True):
                analyzers.append(cls(settings, context))
        analyzers.extend(extra_analyzers)
        self.analyzers: tuple[Analyzer, ...] = tuple(analyzers)
        self.authenticator = authenticator(self.config)
        # for the relay's and milter's headers; looked up here, once, never on an event loop
        self.authserv_id = our_authserv_id(self.config)
        self.coherence = _coherence(self.config, self.analyzers, context)

    def parse(self, raw: bytes, envelope: Envelope | None = None) -> ParsedMessage:
        return parse(raw, envelope, self.limits)

    def preload(self) -> None:
        """For a long-running service (daemon, serve, milter): import now what a scan
        otherwise imports at the first message that needs it, so that no message waits for
        it and a daemon's workers share it from the fork. On this project's machines: the
        first PDF waited 66 ms for pypdf, the first Office file 71 ms for oletools' olevba,
        the first DKIM signature 68 ms for dkimpy, the first SPF check 42 ms for pyspf and
        the first lookup 47 ms for dnspython; a daemon worker replaced after
        ``max_requests_per_worker`` paid them all again. ``mailguard check`` leaves them
        lazy: a check of saved files may need none of them (see docs/performance.md)."""
        import importlib

        from mailguard.analyzers.hidden_content import olevba

        olevba()  # with pyparsing's deprecation warnings silenced, as at its first use
        for module in PRELOADED_MODULES:
            importlib.import_module(module)
        if self.authenticator is not None:
            for module in PRELOADED_AUTH_MODULES:
                importlib.import_module(module)
        if any(a.name == "phi" for a in self.analyzers):
            for module in PRELOADED_PHI_MODULES:
                importlib.import_module(module)

    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict:
        started = time.perf_counter()
        message = self.parse(raw, envelope)
        return self.scan_parsed(message, started)

    def scan_parsed(self, message: ParsedMessage, started: float | None = None, *, attached: bool = True) -> Verdict:
        """``attached``: also analyse the attached messages (see ``_worst_attached``)."""
        started = time.perf_counter() if started is None else started
        findings: list[Finding] = list(message.problems)
        errors: list[AnalyzerError] = []
        message = self._authenticate(message, errors)
        for analyzer in self.analyzers:
            t0 = time.perf_counter()
            try:
                produced = analyzer.analyze(message)
                findings.extend(_checked(produced, analyzer.name))
            except Exception as exc:  # an analyzer bug must not lose or pass mail silently
                errors.append(AnalyzerError(analyzer.name, f"{type(exc).__name__}: {exc}"[:500]))
                continue
            took = time.perf_counter() - t0
            if took > self.time_budget_s:
                errors.append(
                    AnalyzerError(
                        analyzer.name,
                        f"took {took * 1000:.0f} ms, over its budget of {self.time_budget_s * 1000:.0f} ms",
                    )
                )
        summary = ""
        if self.coherence is not None:
            try:
                review = self.coherence.review(message, findings)
                findings[:0] = review.findings  # first: it says the claim, request, destination
                summary = review.sentence
            except Exception as exc:  # as for an analyzer: the policy's on_error decides
                errors.append(AnalyzerError("coherence", f"{type(exc).__name__}: {exc}"[:500]))
        decision = self.policy.decide(findings, errors)
        if attached and message.attached_messages:
            decision, inner_summary = self._worst_attached(message, decision, errors)
            summary = inner_summary or summary
        return Verdict(
            score=decision.score,
            action=decision.action,
            findings=decision.findings,
            errors=tuple(errors),
            message_id=message.message_id,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
            tempfail=decision.tempfail,
            auth=message.auth,
            summary=summary,
        )

    def _worst_attached(
        self, message: ParsedMessage, outer: Decision, errors: list[AnalyzerError]
    ) -> tuple[Decision, str]:
        """Attached messages (message/rfc822, nested) are analysed like the outer one and the
        worst verdict wins, so wrapping a phish in a forward, once or twenty times, cannot
        lower it. Nothing is proven about an attached message's sender (no DNS for it). At
        most MAX_ATTACHED_SCANS of them; the parser bounds their depth ([limits] max_depth).
        Also returns the worst attached message's summary when it wins ("" otherwise)."""
        worst, worst_findings, tempfail = outer, outer.findings, outer.tempfail
        summary = ""
        for inner in _attached_flat(message, MAX_ATTACHED_SCANS):
            verdict = self.scan_parsed(dataclasses.replace(inner, auth=AuthResults()), attached=False)
            errors.extend(verdict.errors)
            tempfail = tempfail or verdict.tempfail
            if (verdict.action, verdict.score) > (worst.action, worst.score):
                marked = tuple(dataclasses.replace(f, summary=f"In an attached message: {f.summary}",
                                                   details={**f.details, "attached_message": True})
                               for f in verdict.findings)
                worst = Decision(verdict.score, verdict.action, marked, verdict.tempfail)
                worst_findings = marked + tuple(f for f in outer.findings if f.analyzer == "message")
                summary = f"In an attached message: {verdict.summary}" if verdict.summary else ""
        return Decision(worst.score, max(worst.action, outer.action), worst_findings, tempfail), summary

    def _authenticate(self, message: ParsedMessage, errors: list[AnalyzerError]) -> ParsedMessage:
        """SPF, DKIM, DMARC, ARC before the analyzers (mailguard.auth); a failure here is an
        ``auth`` error entry, and the message goes on unauthenticated."""
        if self.authenticator is None or message.auth is not None:
            return message
        try:
            return dataclasses.replace(message, auth=self.authenticator.authenticate(message))
        except Exception as exc:  # a bug in authentication must not lose or pass mail silently
            errors.append(AnalyzerError("auth", f"{type(exc).__name__}: {exc}"[:500]))
            return message


def authenticator(config: Config) -> "Authenticator | None":
    """The authentication stage, or None when [auth] enabled = false."""
    if not config.section("auth")["enabled"]:
        return None
    from mailguard.auth.stage import Authenticator

    return Authenticator(config)


MAX_ATTACHED_SCANS = 32  # attached messages analysed per message; more are still parsed (and bounded)


def _attached_flat(message: ParsedMessage, limit: int) -> list[ParsedMessage]:
    """Every attached message, nested ones included, breadth first, at most ``limit``."""
    found: list[ParsedMessage] = []
    queue = list(message.attached_messages)
    while queue and len(found) < limit:
        inner = queue.pop(0)
        found.append(inner)
        queue.extend(inner.attached_messages)
    return found


def _coherence(config: Config, analyzers: Sequence[Analyzer], context: AnalyzerContext) -> Coherence | None:
    """The coherence stage borrows the lookalike analyzer's brand table and ownership (built
    here when that analyzer is turned off, so coherence still knows the brands)."""
    if not config.section("coherence")["enabled"]:
        return None
    lookalike = next((a for a in analyzers if a.name == "lookalike"), None)
    if lookalike is None:
        from mailguard.analyzers.lookalike import LookalikeAnalyzer

        lookalike = LookalikeAnalyzer(config.section("lookalike"), context)
    return Coherence(lookalike)


def _checked(produced: Iterable[Finding] | None, name: str) -> list[Finding]:
    out = []
    for item in produced or ():
        if not isinstance(item, Finding):
            raise TypeError(f"analyzer {name} returned {type(item).__name__}, not a Finding")
        out.append(item)
    return out
