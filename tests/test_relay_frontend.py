"""The relay's front end made cheap without changing what a client or the downstream
server sees: sessions set up without aiosmtpd's introspection, addresses parsed by a
regex where the email parser would give the same, DATA read in bulk, downstream
connections kept between messages (issue 16)."""
from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.smtp import SMTP

from mailguard.relay.data import read_data
from mailguard.relay.handler import RelayHandler, RelaySMTP, SessionSet
from mailguard.relay.session_init import KNOWN_AIOSMTPD
from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT, SENDER, LoopThread, Sink, clean_message, loop_thread, scanner, start_relay,
)


class _Runtime:
    state: Any = None
    quarantine: Any = None
    draining = False


def _session(handler: RelayHandler, loop: asyncio.AbstractEventLoop) -> RelaySMTP:
    return RelaySMTP(handler, sessions=SessionSet(), data_timeout=30, data_size_limit=1000, enable_SMTPUTF8=True,
                     hostname="mailguard.test", ident="ESMTP mailguard", tls_context=None,
                     require_starttls=False, timeout=30, loop=loop)


def test_a_session_set_up_from_the_layout_equals_aiosmtpds_own() -> None:
    import aiosmtpd

    if aiosmtpd.__version__ != KNOWN_AIOSMTPD:
        pytest.skip(f"aiosmtpd {aiosmtpd.__version__}: every session takes aiosmtpd's own __init__")
    loop = asyncio.new_event_loop()
    try:
        handler = RelayHandler(_Runtime())
        first, second = _session(handler, loop), _session(handler, loop)  # the second from the layout
        assert handler.smtp_layouts
        skip = {"_stream_reader_wr", "_strong_reader", "_closed", "_deadline", "_previous_deadline"}
        a, b = vars(first), vars(second)
        assert a.keys() == b.keys()
        for key in a.keys() - skip:
            if key in ("_auth_methods", "_smtp_methods", "_handle_hooks"):
                assert a[key].keys() == b[key].keys(), key
                for name in a[key]:
                    left, right = a[key][name], b[key][name]
                    if key == "_auth_methods":
                        left, right = left.method, right.method
                    assert getattr(left, "__func__", left) is getattr(right, "__func__", right), (key, name)
                    if key != "_handle_hooks":  # commands and built-in AUTH bound to their own session
                        assert left.__self__ is first and right.__self__ is second
            elif key.endswith("_cb") or key in ("_loop", "loop", "event_handler"):
                assert a[key] is b[key] or getattr(a[key], "__func__", None) is getattr(b[key], "__func__", None), key
            elif key == "_closed":
                continue
            elif isinstance(a[key], (str, int, float, bool, type(None))):
                assert a[key] == b[key], key
        assert second._stream_reader is not first._stream_reader
        assert second._stream_reader._limit == first._stream_reader._limit == RelaySMTP.line_length_limit
    finally:
        loop.close()


@pytest.mark.parametrize("arg", [
    "<a@b.example>", "<a@b.example> SIZE=100", " <a.b+c@x-y.example> BODY=8BITMIME", "<a@b.c>  \t SIZE=1 X=2 ",
    "<a@b.c> (comment) SIZE=1", "<a@b.c>(c)", "<A@B.C>\tSMTPUTF8", "<>", "<a..b@c>", "<.a@c>", "<a@[192.0.2.1]>",
    '<"q x"@c>', "<@route:a@b>", "a@b.c", "<a@b.c", "<a@b.c>x", "<a@b..c>", "<\u00e4@b.c>", "<a@b.c.>",
    "<a@b.c> \x00", "<a@b.c><d@e.f>", "<a%b@c.d>", "",
])
def test_addresses_parse_as_aiosmtpd_parses_them(arg: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        session = _session(RelayHandler(_Runtime()), loop)
        assert session._getaddr(arg) == SMTP._getaddr(session, arg)
    finally:
        loop.close()


def _read(chunks: list[bytes], size_limit: int | None = None, line_limit: int = 1 << 20) -> Any:
    async def go() -> Any:
        reader = asyncio.StreamReader(limit=line_limit)
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        data = await read_data(reader, size_limit, line_limit)
        return data, await reader.read()

    return asyncio.run(go())


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 1000])
def test_data_is_read_whole_however_it_arrives(cut: int) -> None:
    wire = b"Subject: x\r\n\r\nends with a stop.\r\n..dotted\r\n..\r\nmid.\r\nlast line\r\n.\r\nQUIT\r\n"
    chunks = [wire[i:i + cut] for i in range(0, len(wire), cut)]
    data, rest = _read(chunks)
    assert data.content == b"Subject: x\r\n\r\nends with a stop.\r\n.dotted\r\n.\r\nmid.\r\nlast line\r\n"
    assert rest == b"QUIT\r\n"  # a pipelined command after the end stays for the session


