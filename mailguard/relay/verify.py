"""Recipient checks against the downstream server at RCPT time ([relay] verify_recipients).

A before-queue proxy answers DATA once for all recipients. If the downstream server then
refuses one of several recipients, the relay can only refuse the whole message (delivering
to the others while telling the sender '250' would lose mail silently). Asking the
downstream server at RCPT time, as Postfix's address verification does, lets an unknown
address be refused on its own while the message still reaches everyone else.

Answers are cached for a short while, so a busy mailbox costs one probe per few minutes.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiosmtplib

from mailguard.relay.forward import Downstream, open_downstream, one_line, quit_quietly


@dataclass(frozen=True)
class Check:
    """The RCPT reply for the relay's client."""

    code: int
    text: str


@dataclass
class RecipientVerifier:
    target: Downstream
    ttl: float = 600.0
    _cache: dict[str, tuple[float, Check]] = field(default_factory=dict)

    async def check(self, address: str) -> Check:
        key = address.strip().lower()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
        result = await self._probe(address)
        if result.code < 400 or result.code >= 500:  # never cache a temporary failure
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, result)
        return result

    async def _probe(self, address: str) -> Check:
        try:
            return await asyncio.wait_for(self._ask(address), self.target.timeout * 2)
        except (asyncio.TimeoutError, aiosmtplib.SMTPException, OSError):
            return Check(451, "4.4.1 Cannot check the recipient now, please try again later")

    async def _ask(self, address: str) -> Check:
        smtp = await open_downstream(self.target)
        try:
            # The null sender, as Postfix's own address probes: nothing is ever sent.
            await smtp.mail("")
            encoding = "ascii" if address.isascii() else "utf-8"
            response = await smtp.execute_command(b"RCPT", b"TO:<" + address.encode(encoding) + b">")
            await smtp.rset()
        finally:
            await quit_quietly(smtp)
        text = one_line(response.message, 150)
        if 200 <= response.code < 300:
            return Check(250, "2.1.5 OK")
        if response.code >= 500:
            return Check(550, f"5.1.1 Recipient refused by the mail server: {text}")
        return Check(451, "4.1.0 The mail server cannot take this recipient now, please try again later")
