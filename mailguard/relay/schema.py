"""The [relay] keys: where `mailguard serve` listens, where it delivers, and its limits.

Read by ``mailguard.config`` without importing the SMTP server."""
from __future__ import annotations

from typing import Any, Mapping

from mailguard.options import Option

CONFIG_SCHEMA: Mapping[str, Option] = {
    "listen": Option(
        "127.0.0.1:10025", "str",
        "Address and port the relay listens on, as \"host:port\" (\"[::]:25\" for every IPv6 and IPv4 address). "
        "Use \"0.0.0.0:25\" when mailguard is the MX; keep a loopback address when it sits beside Postfix as a "
        "content filter.",
    ),
    "downstream": Option(
        "127.0.0.1:10026", "str",
        "The practice's real mail server, as \"host:port\": every accepted message is handed to it with its "
        "original envelope, and its reply is passed back to the sender.",
    ),
    "hostname": Option("", "str", "Name in the greeting and in EHLO to the downstream server; empty: this machine's name."),
    "relay_domains": Option(
        [], "list[str]",
        "Recipient domains accepted from anyone, e.g. [\"practice.example\"] (subdomains included). Recipients "
        "in other domains are refused with 550 5.7.1 unless the client is in trusted_networks: never an open relay.",
    ),
    "trusted_networks": Option(
        [], "list[str]",
        "Client networks (CIDR, e.g. \"127.0.0.1/32\", \"192.168.10.0/24\") allowed to send to any domain: the "
        "practice's own server or Postfix in a content_filter arrangement. Empty: none.",
    ),
    "verify_recipients": Option(
        False, "bool",
        "Ask the downstream server about each recipient at RCPT (answers cached for 10 minutes), so an unknown "
        "address is refused on its own (550 5.1.1) instead of the whole message at the end of DATA. Useful "
        "when mailguard is the MX; Postfix as a before-queue proxy checks recipients itself.",
    ),
    "max_message_bytes": Option(
        26_214_400, "int", "Largest message accepted, in bytes (advertised as SIZE); larger ones get 552.", minimum=1024
    ),
    "max_connections": Option(
        100, "int", "Simultaneous client connections; more are refused with 421 so they retry later.", minimum=1
    ),
    "max_connections_per_client": Option(
        20, "int",
        "Simultaneous connections from one client address (as Postfix's smtpd_client_connection_count_limit); "
        "more are refused with 421, so one sender cannot take every slot of max_connections. Clients in "
        "trusted_networks are not limited.", minimum=1,
    ),
    "junk_command_limit": Option(
        100, "int",
        "NOOP, RSET, VRFY and HELP commands, and commands answered with a 5xx (a refused RCPT, a nested MAIL, "
        "a failed AUTH), a client may send per mail transaction (as Postfix's smtpd_junk_command_limit); one more "
        "and the session is closed with 421. These commands also never extend command_timeout, so a client cannot "
        "hold a session open by sending NOOP or a refused command.", minimum=1,
    ),
    "command_timeout": Option(
        300.0, "float", "Seconds a client may stay silent between commands before it is disconnected.", minimum=1
    ),
    "data_timeout": Option(
        600.0, "float", "Seconds a client has to send a whole message after DATA (stops trickling clients).",
        minimum=1,
    ),
    "scan_queue_timeout": Option(
        120.0, "float",
        "Seconds a message may wait for a free scanning worker before the sender gets 451; the scan itself "
        "then has scan_timeout.", minimum=1,
    ),
    "scan_timeout": Option(
        120.0, "float", "Seconds a scan may take before the message is answered as on_error says.", minimum=1
    ),
    "downstream_timeout": Option(
        300.0, "float",
        "Seconds to wait for each command step with the downstream server (greeting, EHLO, MAIL, each RCPT, "
        "DATA): RFC 5321 section 4.5.3.2 gives 5 minutes. Past it the sender gets 451 and retries; nothing "
        "has been delivered yet at those steps.", minimum=1,
    ),
    "downstream_data_timeout": Option(
        300.0, "float",
        "Seconds to wait for the downstream server's reply to the end of the message. Keep it long: a "
        "message the downstream accepted after this time was answered 451 and is sent again (a duplicate); "
        "keep it below the sender's own 10 minutes (RFC 5321 section 4.5.3.2) minus scan_timeout, so our "
        "answer reaches the sender before it gives up.", minimum=1,
    ),
    "downstream_tls": Option(
        "opportunistic", "str",
        "STARTTLS to the downstream server: opportunistic (when offered, certificate not checked), required "
        "(refuse to deliver without it; certificate checked unless downstream_tls_verify = false), or none.",
        choices=("opportunistic", "required", "none"),
    ),
    "downstream_tls_verify": Option(
        True, "bool", "With downstream_tls = \"required\": check the server's certificate and name."
    ),
    "downstream_ca_file": Option(
        "", "path", "CA certificates (PEM) for checking the downstream server; empty: the system's."
    ),
    "tls_cert": Option("", "path", "Certificate chain (PEM) for STARTTLS to clients; STARTTLS is offered when set."),
    "tls_key": Option("", "path", "Private key (PEM) of tls_cert."),
    "require_tls": Option(False, "bool", "Refuse mail from clients that have not started TLS (530). Needs tls_cert."),
    "pool": Option(
        "processes", "str",
        "What scans: processes (the default: one per worker, each with its own compiled rules; a scan that "
        "overruns scan_timeout is stopped by killing its process, which is replaced), threads (one shared set "
        "of rules, starts at once, but an overrun scan cannot be stopped: its slot is freed and a new thread "
        "takes its place while the old one burns CPU until it finishes) or daemon (a running `mailguard daemon` "
        "started with this same configuration file: its workers were forked after the rules were built, so "
        "they share them; `workers` then counts messages sent to it at once, an overrun scan is abandoned as "
        "with threads while the daemon finishes it; the relay refuses to start when no such daemon answers). "
        "See docs/performance.md.",
        choices=("threads", "processes", "daemon"),
    ),
    "workers": Option(0, "int", "Scanning processes (or threads) for small messages; 0: one per CPU core.",
                      minimum=0),
    "queue_limit": Option(
        0, "int",
        "Small messages waiting for or in scanning at once (abandoned scans are not counted); beyond it senders "
        "get 451 (at the end of DATA) or 421 (at connect) and retry later. 0: sixteen per worker.", minimum=0,
    ),
    "large_message_bytes": Option(
        262_144, "int",
        "Messages of this size or more are scanned in a separate lane (large_workers, large_queue_limit), so a "
        "burst of large or slow messages cannot delay the small ones that are most of the mail.", minimum=1,
    ),
    "large_workers": Option(1, "int", "Scanning processes (or threads) for large messages.", minimum=1),
    "large_queue_limit": Option(
        0, "int",
        "Large messages waiting for or in scanning at once; beyond it 451 at the end of DATA. 0: eight per "
        "large worker.", minimum=0,
    ),
    "on_error": Option(
        "tempfail", "str",
        "When a scan fails as a whole (crashed or past scan_timeout): tempfail (451, the sender retries) or "
        "accept (deliver it unscanned, with X-MailGuard-Rules: none; the log line names the error). Failures "
        "of single analyzers follow [policy] on_error.",
        choices=("tempfail", "accept"),
    ),
    "bare_line_endings": Option(
        "normalize", "str",
        "A lone CR or LF inside a message (used in SMTP smuggling): normalize (turn it into CRLF, so the "
        "message stays one message downstream) or reject (550 5.5.2).",
        choices=("normalize", "reject"),
    ),
    "shutdown_timeout": Option(
        60.0, "float",
        "On SIGTERM, seconds to let messages in transfer finish before the remaining connections are closed "
        "(their senders retry: nothing is lost).", minimum=0,
    ),
}


