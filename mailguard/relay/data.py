"""Reading a message's DATA in bulk, with aiosmtpd's semantics and defences.

aiosmtpd reads DATA one line at a time (a ``readuntil`` and a few Python statements per
line: about 230 awaits for a 15 KB message), which was a large part of the relay's own
CPU per message. Here the stream is searched for ``.<CRLF>`` by ``StreamReader.readuntil``
in C, so one read usually takes a whole message or as much of it as has arrived; only a
line that ends with a full stop costs an extra round. What a client sees is unchanged:

- the end is a line holding only a dot, ``<CRLF>.<CRLF>`` (or ``.<CRLF>`` as the first
  line); a lone CR or LF next to a dot never ends the message (SMTP smuggling);
- a line starting with a dot loses that dot (RFC 5321 4.5.2);
- over ``size_limit`` bytes (counted before unstuffing, as aiosmtpd counts): 552, over
  the line length limit: 500; either only after the whole transfer has been read, and
  nothing is kept in memory meanwhile beyond the last few bytes.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

_END = b".\r\n"
_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
_TOO_MUCH = "552 Error: Too much mail data"


@dataclass(frozen=True)
class Data:
    """The message (dot-unstuffed) or, when it is refused, the reply to give instead."""

    content: bytes = b""
    refusal: str = ""


def _longest_line_over(data: bytes | bytearray, limit: int) -> bool:
    """True when a line (with its CRLF) is longer than ``limit``: only possible, and only
    checked, when the whole message is."""
    if len(data) <= limit:
        return False
    return any(len(line) + 2 > limit for line in bytes(data).split(b"\r\n"))


async def read_data(reader: asyncio.StreamReader, size_limit: int | None, line_limit: int) -> Data | None:
    """The DATA after the 354, up to and including the end line; None when the
    connection ended first."""
    buffer = bytearray()
    tail = b"\r\n"  # the two bytes before what is read next: the start counts as a line start
    size = 0  # bytes of the message read, as sent (before unstuffing)
    too_much = False
    while True:
        try:
            chunk = await reader.readuntil(_END)
            ended = (tail + chunk[:-3])[-2:] == b"\r\n" if len(chunk) < 5 else chunk[-5:-3] == b"\r\n"
        except asyncio.LimitOverrunError as exc:  # over the reader's limit with no ".\r\n" yet
            chunk, ended = await reader.read(exc.consumed), False
        except asyncio.IncompleteReadError:
            return None
        if not chunk:
            return None
        size += len(chunk) - (len(_END) if ended else 0)
        if not too_much and size_limit and size > size_limit:
            too_much = True
        if too_much:  # keep draining; remember only what the end test needs
            buffer.clear()
        else:
            buffer += chunk
        tail = chunk[-2:] if len(chunk) >= 2 else (tail + chunk)[-2:]
        if ended:
            break
    if too_much:
        return Data(refusal=_TOO_MUCH)
    del buffer[-len(_END):]
    if _longest_line_over(buffer, line_limit):
        return Data(refusal=_TOO_LONG)
    if buffer.startswith(b"."):
        del buffer[0]
    content = bytes(buffer)
    if b"\r\n." in content:
        content = content.replace(b"\r\n.", b"\r\n")
    return Data(content)
