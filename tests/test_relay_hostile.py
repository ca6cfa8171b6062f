"""The relay under a hostile client and a broken downstream, over real sockets on loopback:
what the SMTP client is answered and what the downstream server receives.

Covered elsewhere and not repeated here: smuggling with the six classic dot lines, routing
tricks, control characters in MAIL/RCPT, NOOP/RSET/VRFY/HELP limits, oversize, slow and
trickling clients, STARTTLS (tests/test_relay_abuse.py, test_relay_hardening.py,
test_relay_tls.py)."""
from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import pytest

import phi_samples as P
from dns_server import loopback_dns
from mailguard.config import Config
from mailguard.quarantine import open_quarantine
from test_relay_support import (  # noqa: F401 (fixtures)
    PRACTICE,
    RECIPIENT,
    SENDER,
    LoopThread,
    RawClient,
    RelayRunner,
    Sink,
    clean_message,
    loop_thread,
    relay_config,
    scanner,
    sink,
    start_relay,
    wire,
)


def greeted(client: RawClient, helo: str = "EHLO client.test") -> None:
    assert client.reply()[0] == 220
    assert client.command(helo)[0] == 250


def open_transaction(client: RawClient) -> None:
    greeted(client)
    assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert client.command(f"RCPT TO:<{RECIPIENT}>")[0] == 250
    assert client.command("DATA")[0] == 354


# ---------------------------------------------------------------- pipelining abuse (regression)


def test_a_pipelined_packet_with_two_transactions_garbage_and_rset_in_data(start_relay: Any, sink: Sink) -> None:
    """Everything in one packet: each command is answered in order, "RSET" inside DATA is
    message text, the garbage line is one unknown command, and commands after the end of
    DATA are read as commands: two messages downstream, exactly."""
    relay = start_relay()
    rcpt = RECIPIENT.encode()
    packet = (b"EHLO client.test\r\nMAIL FROM:<a@partner.example>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n"
              b"Subject: one\r\n\r\nfirst body\r\n.\r\n"
              b"GARBAGE\r\n"
              b"MAIL FROM:<b@partner.example>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n"
              b"Subject: two\r\n\r\nRSET\r\nQUIT\r\n.\r\n"
              b"QUIT\r\n")
    with RawClient(relay.host, relay.port) as client:
        assert client.reply()[0] == 220
        client.send(packet)
        codes = [client.reply()[0] for _ in range(11)]
        assert client.closed_by_server()
    assert codes == [250, 250, 250, 354, 250, 500, 250, 250, 354, 250, 221]
    received = sink.handler.wait_for(2)
    assert len(received) == 2
    assert [m.mail_from for m in received] == ["a@partner.example", "b@partner.example"]
    assert received[1].data.endswith(b"\r\n\r\nRSET\r\nQUIT\r\n")


@pytest.mark.parametrize("dot_line", [b"\n..\n", b"\r\n.\x00\r\n", b"\r\n.\r\r\n", b"\n.\r\r\n", b"\r\n\x00.\r\n",
                                      b"\r\n. \r\n"])
def test_more_dot_lines_never_split_a_message(start_relay: Any, sink: Sink, dot_line: bytes) -> None:
    """Beyond the six classic smuggling dot lines: none of these ends the message, the
    "second message" and the QUIT after the real end are not run as commands in the first
    one's stead: one message downstream, the smuggled text inside it."""
    relay = start_relay()
    smuggled = (b"MAIL FROM:<ceo@" + PRACTICE.encode() + b">\r\nRCPT TO:<" + RECIPIENT.encode() + b">\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nwire the money\r\n")
    with RawClient(relay.host, relay.port) as client:
        open_transaction(client)
        client.send(b"Subject: first\r\n\r\nhello" + dot_line + smuggled + b".\r\nQUIT\r\n")
        assert client.reply()[0] == 250
        assert client.reply()[0] == 221
    received = sink.handler.wait_for(1)
    assert len(received) == 1 and received[0].mail_from == SENDER
    assert b"Subject: first" in received[0].data and b"wire the money" in received[0].data


