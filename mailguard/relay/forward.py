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
from collections import deque
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
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
    always 451 so that every sender treats it as 'try again later'.

    Only a 4xx or 5xx is passed back for a message that was not delivered. Anything else
    there (a 2xx to MAIL or to the DATA command, which then sent nothing; a 1xx or 3xx; a
    line with no code at all, -1 here) is what a broken server says: passed on, a 2xx
    would tell the sender "delivered" for a message nobody has, and a 354 or "-1 ..." is
    no valid final reply. Such replies become 451 (retry, nothing lost)."""
    text = one_line(message) or "no text"
    if not delivered and not 400 <= code < 600:
        return Reply(451, "4.4.0 Downstream server gave an unexpected reply, please try again later",
                     detail=f"unexpected {code} {text}")
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


class _Replies(asyncio.Protocol):
    """The reading side of a downstream connection once its session is set up: each
    complete reply queued as it arrives, so that replies to pipelined commands (several in
    one packet, or one packet each) are never lost or mispaired; aiosmtplib's protocol
    keeps one reply at a time and drops what arrives while that one waits to be read."""

    MAX_BUFFER = 1 << 20

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buffer = bytearray()
        self.queued: deque[tuple[int, str]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: Exception | None = None

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:  # every complete reply in the buffer: "250-..." lines, then "250 ..."
            start, lines, complete = 0, [], False
            while not complete:
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                line = bytes(buffer[start:end]).rstrip(b"\r")
                start = end + 1
                lines.append(line)
                complete = line[3:4] != b"-"
            if not complete:
                break
            del buffer[:start]
            try:
                code = int(lines[-1][:3])
            except ValueError:
                self._fail(aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP response line: {one_line(str(lines[-1]))}"))
                return
            text = "\n".join(line[4:].strip(b" \t").decode("utf-8", "surrogateescape") for line in lines)
            self.queued.append((code, text))
        if len(buffer) > self.MAX_BUFFER:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
            return
        self._wake()

    def _fail(self, error: Exception) -> None:
        self.error = error
        self.buffer.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done() and (self.queued or self.error or self.closed):
            waiter.set_result(None)

    def eof_received(self) -> bool:
        return False  # close: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    async def reply(self, timeout: float) -> tuple[int, str]:
        while not self.queued:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            self.waiter = self.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self.waiter
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
            finally:
                self.waiter = None
        return self.queued.popleft()


class Wire:
    """A downstream connection after greeting, EHLO and STARTTLS (done by aiosmtplib),
    with the transactions written directly: MAIL, every RCPT and DATA in one packet when
    the server offers PIPELINING (RFC 2920), then the message with its end in one more,
    instead of a round trip and aiosmtplib's per-command machinery for each."""

    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        transport = smtp.transport
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        self.extensions = {name.lower() for name in smtp.esmtp_extensions}
        self.tls = uses_tls(smtp)
        self.replies = _Replies(asyncio.get_running_loop())
        transport.set_protocol(self.replies)  # aiosmtplib's protocol no longer reads this connection

    def supports(self, extension: str) -> bool:
        return extension in self.extensions

    @property
    def is_connected(self) -> bool:
        return not (self.replies.closed or self.transport.is_closing())

    @property
    def idle_clean(self) -> bool:
        """Connected, and nothing arrived unasked (a server closing an idle session says 421 first)."""
        return self.is_connected and not self.replies.queued and not self.replies.buffer

    def write(self, data: bytes) -> None:
        if not self.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def command(self, line: bytes, timeout: float) -> tuple[int, str]:
        self.write(line)
        return await self.replies.reply(timeout)

    def close(self) -> None:
        self.transport.close()

    async def quit(self, timeout: float = 10.0) -> None:
        """QUIT and close; never raises."""
        try:
            if self.is_connected:
                await self.command(b"QUIT\r\n", timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            self.close()


async def open_wire(target: Downstream) -> Wire:
    return Wire(await open_downstream(target))


def _mail_options(wire: Wire, client_options: Sequence[str], size: int) -> list[str]:
    """BODY= and SMTPUTF8 as the client gave them, when the downstream server knows them
    (a server refuses MAIL with a parameter it does not know); SIZE as we now send it."""
    options = []
    for option in client_options:
        upper = option.upper()
        if upper.startswith("BODY=") and wire.supports("8bitmime"):
            options.append(option)
        elif upper == "SMTPUTF8" and wire.supports("smtputf8"):
            options.append(option)
    if wire.supports("size"):
        options.append(f"SIZE={size}")
    return options


@dataclass
class _Kept:
    wire: Wire
    opened: float  # loop time the connection was opened
    idle_since: float


class DownstreamConnections:
    """Connections to downstream servers kept open between messages, as Postfix's
    connection cache: opening one (connect, greeting, EHLO, perhaps STARTTLS) and closing
    it (QUIT) cost more round trips than the message itself. A connection goes back only
    when its transaction ended cleanly (the final reply to DATA, or RSET after a refused
    recipient or command); one idle longer than ``idle_s`` gets an RSET before it is used
    (a server may have dropped it silently), one older than ``lifetime_s`` or past
    ``max_idle`` kept per server is closed, and so is one on which the server said
    something unasked (a 421 before it hangs up). A kept connection the server has closed
    shows itself on MAIL FROM, before any of the message was sent: the message then goes
    over a fresh connection, so stale connections never cost a sender a retry."""

    def __init__(self, max_idle: int = 16, idle_s: float = 10.0, lifetime_s: float = 300.0) -> None:
        self.max_idle, self.idle_s, self.lifetime_s = max_idle, idle_s, lifetime_s
        self._kept: dict[Downstream, list[_Kept]] = {}
        self.closed = False

    async def take(self, target: Downstream) -> tuple[Wire, float, bool]:
        """(connection, when it was opened, whether it was kept from an earlier message)."""
        now = asyncio.get_running_loop().time()
        kept = self._kept.get(target)
        while kept:
            item = kept.pop()
            if not item.wire.idle_clean or now - item.opened > self.lifetime_s:
                await item.wire.quit()
                continue
            if now - item.idle_since > self.idle_s:
                try:
                    code, _ = await item.wire.command(b"RSET\r\n", target.timeout)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    item.wire.close()
                    continue
                if code != 250:
                    await item.wire.quit()
                    continue
            return item.wire, item.opened, True
        return await open_wire(target), now, False

    async def give_back(self, target: Downstream, wire: Wire, opened: float) -> None:
        kept = self._kept.setdefault(target, [])
        if self.closed or not wire.idle_clean or len(kept) >= self.max_idle:
            await wire.quit()
            return
        kept.append(_Kept(wire, opened, asyncio.get_running_loop().time()))

    async def close(self) -> None:
        """QUIT every kept connection; any in use is closed when its message is done."""
        self.closed = True
        kept = [item for items in self._kept.values() for item in items]
        self._kept.clear()
        await asyncio.gather(*(item.wire.quit() for item in kept))


async def forward(target: Downstream, mail_from: str, rcpt_tos: Sequence[str], data: bytes,
                  mail_options: Sequence[str] = (), connections: DownstreamConnections | None = None) -> Reply:
    """Deliver ``data`` with the original envelope; never raises for network or SMTP
    trouble. Every recipient must be accepted, or nothing is sent: a sender told '250' must
    never have lost a recipient silently. With ``connections``, over a kept connection."""
    try:  # every step has its own timeout (per command): no overall cap that could cut
        # the wait for the final reply short and answer 451 for a delivered message
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
    wire = await open_wire(target)
    try:
        return await _transaction(wire, target, mail_from, rcpt_tos, data, mail_options)
    finally:
        await wire.quit(target.timeout)


async def _forward_kept(connections: DownstreamConnections, target: Downstream, mail_from: str,
                        rcpt_tos: Sequence[str], data: bytes, mail_options: Sequence[str]) -> Reply:
    wire, opened, kept = await connections.take(target)
    clean = False
    try:
        try:
            reply = await _transaction(wire, target, mail_from, rcpt_tos, data, mail_options, fresh=not kept)
        except _StaleConnection:  # closed while kept, before any of the message was sent
            wire.close()
            wire, opened, kept = await open_wire(target), asyncio.get_running_loop().time(), False
            reply = await _transaction(wire, target, mail_from, rcpt_tos, data, mail_options, fresh=True)
        clean = True
        return reply
    finally:
        if clean:
            await connections.give_back(target, wire, opened)
        else:  # an exception mid-transaction: the connection's state is unknown
            wire.close()


class _StaleConnection(Exception):
    """A kept connection failed on MAIL FROM, the first command of the transaction."""


def _path(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL FROM or RCPT TO: a plain address as it is, anything else as
    aiosmtplib quotes it (``email.utils.parseaddr``); never a CR or LF."""
    if address and not _PLAIN_ADDRESS.fullmatch(address):
        address = parseaddr(address)[1] or address.strip()
    if "\r" in address or "\n" in address:
        raise ValueError("an address with a line break cannot be sent")
    return b"<" + address.encode(encoding) + b">"


async def _transaction(wire: Wire, target: Downstream, mail_from: str, rcpt_tos: Sequence[str],
                       data: bytes, mail_options: Sequence[str], fresh: bool = True) -> Reply:
    """One message over an open connection, which is left ready for the next (the final
    reply to DATA ends a transaction; a refusal before it is followed by RSET, or by closing
    the connection when the server had already said 354 to a pipelined DATA: it then
    discards the unfinished message). Raises on network trouble; ``fresh=False`` turns a
    failed MAIL FROM into _StaleConnection."""
    options = _mail_options(wire, mail_options, len(data))
    encoding = "ascii"
    if not (mail_from + "".join(rcpt_tos)).isascii():
        if not wire.supports("smtputf8"):
            return Reply(553, "5.6.7 The mail server does not accept international addresses (no SMTPUTF8)",
                         detail="downstream lacks SMTPUTF8")
        encoding = "utf-8"
        if not any(o.upper() == "SMTPUTF8" for o in options):
            options.append("SMTPUTF8")
    mail = b" ".join([b"MAIL FROM:" + _path(mail_from, encoding), *(o.encode("ascii") for o in options)])
    rcpts = [b"RCPT TO:" + _path(rcpt, encoding) for rcpt in rcpt_tos]
    if any(b"\r" in line or b"\n" in line for line in (mail, *rcpts)):
        raise ValueError("a command with a line break cannot be sent")
    pipelined = wire.supports("pipelining")
    timeout = target.timeout
    try:
        if pipelined:
            wire.write(b"\r\n".join([mail, *rcpts, b"DATA"]) + b"\r\n")
            mail_reply = await wire.replies.reply(timeout)
        else:
            mail_reply = await wire.command(mail + b"\r\n", timeout)
    except (aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        if fresh:
            raise
        raise _StaleConnection() from exc
    if pipelined:
        rcpt_replies = [await wire.replies.reply(timeout) for _ in rcpts]
        data_reply = await wire.replies.reply(timeout)
    if mail_reply[0] != 250:
        if pipelined and data_reply[0] == 354:
            wire.close()  # a broken server began a message without a sender: end nothing
        raise aiosmtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], mail_from)
    if not pipelined:
        rcpt_replies = []
        for line in rcpts:
            rcpt_replies.append(await wire.command(line + b"\r\n", timeout))
    attempt = _Attempt([(rcpt, code, text) for rcpt, (code, text) in zip(rcpt_tos, rcpt_replies)
                        if code not in (250, 251)])
    if attempt.refused:
        if pipelined and data_reply[0] == 354:
            wire.close()  # the unfinished message is discarded by the server: nothing delivered
        else:
            await wire.command(b"RSET\r\n", timeout)
        return _refused_reply(attempt, len(rcpt_tos))
    if not pipelined:
        data_reply = await wire.command(b"DATA\r\n", timeout)
    if data_reply[0] != 354:
        raise aiosmtplib.SMTPDataError(data_reply[0], data_reply[1])
    wire.write(_stuffed(data))
    code, text = await wire.replies.reply(target.data_timeout)
    if not 200 <= code < 300:  # any 2xx is a positive completion (RFC 5321 4.2.1): the server has it
        raise aiosmtplib.SMTPDataError(code, text)
    reply = passed_back(code, text, delivered=True)
    return replace(reply, tls=True) if wire.tls else reply


# A plain address: aiosmtplib's quoting (email.utils.parseaddr, a few percent of the relay's
# CPU per message) gives "<" + it + ">" for these, so they skip it.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")


def _stuffed(data: bytes) -> bytes:
    """The message as DATA sends it: lines ended by CRLF (a lone CR or LF made one, as
    aiosmtplib does), a leading dot doubled, and the end line; one ``bytes.replace`` for a
    message whose lines already all end in CRLF (what the relay sends), instead of
    aiosmtplib's two regular expressions over every message."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_END.sub(b"\r\n", data)
    body = (b"." + data if data.startswith(b".") else data).replace(b"\n.", b"\n..")
    return body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n")


def _refused_reply(attempt: _Attempt, total: int) -> Reply:
    """Some recipients refused downstream: nothing is delivered and the client is told: a
    4xx if any refusal was temporary (the whole message is retried later), else a 5xx naming
    the refused address, so the sender learns of it instead of one recipient silently missing
    the message. A reply that is neither 250/251 nor a 5xx (a 4xx, or a broken server's 252,
    354 ...) is no permanent refusal: 451."""
    codes = [code for _, code, _ in attempt.refused]
    first = attempt.refused[0]
    detail = f"{len(attempt.refused)} of {total} recipients refused downstream: {first[1]} {one_line(first[2])}"
    if any(not 500 <= c < 600 for c in codes):
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
