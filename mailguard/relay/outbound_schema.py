"""The [outbound] keys: the relay's second listener, for mail leaving the practice.

Read by ``mailguard.config`` without importing the SMTP server. The listener, next hop and
internal domains are a contract (DESIGN.md "Outbound listener"); the rest is the policy
for patient data and misdirected mail, documented in docs/outbound.md.
"""
from __future__ import annotations

from typing import Mapping

from mailguard.options import Option

PHI_ACTIONS = ("audit", "warn", "require_tls", "hold", "refuse")

CONFIG_SCHEMA: Mapping[str, Option] = {
    "listen": Option(
        "", "str",
        "Where `mailguard serve` takes outgoing mail from the practice's own mail server or clients, as "
        "\"host:port\" (e.g. \"127.0.0.1:10027\"); empty: no outbound listener. Mail is scanned (malware, "
        "phishing from a compromised account, patient data) and handed to next_hop.",
    ),
    "next_hop": Option(
        "", "str",
        "The provider's smarthost that delivers outgoing mail, as \"host:port\". Required with listen. The "
        "sender's DATA is answered only after it accepted the message, or the message was held or refused.",
    ),
    "internal_domains": Option(
        [], "list[str]",
        "The practice's own domains (subdomains included). Recipients there are internal: patient data to them "
        "passes. Every other recipient is outside.",
    ),
    "trusted_networks": Option(
        ["127.0.0.0/8", "::1/128"], "list[str]",
        "Client networks (CIDR) allowed to hand mail to the outbound listener: the practice's mail server and "
        "its workstations. Others are refused with 550 5.7.1 (never an open relay).",
    ),
    "next_hop_tls": Option(
        "opportunistic", "str",
        "STARTTLS to the next hop for ordinary mail: opportunistic (when offered, certificate not checked), "
        "required (certificate checked), or none. Patient data under require_tls always needs verified TLS.",
        choices=("opportunistic", "required", "none"),
    ),
    "next_hop_ca_file": Option(
        "", "path", "CA certificates (PEM) for verifying the next hop's certificate; empty: the system's."
    ),
    "next_hop_timeout": Option(
        60.0, "float", "Seconds to wait for each step with the next hop; past it the sender gets 451.", minimum=1
    ),
    "quarantine_at": Option(
        15.0, "float",
        "Phishing-like score from which outgoing mail is held as what a compromised account sends. Higher than "
        "[policy] quarantine_at: staff's own mail is rarely phishing, and service notices staff forward score "
        "10-15 (bench/outbound.py: 0 of 197 notifications held at 15, 8 at 10; 25% of the phishing corpus held "
        "at 15). Forced actions (malware signatures, dangerous attachments) hold whatever the score.",
        minimum=0,
    ),
    "phi_low": Option(
        "audit", "str",
        "What happens to mail to outside recipients with patient data of low confidence: audit (deliver, log "
        "the kinds found), warn (deliver and send the sender a notice), require_tls (deliver only over verified "
        "TLS, otherwise hold), hold (keep in the quarantine for review) or refuse (550 with the reason).",
        choices=PHI_ACTIONS,
    ),
    "phi_medium": Option(
        "require_tls", "str", "The same for medium confidence. The default holds patient data that would "
        "leave over a hop without verified TLS.", choices=PHI_ACTIONS,
    ),
    "phi_high": Option("require_tls", "str", "The same for high confidence.", choices=PHI_ACTIONS),
    "business_associates": Option(
        [], "list[str]",
        "Domains (\"billing-partner.example\") or addresses of business associates (billing, labs, "
        "transcription) who may receive patient data: delivered to them whenever the next hop has verified "
        "TLS, whatever phi_* says; otherwise held.",
    ),
    "consent_file": Option(
        "", "path",
        "File of patients who asked for unencrypted email after being warned (HHS permits it): one "
        "\"sha256:<hex>\" line per address, the SHA-256 of the lower-cased address (`mailguard outbound "
        "consent-hash ADDRESS` prints it; the file never holds the addresses). Mail to them is audited only.",
    ),
    "notify_sender": Option(
        True, "bool",
        "Send the sender a notice when a message is held, or delivered with action warn: which kinds of patient "
        "data were found and how many (never the values) and what to do.",
    ),
    "notice_from": Option(
        "", "str", "From address of those notices; empty: postmaster@ the relay's hostname."
    ),
    "history_file": Option(
        "", "path",
        "Where the outbound listener keeps the recipient domains the practice writes to (a small JSON file of "
        "domain counts), to catch misdirected mail; empty: no history, only known_domains.",
    ),
    "known_domains": Option(
        [], "list[str]",
        "Domains the practice writes to, counted as usual from the start (partners, labs, payers).",
    ),
    "history_min_messages": Option(
        3, "int", "Messages to a domain before it counts as one the practice usually writes to.", minimum=1
    ),
    "misdirected": Option(
        "hold", "str",
        "A recipient domain that looks like one the practice usually writes to (labcorp.co for labcorp.com): "
        "hold (keep for review, with the explanation), refuse (550 with the explanation), or audit (log only).",
        choices=("audit", "hold", "refuse"),
    ),
}