def test_a_command_line_of_two_megabytes_is_500_and_the_session_goes_on(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    with RawClient(relay.host, relay.port) as client:
        greeted(client)
        client.send(b"MAIL FROM:<" + b"a" * (2 << 20))  # no CRLF yet: more than the reader's limit
        client.send(b"@partner.example>\r\n")
        code, text = client.reply()
        assert code == 500 and "too long" in text
        assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert client.command(f"RCPT TO:<{RECIPIENT}>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(wire(clean_message()))
        assert client.reply()[0] == 250
    assert len(sink.handler.wait_for(1)) == 1


# ---------------------------------------------------------------- bytes that are not UTF-8, control characters


@pytest.mark.parametrize("line, code", [
    (b"MAIL FROM:<a\xff@partner.example>", 500),
    (b"MAIL FROM:<caf\xe9@partner.example> SMTPUTF8", 500),  # Latin-1, not UTF-8
    (b"EHLO \xff\xfe.example", 500),
    (b"EHLO bad\x00name", 501),
    (b"HELO a\rX-Injected: yes", 501),
])
def test_bytes_that_cannot_be_forwarded_are_refused_at_the_command(start_relay: Any, sink: Sink, line: bytes,
                                                                  code: int) -> None:
    """Before: accepted with 250, and the message then answered 451 at the end of DATA for
    ever (the address cannot be encoded to send it on), or a HELO with a NUL or CR passed to
    the authentication stage and the quarantine. Now refused at the command; the session
    stays usable."""
    relay = start_relay()
    with RawClient(relay.host, relay.port) as client:
        greeted(client)
        client.send(line + b"\r\n")
        got, text = client.reply()
        assert got == code and ("5.5.2" in text if code == 500 else "5.5.4" in text)
        assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert client.command(f"RCPT TO:<{RECIPIENT}>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(wire(clean_message()))
        assert client.reply()[0] == 250
    received = sink.handler.wait_for(1)
    assert [m.mail_from for m in received] == [SENDER]


def test_a_recipient_that_is_not_utf8_is_refused_not_retried_for_ever(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    with RawClient(relay.host, relay.port) as client:
        greeted(client)
        assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
        client.send(b"RCPT TO:<fr\xc3\xa9\xff@" + PRACTICE.encode() + b">\r\n")
        code, text = client.reply()
        assert code == 500 and "5.5.2" in text
        assert client.command("DATA")[0] == 503  # nothing was accepted
    assert sink.handler.messages == []


# ---------------------------------------------------------------- commands that buy no time


@pytest.mark.parametrize("setup, command", [
    ((), "EHLO client.test"),
    ((), "HELO client.test"),
    ((f"MAIL FROM:<{SENDER}>",), "RCPT TO:<someone@elsewhere.example>"),  # 550 relaying denied
    ((f"MAIL FROM:<{SENDER}>",), f"MAIL FROM:<{SENDER}>"),  # 503 nested MAIL
])
def test_repeated_commands_do_not_keep_a_session_past_command_timeout(start_relay: Any, setup: tuple[str, ...],
                                                                      command: str) -> None:
    """Before: each EHLO, refused RCPT or nested MAIL restarted command_timeout, so one
    every few minutes held a session (and one of max_connections) for ever. Now the
    session closes command_timeout after the last command that did something."""
    relay = start_relay({"command_timeout": 2.0, "junk_command_limit": 1000})
    with RawClient(relay.host, relay.port) as client:
        greeted(client)
        for line in setup:
            assert client.command(line)[0] == 250
        answered, elapsed = client.repeat_until_closed(command)
    assert answered >= 2 and elapsed < 4.0


def test_refused_commands_count_against_the_junk_limit(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"junk_command_limit": 5})
    with RawClient(relay.host, relay.port) as client:
        greeted(client)
        assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
        codes = [client.command(f"RCPT TO:<user{n}@elsewhere.example>")[0] for n in range(5)]
        assert codes == [550] * 5
        code, text = client.command("RCPT TO:<user5@elsewhere.example>")
        assert code == 550  # the refusal itself, then the session is closed
        code, text = client.reply()
        assert code == 421 and "4.7.0" in text
        assert client.closed_by_server()
    assert sink.handler.messages == []


def test_an_ordinary_session_with_a_few_refusals_is_untouched(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"junk_command_limit": 5})
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        for n in range(3):  # three messages on one connection, each with a refused recipient
            client.ehlo()
            assert client.mail(SENDER)[0] == 250
            assert client.rcpt("nobody@elsewhere.example")[0] == 550
            assert client.rcpt(RECIPIENT)[0] == 250
            assert client.data(clean_message(n))[0] == 250
    assert len(sink.handler.wait_for(3)) == 3


# ---------------------------------------------------------------- a downstream that says the wrong thing


@dataclass
class Scripted:
    """A downstream server on loopback that answers one command with a scripted reply (and
    everything else as a plain server would); records whether a whole message arrived."""

    runner: LoopThread
    stage: str  # MAIL, RCPT, DATA (the command) or END (the end of the message)
    answer: bytes
    messages: list[bytes] = field(default_factory=list)
    server: Any = None
    port: int = 0

    def __post_init__(self) -> None:
        async def go() -> Any:
            return await asyncio.start_server(self._session, "127.0.0.1", 0)

        self.server = self.runner.call(go())
        self.port = self.server.sockets[0].getsockname()[1]

    def _reply(self, stage: str, normal: bytes) -> bytes:
        return self.answer if stage == self.stage else normal

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    writer.write(self._reply("MAIL", b"250 2.1.0 Ok\r\n"))
                elif verb == b"RCPT":
                    writer.write(self._reply("RCPT", b"250 2.1.5 Ok\r\n"))
                elif verb == b"DATA":
                    answer = self._reply("DATA", b"354 go ahead\r\n")
                    writer.write(answer)
                    if answer.startswith(b"354"):
                        body = bytearray()
                        while (part := await reader.readline()) not in (b".\r\n", b""):
                            body += part
                        self.messages.append(bytes(body))
                        writer.write(self._reply("END", b"250 2.0.0 Ok: queued\r\n"))
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 Ok\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def go() -> None:
            self.server.close()
            await self.server.wait_closed()

        self.runner.call(go())


@pytest.mark.parametrize("stage, answer", [
    ("MAIL", b"251 2.1.0 sure\r\n"),  # a 2xx that is not 250: the relay sends nothing on
    ("DATA", b"250 2.0.0 Ok\r\n"),  # DATA answered 250 instead of 354: no message was sent
    ("DATA", b"220 hello again\r\n"),
    ("END", b"354 more please\r\n"),
    ("END", b"199 thinking\r\n"),
    ("END", b"this is not an SMTP reply\r\n"),
    ("RCPT", b"252 2.1.5 cannot verify\r\n"),
])
def test_a_downstream_reply_that_is_no_answer_becomes_451(tmp_path: Path, loop_thread: LoopThread,
                                                          scanner: Any, stage: str, answer: bytes) -> None:
    """Before: the downstream's reply went back as it was: a "250" for a message that was
    never sent (lost), or a "354", "199" or "-1 Malformed ..." as the final reply to DATA.
    Now every reply that is neither a delivery nor a 4xx/5xx refusal is 451: the sender
    keeps the message and tries again."""
    downstream = Scripted(loop_thread, stage, answer)
    config = relay_config(tmp_path, downstream.port)
    quarantine = open_quarantine(config)
    relay = RelayRunner(config, quarantine=quarantine, scanner=scanner)
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
            client.ehlo()
            assert client.mail(SENDER)[0] == 250
            assert client.rcpt(RECIPIENT)[0] == 250
            code, text = client.data(clean_message())
        assert code == 451, (code, text)
        if stage != "END":
            assert downstream.messages == []  # nothing was delivered: 451 lost nothing
    finally:
        relay.stop()
        quarantine.close()
        downstream.stop()


def test_any_2xx_to_the_end_of_the_message_is_a_delivery(tmp_path: Path, loop_thread: LoopThread,
                                                        scanner: Any) -> None:
    downstream = Scripted(loop_thread, "END", b"251 2.0.0 taken\r\n")
    config = relay_config(tmp_path, downstream.port)
    quarantine = open_quarantine(config)
    relay = RelayRunner(config, quarantine=quarantine, scanner=scanner)
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
            code, _ = client.ehlo()
            assert client.mail(SENDER)[0] == 250 and client.rcpt(RECIPIENT)[0] == 250
            code, _ = client.data(clean_message())
        assert code == 251 and len(downstream.messages) == 1
    finally:
        relay.stop()
        quarantine.close()
        downstream.stop()


# ---------------------------------------------------------------- the outbound listener


STAFF = f"dr.roe@{PRACTICE}"
OUTSIDE = "someone@outside.example"


@pytest.fixture()
def next_hop(loop_thread: LoopThread) -> Iterator[Sink]:
    server = Sink(loop_thread)
    yield server
    server.stop()


def test_a_released_outbound_message_goes_to_the_next_hop(tmp_path: Path, sink: Sink, next_hop: Sink,
                                                          scanner: Any) -> None:
    """Before: a held outbound message released by IT (through the practice's server, back
    to the outbound listener with its release marker) went to the inbound downstream, i.e.
    back to the practice's server, which handed it to the outbound listener again, without
    the marker: scanned and held again, never sent. Now it goes to the next hop."""
    config = Config.from_dict({
        "relay": {"listen": "127.0.0.1:0", "downstream": f"127.0.0.1:{sink.port}", "relay_domains": [PRACTICE],
                  "hostname": "mailguard.test", "workers": 2},
        "outbound": {"listen": "127.0.0.1:0", "next_hop": f"127.0.0.1:{next_hop.port}",
                     "internal_domains": [PRACTICE], "next_hop_timeout": 5.0, "notify_sender": False},
        "quarantine": {"path": str(tmp_path / "q"), "key_file": str(tmp_path / "quarantine.key")},
        "dns": loopback_dns(),
    }, tmp_path / "mailguard.toml")
    quarantine = open_quarantine(config)
    relay = RelayRunner(config, quarantine=quarantine, scanner=scanner)
    try:
        host, port = relay.server.outbound_address
        with smtplib.SMTP(host, port, timeout=30) as client:
            code, text = client.sendmail(STAFF, [OUTSIDE], P.done_when_body(OUTSIDE)) or (250, b"")
        held = quarantine.list()
        assert len(held) == 1 and next_hop.handler.messages == [] and sink.handler.messages == []
        releasing = replace(quarantine, release_host=f"{host}:{port}")
        results = releasing.release([held[0].id])
        assert all(r.ok for r in results), results
        delivered = next_hop.handler.wait_for(1)
        assert [m.rcpt_tos for m in delivered] == [[OUTSIDE]]
        assert b"X-MailGuard-Release-Token" not in delivered[0].data  # the marker is spent
        assert sink.handler.messages == []  # not back to the practice's own server
    finally:
        relay.stop()
        quarantine.close()