def check_section(values: Mapping[str, Any], where: str) -> list[str]:
    """The forms start-up needs, checked at load time so that `config check` refuses what
    `serve` would: "host:port" with the port written out, certificate and key together."""
    errors = [e for e in (
        check_host_port(values["listen"], f"{where} listen", allow_zero=True),
        # empty: no server (the quarantine's release then needs release_host; serve refuses it)
        values["downstream"].strip() and check_host_port(values["downstream"], f"{where} downstream",
                                                         need_port=False),
    ) if e]
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        errors.append(f"{where} tls_cert, tls_key: tls_cert and tls_key must be set together (the certificate chain and its private key)")
    if values["require_tls"] and not values["tls_cert"]:
        errors.append(f"{where} require_tls: needs tls_cert and tls_key")
    return errors


def check_host_port(text: str, where: str, allow_zero: bool = False, need_port: bool = True) -> str:
    """'' when ``text`` is "host:port" (IPv6 in brackets) with a port in range, else the error.
    Without ``need_port`` a bare host is fine (port 25 is meant)."""
    text = text.strip()
    if not need_port and text and ":" not in text.strip("[]") or not need_port and text.endswith("]"):
        return ""
    host, sep, port = (text[1:].partition("]")[0], ":", text.partition("]")[2][1:]) if text.startswith("[") \
        else text.rpartition(":")
    if text.startswith("[") and not text.partition("]")[2].startswith(":"):
        sep = ""
    if not sep or not host or ":" in host and not text.startswith("["):
        return f"{where}: {text!r} is not \"host:port\" (write the port out, e.g. \"127.0.0.1:10025\"; IPv6 as \"[::1]:10025\")"
    lowest = 0 if allow_zero else 1
    if not port.isdigit() or not lowest <= int(port) <= 65535:
        return f"{where}: {text!r}: the port must be a number from {lowest} to 65535"
    return ""
