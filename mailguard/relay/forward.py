"""Handing a scanned message to the downstream server, and turning what happened into the
reply the relay's own client gets.

The relay is a before-queue proxy: it never keeps a message itself, so every failure here
must become a 4xx (the sending server keeps the message and retries) unless the downstream
server refused the message for good, in which case its 5xx is passed back.
"""
from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field, replace
from typing import Sequence

import aiosmtplib

TLS_MODES = ("opportunistic", "required", "none")

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\s+")


@dataclass(frozen=True)
class Downstream:
    """Where and how to deliver: the practice's real mail server."""

    host: str
    port: int
    tls: str = "opportunistic"
    tls_verify: bool = True
    ca_file: str = ""
    timeout: float = 300.0  # each command step (RFC 5321 4.5.3.2: 5 minutes)
    data_timeout: float = 300.0  # the reply to the end of the message
    local_hostname: str = "localhost"


@dataclass(frozen=True)
class Reply:
    """An SMTP reply for the relay's client (code and text without the code)."""

    code: int
    text: str
    delivered: bool = False
    detail: str = ""  # for the log: what went wrong downstream
    tls: bool = False  # the message went over TLS (STARTTLS completed)
    tls_unavailable: bool = False  # refused to deliver: TLS was required and could not be had

    def line(self) -> str:
        return f"{self.code} {self.text}"


class TlsUnavailable(aiosmtplib.SMTPException):
    """TLS was required and the server did not offer it, or its certificate did not verify:
    nothing was sent. The outbound listener holds such mail instead of retrying for ever."""


@dataclass
class _Attempt:
    refused: list[tuple[str, int, str]] = field(default_factory=list)


