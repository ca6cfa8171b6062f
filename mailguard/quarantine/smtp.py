"""Hand a held message back to a mail server over SMTP (release and digests).

Uses the standard library's ``smtplib``: a release is one synchronous conversation run by a
person or a cron job, and the per-recipient answers it reports are exactly what the
quarantine needs to mark only the recipients the server accepted.
"""
from __future__ import annotations

import re
import smtplib
import socket
from dataclasses import dataclass, field

DEFAULT_PORT = 25
_BARE_EOL = re.compile(rb"\r?\n|\r")
_ADDRESS = re.compile(r"[^\s<>@\"',;:]+@[^\s<>@\"',;:]+")


class SmtpTargetError(ValueError):
    """A "host:port" setting that cannot be understood."""


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'mail.example:25', '10.0.0.5', '[::1]:2525' -> (host, port)."""
    text = text.strip()
    if not text:
        raise SmtpTargetError("empty host")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise SmtpTargetError(f"{text!r}: missing ']'")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise SmtpTargetError(f"{text!r}: expected ':port' after ']'")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SmtpTargetError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def redact_addresses(text: str) -> str:
    """Remove e-mail addresses from a server reply before it goes into the audit log."""
    return _ADDRESS.sub("<address>", text)


@dataclass
class Delivery:
    """The outcome of one SMTP transaction: which recipients (by position) the server took,
    which it refused and why, or the error that stopped the whole transaction."""

    accepted: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    error: str = ""
    reply: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.refused and bool(self.accepted)


def send(host: str, port: int, mail_from: str, rcpt_tos: list[str], data: bytes, timeout: float) -> Delivery:
    """One transaction; never raises for SMTP or network failures (they are in the result).

    Line ends are sent as CRLF whatever the stored bytes use: ``smtplib`` does not fix them
    for bytes, and bare LF in SMTP is refused by strict servers (SMTP smuggling defences)."""
    result = Delivery()
    data = _BARE_EOL.sub(b"\r\n", data)
    try:
        with smtplib.SMTP(host, port, timeout=timeout, local_hostname=_local_name()) as smtp:
            smtp.ehlo_or_helo_if_needed()
            options: list[str] = []
            if smtp.does_esmtp and smtp.has_extn("8bitmime") and any(b > 127 for b in data):
                options.append("BODY=8BITMIME")
            if not (mail_from + "".join(rcpt_tos)).isascii():
                if not smtp.has_extn("smtputf8"):
                    result.error = "the server does not accept non-ASCII addresses (no SMTPUTF8)"
                    return result
                options.append("SMTPUTF8")
            refused = smtp.sendmail(mail_from, rcpt_tos, data, mail_options=options)
            for index, rcpt in enumerate(rcpt_tos):
                if rcpt in refused:
                    code, msg = refused[rcpt]
                    result.refused[index] = _reply(code, msg)
                else:
                    result.accepted.append(index)
            result.reply = "accepted"
    except smtplib.SMTPRecipientsRefused as exc:
        for index, rcpt in enumerate(rcpt_tos):
            code, msg = exc.recipients.get(rcpt, (0, b"refused"))
            result.refused[index] = _reply(code, msg)
        result.error = "the server refused every recipient"
    except smtplib.SMTPResponseException as exc:  # MAIL FROM, DATA or the end of data refused
        result.error = _reply(exc.smtp_code, exc.smtp_error)
    except (smtplib.SMTPException, OSError) as exc:
        result.error = f"cannot deliver: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
    result.accepted = [] if result.error else result.accepted
    return result


def _reply(code: int, msg: bytes | str) -> str:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return f"{code} {text}".strip()


def _local_name() -> str:
    """The machine's name for EHLO, without the DNS lookups of ``getfqdn`` (which can hang)."""
    try:
        return socket.gethostname() or "localhost"
    except OSError:
        return "localhost"
