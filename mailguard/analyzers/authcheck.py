"""What the authentication stage found, as findings a person can read.

The stage (``mailguard.auth``) only records results on ``message.auth``; this analyzer
turns the ones that matter into rules. A DMARC failure of a domain that publishes
p=reject or p=quarantine is the strongest single signal a gateway has: the domain's own
owner says mail like this is not theirs. A DMARC pass gives no finding: it proves the
domain (``proven_domain``, read by the coherence stage), not that the message is harmless.
Results that are "temperror", "none" or not checked never count against a message.
"""
from __future__ import annotations

from typing import Iterable

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.auth.dnsbl import select_zones
from mailguard.message import ParsedMessage
from mailguard.model import Action, AuthResults, Finding
from mailguard.options import Option

# Starting weights (the policy tags at 4.5 by default); bench/fit.py refits the ones that
# do not force an action. AUTH_DMARC_REJECT forces at least a tag: the domain's owner asks
# receivers to refuse such mail, so it is never delivered as if nothing were wrong.
SCORES = {
    "AUTH_DMARC_REJECT": 6.0,
    "AUTH_DMARC_QUARANTINE": 4.0,
    "AUTH_DMARC_FAIL": 0.5,
    "AUTH_SPF_FAIL": 1.5,
    "AUTH_SPF_SOFTFAIL": 0.5,
    "AUTH_DKIM_FAIL": 1.0,
}


def _why(auth: AuthResults) -> str:
    d = auth.from_domain
    if auth.spf == "fail" and auth.spf_domain == d:
        return f"{d}'s own DNS says this server may not send its mail"
    if any(s.result == "fail" for s in auth.dkim):
        return f"its digital signature does not match, and {d}'s DNS does not list this server as one of its own"
    return f"it carries no valid signature of {d}, and {d}'s DNS does not list this server as one of its own"


class AuthcheckAnalyzer(Analyzer):
    name = "authcheck"
    config_schema = {
        "dnsbl_scores": Option(
            {}, "dict[str,float]",
            "Score per blocklist rule id (AUTH_DNSBL_ZEN...) replacing the table's; [policy] scores also works.",
        ),
    }

    def __init__(self, settings, context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        zones = select_zones(context.config.section("auth"), context.config.resolve_path)
        self.zones = {z.name: z for z in zones}

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        auth = message.auth
        if auth is None or auth.source == "not-checked":
            return []
        out: list[Finding] = []
        d = auth.from_domain
        proven = bool(auth.proven_domain)
        details = {"dmarc": auth.dmarc, "policy": auth.dmarc_policy, "spf": auth.spf, "from_domain": d,
                   "source": auth.source}
        if auth.dmarc == "fail" and not proven:
            if auth.dmarc_policy == "reject":
                out.append(self.finding(
                    "AUTH_DMARC_REJECT", SCORES["AUTH_DMARC_REJECT"],
                    f"The sender claims to be {d}, but {_why(auth)}, and {d} asks receivers to reject such mail "
                    "(DMARC fail, p=reject).", details, min_action=Action.TAG))
            elif auth.dmarc_policy == "quarantine":
                out.append(self.finding(
                    "AUTH_DMARC_QUARANTINE", SCORES["AUTH_DMARC_QUARANTINE"],
                    f"The sender claims to be {d}, but {_why(auth)}, and {d} asks receivers to treat such mail "
                    "as suspicious (DMARC fail, p=quarantine).", details))
            else:
                out.append(self.finding(
                    "AUTH_DMARC_FAIL", SCORES["AUTH_DMARC_FAIL"],
                    f"The sender claims to be {d}, but {_why(auth)} (DMARC fail; {d} asks for no action).",
                    details))
        if not proven and auth.spf in ("fail", "softfail") and auth.spf_domain:
            rule = "AUTH_SPF_FAIL" if auth.spf == "fail" else "AUTH_SPF_SOFTFAIL"
            strength = "may not" if auth.spf == "fail" else "should probably not"
            out.append(self.finding(
                rule, SCORES[rule],
                f"The server that delivered this message {strength} send mail for {auth.spf_domain}, "
                f"says {auth.spf_domain}'s own DNS (SPF {auth.spf}).", {"spf_domain": auth.spf_domain}))
        failed = [s for s in auth.dkim if s.result == "fail"]
        if failed and not proven and not any(s.result == "pass" for s in auth.dkim):
            names = ", ".join(sorted({s.domain for s in failed if s.domain})) or "the signer"
            out.append(self.finding(
                "AUTH_DKIM_FAIL", SCORES["AUTH_DKIM_FAIL"],
                f"The message's digital signature from {names} does not match its content: it was changed "
                "after signing, or the signature is forged (DKIM fail).", {"domains": names}))
        overrides = self.settings["dnsbl_scores"]
        for zone_name, listed, meaning in auth.blocklists:
            zone = self.zones.get(zone_name)
            if zone is None:
                continue
            what = "The sending server" if zone.kind == "ip" else f"The domain {listed}"
            out.append(self.finding(
                zone.rule, overrides.get(zone.rule, zone.score),
                f"{what} is on a blocklist: {meaning}.", {"zone": zone_name, "listed": listed}))
        return out
