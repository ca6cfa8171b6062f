"""The [relay] keys: where `mailguard serve` listens, where it delivers, and its limits.

Read by ``mailguard.config`` without importing the SMTP server."""
from __future__ import annotations

from typing import Mapping

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
    "command_timeout": Option(
        300.0, "float", "Seconds a client may stay silent between commands before it is disconnected.", minimum=1
    ),
    "data_timeout": Option(
        600.0, "float", "Seconds a client has to send a whole message after DATA (stops trickling clients).",
        minimum=1,
    ),
    "scan_timeout": Option(
        120.0, "float", "Seconds a scan may take before the message is answered as on_error says.", minimum=1
    ),
    "downstream_timeout": Option(
        60.0, "float",
        "Seconds to wait for each step with the downstream server; past it the sender gets 451 and retries.",
        minimum=1,
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
        "threads", "str",
        "What scans: threads (one shared set of compiled rules; starts at once) or processes (one per worker, "
        "each with its own rules; uses every core, costs memory and a second or two to start). See the "
        "relay benchmark in docs/performance.md before changing it.",
        choices=("threads", "processes"),
    ),
    "workers": Option(0, "int", "Scanning threads or processes; 0: one per CPU core.", minimum=0),
    "queue_limit": Option(
        0, "int",
        "Messages waiting for or in scanning at once; beyond it senders get 451 (at the end of DATA) or 421 "
        "(at connect) and retry later. 0: sixteen per worker.", minimum=0,
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