def one_line(text: str, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def passed_back(code: int, message: str, *, delivered: bool = False) -> Reply:
    """The downstream server's own reply, made safe to send on: one line, and a 4xx is
    always 451 so that every sender treats it as 'try again later'."""
    text = one_line(message) or "no text"
    if 400 <= code < 500:
        match = _ENHANCED.match(text)
        status = match.group(1) if match else "4.4.0"
        rest = text[match.end():] if match else text
        return Reply(451, f"{status} Downstream server said: {code} {rest}"[:400], detail=f"{code} {text}")
    if code >= 500:
        return Reply(code if 500 <= code < 600 else 554, text[:400], detail=f"{code} {text}")
    return Reply(code, text[:400], delivered=delivered, detail=f"{code} {text}")


def _tls_context(target: Downstream) -> ssl.SSLContext:
    if target.tls == "required" and target.tls_verify:
        return ssl.create_default_context(cafile=target.ca_file or None)
    # Opportunistic TLS (as Postfix's 'may'): encryption without authentication beats none.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def open_downstream(target: Downstream) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(
        hostname=target.host, port=target.port, timeout=target.timeout,
        local_hostname=target.local_hostname, start_tls=False,
    )
    await smtp.connect()
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        await smtp.helo()
    if target.tls != "none" and smtp.supports_extension("starttls"):
        try:
            await smtp.starttls(tls_context=_tls_context(target))
            await smtp.ehlo()  # RFC 3207: the extensions again, over TLS (aiosmtplib would on MAIL)
        except (ssl.SSLError, aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
            smtp.close()
            if target.tls != "required":
                raise
            raise TlsUnavailable(one_line(f"STARTTLS failed: {exc}")) from exc
    elif target.tls == "required":
        smtp.close()
        raise TlsUnavailable("the server does not offer STARTTLS and TLS is required")
    return smtp


def uses_tls(smtp: aiosmtplib.SMTP) -> bool:
    return smtp.get_transport_info("sslcontext") is not None


def _mail_options(smtp: aiosmtplib.SMTP, client_options: Sequence[str], size: int) -> list[str]:
    """BODY= and SMTPUTF8 as the client gave them, when the downstream server knows them
    (a server refuses MAIL with a parameter it does not know); SIZE as we now send it."""
    options = []
    for option in client_options:
        upper = option.upper()
        if upper.startswith("BODY=") and smtp.supports_extension("8bitmime"):
            options.append(option)
        elif upper == "SMTPUTF8" and smtp.supports_extension("smtputf8"):
            options.append(option)
    if smtp.supports_extension("size"):
        options.append(f"SIZE={size}")
    return options


@dataclass
class _Kept:
    smtp: aiosmtplib.SMTP
    opened: float  # loop time the connection was opened
    idle_since: float


class DownstreamConnections:
    """Connections to downstream servers kept open between messages, as Postfix's
    connection cache: opening one (connect, greeting, EHLO, perhaps STARTTLS) and closing
    it (QUIT) cost more round trips than the message itself. A connection goes back only
    when its transaction ended cleanly (the final reply to DATA, or RSET after a refused
    recipient or command); one idle longer than ``idle_s`` gets an RSET before it is used
    (a server may have dropped it silently), one older than ``lifetime_s`` or past
    ``max_idle`` kept per server is closed. A kept connection the server has closed shows
    itself on MAIL FROM, before any of the message was sent: the message then goes over a
    fresh connection, so stale connections never cost a sender a retry."""

    def __init__(self, max_idle: int = 16, idle_s: float = 10.0, lifetime_s: float = 300.0) -> None:
        self.max_idle, self.idle_s, self.lifetime_s = max_idle, idle_s, lifetime_s
        self._kept: dict[Downstream, list[_Kept]] = {}
        self.closed = False

    async def take(self, target: Downstream) -> tuple[aiosmtplib.SMTP, float, bool]:
        """(connection, when it was opened, whether it was kept from an earlier message)."""
        now = asyncio.get_running_loop().time()
        kept = self._kept.get(target)
        while kept:
            item = kept.pop()
            if not item.smtp.is_connected or now - item.opened > self.lifetime_s:
                await quit_quietly(item.smtp)
                continue
            if now - item.idle_since > self.idle_s:
                try:
                    await item.smtp.rset()
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                    item.smtp.close()
                    continue
            return item.smtp, item.opened, True
        return await open_downstream(target), now, False

    async def give_back(self, target: Downstream, smtp: aiosmtplib.SMTP, opened: float) -> None:
        kept = self._kept.setdefault(target, [])
        if self.closed or not smtp.is_connected or len(kept) >= self.max_idle:
            await quit_quietly(smtp)
            return
        kept.append(_Kept(smtp, opened, asyncio.get_running_loop().time()))

    async def close(self) -> None:
        """QUIT every kept connection; any in use is closed when its message is done."""
        self.closed = True
        kept = [item for items in self._kept.values() for item in items]
        self._kept.clear()
        await asyncio.gather(*(quit_quietly(item.smtp) for item in kept))


async def forward(target: Downstream, mail_from: str, rcpt_tos: Sequence[str], data: bytes,
                  mail_options: Sequence[str] = (), connections: DownstreamConnections | None = None) -> Reply:
    """Deliver ``data`` with the original envelope; never raises for network or SMTP
    trouble. Every recipient must be accepted, or nothing is sent: a sender told '250' must
    never have lost a recipient silently. With ``connections``, over a kept connection."""
    try:  # every step has its own timeout (aiosmtplib's per command): no overall cap that
        # could cut the wait for the final reply short and answer 451 for a delivered message
        if connections is None:
            return await _forward_once(target, mail_from, rcpt_tos, data, mail_options)
        return await _forward_kept(connections, target, mail_from, rcpt_tos, data, mail_options)
    except TlsUnavailable as exc:
        return Reply(451, "4.7.10 The next server cannot be reached over verified TLS, please try again later",
                     detail=one_line(str(exc)), tls_unavailable=True)
    except (asyncio.TimeoutError, aiosmtplib.SMTPTimeoutError) as exc:
        return Reply(451, "4.4.2 Downstream server timed out, please try again later", detail=f"timeout {exc}")
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        return Reply(451, "4.4.1 Downstream server unavailable, please try again later",
                     detail=one_line(f"{type(exc).__name__}: {exc}"))
    except aiosmtplib.SMTPResponseException as exc:
        return passed_back(exc.code, exc.message)
    except aiosmtplib.SMTPException as exc:
        return Reply(451, "4.4.0 Downstream delivery failed, please try again later",
                     detail=one_line(f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # a bug here must cost a retry, never a message
        return Reply(451, "4.3.0 Delivery problem, please try again later",
                     detail=one_line(f"{type(exc).__name__}: {exc}"))


async def _forward_once(target: Downstream, mail_from: str, rcpt_tos: Sequence[str], data: bytes,
                        mail_options: Sequence[str]) -> Reply:
    smtp = await open_downstream(target)
    try:
        return await _transaction(smtp, target, mail_from, rcpt_tos, data, mail_options)
    finally:
        await quit_quietly(smtp)


async def _forward_kept(connections: DownstreamConnections, target: Downstream, mail_from: str,
                        rcpt_tos: Sequence[str], data: bytes, mail_options: Sequence[str]) -> Reply:
    smtp, opened, kept = await connections.take(target)
    clean = False
    try:
        try:
            reply = await _transaction(smtp, target, mail_from, rcpt_tos, data, mail_options, fresh=not kept)
        except _StaleConnection:  # closed while kept, before any of the message was sent
            smtp.close()
            smtp, opened, kept = await open_downstream(target), asyncio.get_running_loop().time(), False
            reply = await _transaction(smtp, target, mail_from, rcpt_tos, data, mail_options, fresh=True)
        clean = True
        return reply
    finally:
        if clean:
            await connections.give_back(target, smtp, opened)
        else:  # an exception mid-transaction: the connection's state is unknown
            smtp.close()


class _StaleConnection(Exception):
    """A kept connection failed on MAIL FROM, the first command of the transaction."""


async def _transaction(smtp: aiosmtplib.SMTP, target: Downstream, mail_from: str, rcpt_tos: Sequence[str],
                       data: bytes, mail_options: Sequence[str], fresh: bool = True) -> Reply:
    """One message over an open connection, which is left ready for the next (the final
    reply to DATA ends a transaction; anything that stops earlier is followed by RSET).
    Raises on network trouble; ``fresh=False`` turns a failed MAIL FROM into _StaleConnection."""
    options = _mail_options(smtp, mail_options, len(data))
    encoding = "ascii"
    if not (mail_from + "".join(rcpt_tos)).isascii():
        if not smtp.supports_extension("smtputf8"):
            return Reply(553, "5.6.7 The mail server does not accept international addresses (no SMTPUTF8)",
                         detail="downstream lacks SMTPUTF8")
        encoding = "utf-8"
        if not any(o.upper() == "SMTPUTF8" for o in options):
            options.append("SMTPUTF8")
    try:
        await _mail(smtp, mail_from, options, encoding)
    except (aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        if fresh:
            raise
        raise _StaleConnection() from exc
    attempt = _Attempt()
    for rcpt in rcpt_tos:
        try:
            await _rcpt(smtp, rcpt, encoding)
        except aiosmtplib.SMTPRecipientRefused as exc:
            attempt.refused.append((rcpt, exc.code, exc.message))
    if attempt.refused:
        await smtp.rset()
        return _refused_reply(attempt, len(rcpt_tos))
    response = await send_data(smtp, data, target.data_timeout)
    reply = passed_back(response.code, response.message, delivered=True)
    return replace(reply, tls=True) if uses_tls(smtp) else reply


# A plain address: aiosmtplib's quoting (email.utils.parseaddr, a few percent of the relay's
# CPU per message) gives "<" + it + ">" for these, so they skip it.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


async def _mail(smtp: aiosmtplib.SMTP, sender: str, options: Sequence[str], encoding: str) -> None:
    if sender and not _PLAIN_ADDRESS.fullmatch(sender):
        await smtp.mail(sender, options=options, encoding=encoding)
        return
    response = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode(encoding) + b">",
                                          *(o.encode("ascii") for o in options))
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(smtp: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    if not _PLAIN_ADDRESS.fullmatch(recipient):
        await smtp.rcpt(recipient, encoding=encoding)
        return
    response = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode(encoding) + b">")
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


async def send_data(smtp: aiosmtplib.SMTP, data: bytes, timeout: float) -> aiosmtplib.SMTPResponse:
    """``smtp.data(data)`` for a message whose lines all end in CRLF (what the relay
    sends): aiosmtplib runs two regular expressions over every message (line endings, then
    dot-stuffing), about a tenth of the relay's CPU per message; here the stuffing is one
    ``bytes.replace``. Anything else goes through aiosmtplib as it is."""
    protocol = smtp.protocol
    crlf = data.count(b"\r\n")
    if protocol is None or data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return await smtp.data(data, timeout=timeout)
    body = (b"." + data if data.startswith(b".") else data).replace(b"\n.", b"\n..")
    try:  # one task owns this connection, and nothing is awaited between a write and its read
        protocol.write(b"DATA\r\n")
        start = await protocol.read_response(timeout=timeout)
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        # as aiosmtplib ends it, in one write (one send instead of two)
        protocol.write(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))
        response = await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()
        raise
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _refused_reply(attempt: _Attempt, total: int) -> Reply:
    """Some recipients refused downstream: nothing is delivered and the client is told: a
    4xx if any refusal was temporary (the whole message is retried later), else a 5xx naming
    the refused address, so the sender learns of it instead of one recipient silently missing
    the message."""
    codes = [code for _, code, _ in attempt.refused]
    first = attempt.refused[0]
    detail = f"{len(attempt.refused)} of {total} recipients refused downstream: {first[1]} {one_line(first[2])}"
    if any(400 <= c < 500 for c in codes):
        return Reply(451, "4.1.0 Downstream server refused a recipient for now, please try again later",
                     detail=detail)
    return Reply(550, f"5.1.1 Recipient <{first[0]}> refused by the mail server: {one_line(first[2], 150)}",
                 detail=detail)


async def quit_quietly(smtp: aiosmtplib.SMTP) -> None:
    try:
        if smtp.is_connected:
            await smtp.quit()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        smtp.close()