def test_data_edge_cases() -> None:
    assert _read([b".\r\nQUIT\r\n"]) == (_read([b".\r\n"])[0], b"QUIT\r\n")
    assert _read([b".\r\n"])[0].content == b""
    assert _read([b".leading\r\n.\r\n"])[0].content == b"leading\r\n"
    assert _read([b"one line\r\n.\r\n"])[0].content == b"one line\r\n"
    assert _read([b"a\n.\r\nb\r.\r\nc\r\n.\r\n"])[0].content == b"a\n.\r\nb\r.\r\nc\r\n"  # lone LF/CR never end it
    assert _read([b"cut off in the middle"])[0] is None
    assert _read([b"x" * 50 + b"\r\n" + b"y" * 50 + b"\r\n.\r\n"], size_limit=60)[0].refusal.startswith("552")
    long_line = b"z" * 3000 + b"\r\n.\r\n"
    assert _read([long_line], line_limit=1024)[0].refusal.startswith("500")
    assert _read([long_line], line_limit=4096)[0].content == b"z" * 3000 + b"\r\n"


# ---------------------------------------------------------------- downstream connections kept


class _CountingSink(Sink):
    """The sink, counting its SMTP sessions and able to drop them all (a server's idle timeout)."""

    def __init__(self, runner: LoopThread) -> None:
        self.sessions: list[SMTP] = []
        super().__init__(runner)

    def _protocol(self) -> SMTP:
        session = super()._protocol()
        self.sessions.append(session)
        return session

    def drop_all(self) -> None:
        async def go() -> None:
            for session in self.sessions:
                if session.transport is not None:
                    session.transport.close()

        self.runner.call(go())


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def sink(loop_thread: LoopThread, request: pytest.FixtureRequest) -> Iterator[_CountingSink]:
    """The downstream server, once without PIPELINING (each command answered before the next
    is sent) and once with it (MAIL, RCPT and DATA sent together, as to Postfix)."""
    server = _CountingSink(loop_thread)
    server.handler.pipelining = request.param
    yield server
    server.stop()


def _send(relay: Any, message: bytes, rcpt: str = RECIPIENT) -> int:
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
            client.sendmail(SENDER, [rcpt], message)
        return 250
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code
    except smtplib.SMTPRecipientsRefused as exc:
        return next(iter(exc.recipients.values()))[0]
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code


def test_one_downstream_connection_carries_many_messages(start_relay: Any, sink: _CountingSink) -> None:
    relay = start_relay()
    assert [_send(relay, clean_message(n)) for n in range(4)] == [250] * 4
    assert len(sink.handler.wait_for(4)) == 4
    assert len(sink.sessions) == 1


def test_a_recipient_refused_downstream_leaves_the_connection_usable(start_relay: Any, sink: _CountingSink) -> None:
    relay = start_relay()
    sink.handler.refuse["gone@practice.example"] = "550 5.1.1 No such user"
    assert _send(relay, clean_message(1), "gone@practice.example") == 550
    assert _send(relay, clean_message(2)) == 250
    assert [m.rcpt_tos for m in sink.handler.wait_for(1)] == [[RECIPIENT]]
    assert len(sink.sessions) == 1


def test_one_recipient_of_two_refused_downstream_delivers_nothing(start_relay: Any, sink: _CountingSink) -> None:
    relay = start_relay()
    sink.handler.refuse["gone@practice.example"] = "550 5.1.1 No such user"
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, [RECIPIENT, "gone@practice.example"], clean_message(1))
    assert refused.value.smtp_code == 550 and b"gone@practice.example" in refused.value.smtp_error
    assert _send(relay, clean_message(2)) == 250  # the next message still goes through
    received = sink.handler.wait_for(1)
    assert [(m.rcpt_tos, b"Thursday 2" in m.data) for m in received] == [([RECIPIENT], True)]


def test_a_kept_connection_the_server_dropped_costs_no_retry(start_relay: Any, sink: _CountingSink) -> None:
    relay = start_relay()
    assert _send(relay, clean_message(1)) == 250
    sink.drop_all()  # as a server's idle timeout would
    assert _send(relay, clean_message(2)) == 250  # over a fresh connection, not 451
    assert [b"Thursday 2" in m.data for m in sink.handler.wait_for(2)] == [False, True]
    assert len(sink.sessions) == 2


def test_downstream_gone_is_still_451(start_relay: Any, sink: _CountingSink) -> None:
    relay = start_relay()
    assert _send(relay, clean_message(1)) == 250
    sink.stop()
    sink.drop_all()
    assert _send(relay, clean_message(2)) == 451
    sink.start()
    assert _send(relay, clean_message(3)) == 250


def test_a_reload_closes_kept_connections_and_mail_keeps_flowing(start_relay: Any, sink: _CountingSink,
                                                                 tmp_path: Path) -> None:
    from test_relay_support import relay_config

    relay = start_relay()
    assert _send(relay, clean_message(1)) == 250
    assert relay.call(lambda: relay.server.reload(relay_config(tmp_path, sink.port, {"pool": "threads"})), 60)
    assert _send(relay, clean_message(2)) == 250
    assert len(sink.handler.wait_for(2)) == 2
    assert len(sink.sessions) == 2  # the old configuration's connection was closed, a new one opened
