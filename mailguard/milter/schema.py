"""The [milter] keys: where the MTA connects, timeouts and what a verdict does.

Read by ``mailguard.config`` without importing the milter server."""
from __future__ import annotations

from typing import Any, Mapping

from mailguard.options import Option

CONFIG_SCHEMA: Mapping[str, Option] = {
    "listen": Option(
        "inet:127.0.0.1:8894", "str",
        "Where the MTA connects: \"inet:HOST:PORT\" (Postfix: smtpd_milters = inet:HOST:PORT) or "
        "\"unix:/path/to/socket\" (Postfix: smtpd_milters = unix:/path; a chrooted smtpd sees paths "
        "relative to its chroot). Keep inet on loopback: the protocol has no authentication.",
    ),
    "socket_mode": Option(
        "0660", "str",
        "Permissions of a unix socket, in octal; the MTA's user (postfix) must be able to write to it.",
    ),
    "max_connections": Option(
        64, "int",
        "MTA connections served at once (Postfix opens one per SMTP session). Connections beyond this "
        "are closed at once; the MTA then applies milter_default_action (tempfail: the sender retries).",
        minimum=1,
    ),
    "scan_workers": Option(
        2, "int", "Messages scanned at the same time (threads); more wait their turn.", minimum=1
    ),
    "use_daemon": Option(
        False, "bool",
        "Scan through a running `mailguard daemon` (its [daemon] socket), started with this same configuration "
        "file, instead of in this process's threads: the daemon's prebuilt worker processes use every core, where "
        "the milter's own threads share one, but each message then also costs the hand-over (its bytes and "
        "verdict through the socket), so on a small machine that also runs Postfix it gains little or loses "
        "(docs/performance.md). scan_workers then counts messages sent to the daemon at once (match it to the "
        "daemon's workers). The milter refuses to start when no such daemon answers; a message it cannot scan "
        "later (daemon stopped, a worker killed twice) gets 451, so the sender retries.",
    ),
    "max_message_size": Option(
        26214400, "int",
        "Largest message (headers and body, bytes) the milter will take; keep Postfix's "
        "message_size_limit at or below it. A larger message is refused as oversize says.",
        minimum=1024,
    ),
    "oversize": Option(
        "reject", "str",
        "Answer to a message over max_message_size: reject (552 5.3.4: the sender gets a bounce at once "
        "saying it is too big, instead of retrying for days only to bounce anyway) or tempfail (452 4.3.4, "
        "for an operator who is about to raise the limit). It is never passed unscanned.",
        choices=("reject", "tempfail"),
    ),
    "quarantine": Option(
        "store", "str",
        "Where quarantined messages go: store (kept encrypted in mailguard's quarantine, see [quarantine], "
        "then discarded by the MTA; if storing fails the sender gets 451 and retries) or hold (Postfix's "
        "hold queue, tagged; release with 'postsuper -H QUEUEID').",
        choices=("store", "hold"),
    ),
    "idle_timeout": Option(
        900.0, "float",
        "Seconds to wait for the MTA's next command before closing the connection; longer than "
        "Postfix's smtpd_timeout, since the milter connection waits while the SMTP client is slow.",
        minimum=1,
    ),
    "scan_timeout": Option(
        120.0, "float",
        "Seconds one message may take to scan (and store) before the answer is 451 (the sender retries). "
        "Keep it below Postfix's milter_content_timeout (300 s by default).",
        minimum=1,
    ),
    "outbound_daemon_names": Option(
        [], "list[str]",
        "Postfix service names ({daemon_name}, set with -o syslog_name or milter_macro_daemon_name) whose mail "
        "leaves the practice, e.g. [\"submission\", \"smtps\"]: scanned as outbound (patient data, the "
        "[outbound] policy).",
    ),
    "outbound_authenticated": Option(
        True, "bool",
        "Mail from an authenticated SMTP client ({auth_authen} set: the practice's staff submitting) is outbound.",
    ),
    "outbound_networks": Option(
        [], "list[str]",
        "Client networks (CIDR) whose mail is outbound, e.g. the practice's workstations relaying through Postfix.",
    ),
    "outbound_tls_by_mta": Option(
        False, "bool",
        "The MTA itself enforces verified TLS for outside delivery (Postfix smtp_tls_security_level = verify or "
        "secure): then [outbound] require_tls passes. Otherwise the milter cannot see the next hop's TLS, and "
        "require_tls holds the message in the quarantine.",
    ),
    "progress_interval": Option(
        10.0, "float",
        "While a message is being scanned, tell the MTA every this many seconds that work is going on "
        "(SMFIR_PROGRESS), so its own timeouts do not expire.",
        minimum=0.1,
    ),
}


def check_section(values: Mapping[str, Any], where: str) -> list[str]:
    """The listen form and socket mode, checked at load time as start-up checks them."""
    errors: list[str] = []
    text = values["listen"]
    kind, _, rest = text.partition(":")
    if kind == "unix":
        if not rest.startswith("/"):
            errors.append(f"{where} listen: {text!r}: a unix socket needs an absolute path, e.g. \"unix:/run/mailguard/milter.sock\"")
    elif kind in ("inet", "inet6"):
        port, _, host = rest.partition("@") if "@" in rest else rest.rpartition(":")[::-1]
        if not host.strip("[]") or not port.isdigit() or not 0 <= int(port) <= 65535:
            errors.append(f"{where} listen: {text!r}: expected \"inet:HOST:PORT\" with a port from 0 to 65535")
    else:
        errors.append(f"{where} listen: {text!r} is not \"inet:HOST:PORT\" or \"unix:/path\" "
                      f"(e.g. \"inet:127.0.0.1:8894\")")
    try:
        int(values["socket_mode"], 8)
    except ValueError:
        errors.append(f"{where} socket_mode: {values['socket_mode']!r} is not an octal mode such as \"0660\"")
    return errors
