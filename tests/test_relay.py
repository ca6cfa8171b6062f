"""The relay end to end: real SMTP clients (smtplib) talk to the relay on loopback, which
talks to a real SMTP server (aiosmtpd) standing in for the practice's mail server."""
from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import pytest

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.headers import strip_verdict_headers
from mailguard.model import Finding
from mailguard.quarantine import open_quarantine
from mailguard.scanner import Scanner
from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT,
    SENDER,
    LoopThread,
    RelayRunner,
    Sink,
    clean_message,
    malware_message,
    phish_message,
    loop_thread,
    relay_config,
    scanner,
    sink,
    start_relay,
)


def send(relay: RelayRunner, data: bytes, rcpts: tuple[str, ...] = (RECIPIENT,), sender: str = SENDER) -> Any:
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        return client.sendmail(sender, list(rcpts), data)


def header(data: bytes, name: str) -> str:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(name.lower().encode() + b":"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


def test_clean_mail_arrives_byte_identical_apart_from_added_headers(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    original = clean_message()
    send(relay, original, rcpts=(RECIPIENT, f"billing@{'practice.example'}"))
    got = sink.handler.wait_for(1)[0]
    assert got.mail_from == SENDER
    assert got.rcpt_tos == [RECIPIENT, "billing@practice.example"]
    assert strip_verdict_headers(got.data) == original
    assert header(got.data, "X-MailGuard-Action") == "accept"
    assert got.data.endswith(original.split(b"\r\n\r\n", 1)[1])


def test_downstream_reply_is_passed_back(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(RECIPIENT)
        code, text = client.data(clean_message())
    assert code == 250 and b"queued as SINK1" in text


def test_tagged_mail_arrives_tagged(start_relay: Any, sink: Sink) -> None:
    relay = start_relay(policy={"quarantine_at": 1000.0})
    send(relay, phish_message())
    got = sink.handler.wait_for(1)[0]
    assert header(got.data, "X-MailGuard-Action") == "tag"
    assert "LOOKALIKE_SENDER_DOMAIN" in got.data.decode()
    assert header(got.data, "Subject").startswith("[SUSPICIOUS] Invoice")
    assert b"CAUTION" not in got.data  # no banner unless configured


def test_banner_when_configured(start_relay: Any, sink: Sink) -> None:
    relay = start_relay(policy={"quarantine_at": 1000.0, "banner": True})
    send(relay, phish_message())
    text = sink.handler.wait_for(1)[0].data.decode()
    assert text.count("CAUTION: this message may be a scam") == 2  # plain and HTML halves
    assert "imitates paypal.com" in text
    assert text.rstrip().endswith("--alt-1--")


def test_quarantined_mail_is_in_the_store_not_downstream(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(RECIPIENT)
        code, _ = client.data(phish_message())
        assert code == 250
        client.mail(SENDER)  # the session goes on; a clean message after it is delivered
        client.rcpt(RECIPIENT)
        assert client.data(clean_message())[0] == 250
    delivered = sink.handler.wait_for(1)
    assert len(delivered) == 1 and b"Appointment" in delivered[0].data
    q = open_quarantine(relay_config(tmp_path, sink.port))
    try:
        entries = q.list()
        assert len(entries) == 1
        assert "LOOKALIKE_SENDER_DOMAIN" in entries[0].rules
        held = q.raw(entries[0].id)
        assert strip_verdict_headers(held) == phish_message()
        assert held.startswith(b"X-MailGuard-Action: quarantine\r\n")
    finally:
        q.close()


def test_malware_is_held_or_rejected(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_relay(policy={"actions": {"SIGNATURE_EICAR_TEST_FILE": "reject"}})
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(relay, malware_message())
    assert refused.value.smtp_code == 550
    assert b"5.7.1" in refused.value.smtp_error
    assert sink.handler.messages == []


def test_malware_held_by_default(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_relay()
    send(relay, malware_message())
    q = open_quarantine(relay_config(tmp_path, sink.port))
    try:
        assert ["SIGNATURE_EICAR_TEST_FILE" in e.rules for e in q.list()] == [True]
    finally:
        q.close()
    assert sink.handler.messages == []


def test_relay_to_other_domains_is_refused(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        client.mail(SENDER)
        code, text = client.rcpt("victim@elsewhere.example")
        assert code == 550 and b"5.7.1" in text
        code, _ = client.rcpt("someone@practice.example.evil.example")
        assert code == 550
        assert client.rcpt(RECIPIENT)[0] == 250
        assert client.data(clean_message())[0] == 250
    assert sink.handler.wait_for(1)[0].rcpt_tos == [RECIPIENT]


def test_trusted_network_may_relay_anywhere(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"trusted_networks": ["127.0.0.0/8"]})
    send(relay, clean_message(), rcpts=("patient@elsewhere.example",))
    assert sink.handler.wait_for(1)[0].rcpt_tos == ["patient@elsewhere.example"]


def test_forged_verdict_headers_never_survive(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    forged = (b"X-MailGuard-Action: accept\r\nX-Mailguard-Score: -100\r\nx-mailguard-rules: none\r\n"
              b"X-MailGuard-Note: trust me\r\n\tcontinued\r\n" + phish_message())
    relay_policy = start_relay(policy={"quarantine_at": 1000.0})
    send(relay_policy, forged)
    got = sink.handler.wait_for(1)[0]
    lines = [line for line in got.data.split(b"\r\n\r\n")[0].split(b"\r\n") if line.lower().startswith(b"x-mailguard")]
    assert [line.split(b":")[0] for line in lines] == [b"X-MailGuard-Action", b"X-MailGuard-Score",
                                                       b"X-MailGuard-Rules"]
    assert header(got.data, "X-MailGuard-Action") == "tag"
    assert b"trust me" not in got.data and b"continued" not in got.data
    assert relay is not relay_policy


def test_downstream_down_gives_4xx_and_nothing_is_lost(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    sink.stop()
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(relay, clean_message(7))
    assert deferred.value.smtp_code == 451 and b"4.4.1" in deferred.value.smtp_error
    sink.start()  # same port: the mail server is back; the sending server retries
    send(relay, clean_message(7))
    got = sink.handler.wait_for(1)
    assert len(got) == 1 and strip_verdict_headers(got[0].data) == clean_message(7)


def test_downstream_temporary_and_permanent_refusals(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    sink.handler.data_reply = "452 4.3.1 Insufficient system storage"
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(relay, clean_message())
    assert deferred.value.smtp_code == 451 and deferred.value.smtp_error[:5] == b"4.3.1"
    sink.handler.data_reply = "554 5.6.0 Content refused"
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(relay, clean_message())
    assert refused.value.smtp_code == 554 and b"5.6.0" in refused.value.smtp_error
    sink.handler.data_reply = "250 OK"
    sink.handler.refuse = {"gone@practice.example": "550 5.1.1 No such user"}
    with pytest.raises(smtplib.SMTPDataError) as unknown:
        send(relay, clean_message(), rcpts=(RECIPIENT, "gone@practice.example"))
    assert unknown.value.smtp_code == 550 and b"gone@practice.example" in unknown.value.smtp_error
    assert sink.handler.messages == []  # never delivered to some recipients behind the sender's back


def test_slow_downstream_gives_451(start_relay: Any, sink: Sink, loop_thread: LoopThread) -> None:
    import asyncio

    async def make_gate() -> asyncio.Event:
        return asyncio.Event()

    gate = loop_thread.call(make_gate())
    sink.handler.gate = gate
    relay = start_relay({"downstream_timeout": 1.0, "downstream_data_timeout": 1.0})
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(relay, clean_message())
    assert deferred.value.smtp_code == 451 and b"4.4.2" in deferred.value.smtp_error
    loop_thread.loop.call_soon_threadsafe(gate.set)


class _Broken(Analyzer):
    name = "broken"

    def analyze(self, message: Any) -> list[Finding]:
        raise RuntimeError("rules file damaged")


def test_scan_error_tempfails_by_default(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    config = relay_config(tmp_path, sink.port)
    relay = start_relay(scanner_override=Scanner(config, extra_analyzers=[_Broken({}, AnalyzerContext(config))]))
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(relay, clean_message())
    assert deferred.value.smtp_code == 451 and b"4.3.0" in deferred.value.smtp_error
    assert sink.handler.messages == []


def test_scan_error_accept_when_policy_says_so(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    config = relay_config(tmp_path, sink.port, policy={"on_error": "tag"})
    relay = start_relay(scanner_override=Scanner(config, extra_analyzers=[_Broken({}, AnalyzerContext(config))]))
    send(relay, clean_message())
    assert header(sink.handler.wait_for(1)[0].data, "X-MailGuard-Action") == "tag"


@pytest.mark.parametrize("name", ["relay.toml", "postfix-relay/mx-in-front.toml", "postfix-relay/proxy-filter.toml",
                                  "postfix-relay/content-filter.toml"])
def test_example_configurations_are_valid(name: str) -> None:
    from mailguard.config import load_config
    from mailguard.relay.settings import RelaySettings

    config = load_config(Path(__file__).resolve().parent.parent / "examples" / name)
    settings = RelaySettings.from_config(config)
    assert settings.relay_domains or settings.trusted_networks


def test_long_lines_pass_untouched(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    original = clean_message().replace(b"See you then.", b"See you then. " + b"<td>cell</td>" * 800)
    send(relay, original)
    assert strip_verdict_headers(sink.handler.wait_for(1)[0].data) == original


def test_process_pool_scans_in_worker_processes(tmp_path: Path, sink: Sink) -> None:
    config = relay_config(tmp_path, sink.port, {"pool": "processes", "workers": 1})
    quarantine = open_quarantine(config)
    relay = RelayRunner(config, quarantine=quarantine)
    try:
        assert relay.server.state.pool.kind == "processes"
        send(relay, clean_message())
        send(relay, phish_message())
        assert len(sink.handler.wait_for(1)) == 1
        assert len(quarantine.list()) == 1
    finally:
        relay.stop()
        quarantine.close()


def test_one_log_line_per_message_without_content(start_relay: Any, sink: Sink) -> None:
    import logging

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logger = logging.getLogger("mailguard.relay")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        relay = start_relay()
        send(relay, clean_message())
        send(relay, phish_message())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [r for r in records if r.getMessage() == "message"]
    assert [line.fields["result"] for line in lines] == ["delivered", "quarantined"]  # type: ignore[attr-defined]
    held = lines[1].fields  # type: ignore[attr-defined]
    assert held["message_id"] == "<inv0@paypa1.com>" and "LOOKALIKE_SENDER_DOMAIN" in held["rules"]
    assert held["client"] == "127.0.0.1" and held["queue_id"] and held["reply"] == 250 and "elapsed_ms" in held
    text = repr([r.__dict__ for r in records])
    for private in ("Appointment", "Invoice INV", "frontdesk@", SENDER, "past due"):
        assert private not in text


class _FullDisk:
    """A quarantine whose storage fails, as a full or read-only disk would make it."""

    def store(self, raw: bytes, envelope: Any, verdict: Any) -> str:
        from mailguard.quarantine import QuarantineError

        raise QuarantineError("could not store the message in the quarantine: disk I/O error")


def test_quarantine_failure_is_451_never_250(tmp_path: Path, sink: Sink, scanner: Scanner) -> None:
    relay = RelayRunner(relay_config(tmp_path, sink.port), quarantine=_FullDisk(), scanner=scanner)
    try:
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            send(relay, phish_message())
        assert deferred.value.smtp_code == 451
        send(relay, clean_message())  # mail that needs no holding still flows
    finally:
        relay.stop()
    assert len(sink.handler.wait_for(1)) == 1


def test_international_addresses_pass_with_smtputf8(start_relay: Any, sink: Sink) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        assert client.has_extn("smtputf8")
        client.sendmail("j\u00fcrgen@partner.example", ["empfang@practice.example"], clean_message(),
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    got = sink.handler.wait_for(1)[0]
    assert got.mail_from == "j\u00fcrgen@partner.example"


def test_a_killed_scan_process_is_replaced(tmp_path: Path, sink: Sink) -> None:
    import os
    import signal

    config = relay_config(tmp_path, sink.port, {"pool": "processes", "workers": 1})
    quarantine = open_quarantine(config)
    relay = RelayRunner(config, quarantine=quarantine)
    try:
        send(relay, clean_message(1))
        pool = relay.server.state.pool
        for pid in pool.worker_pids():
            os.kill(pid, signal.SIGKILL)
        for attempt in range(5):  # the messages caught by a dying process are deferred, then a fresh one scans
            try:
                send(relay, clean_message(2))
                break
            except smtplib.SMTPDataError as exc:
                assert exc.smtp_code == 451
        else:
            raise AssertionError("the pool never recovered")
    finally:
        relay.stop()
        quarantine.close()
    assert len(sink.handler.wait_for(2)) == 2


def test_verify_recipients_refuses_only_the_unknown_one(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"verify_recipients": True})
    sink.handler.refuse = {"gone@practice.example": "550 5.1.1 No such user here"}
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        client.mail(SENDER)
        code, text = client.rcpt("gone@practice.example")
        assert code == 550 and b"No such user here" in text
        assert client.rcpt(RECIPIENT)[0] == 250
        assert client.data(clean_message())[0] == 250
    assert sink.handler.wait_for(1)[0].rcpt_tos == [RECIPIENT]


def test_verify_recipients_with_the_downstream_down_is_451(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"verify_recipients": True})
    sink.stop()
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt(RECIPIENT)[0] == 451
    sink.start()


def test_held_message_loses_forged_verdict_headers(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_relay()
    send(relay, b"X-MailGuard-Action: accept\r\nX-MailGuard-Score: 0.0\r\n" + phish_message())
    q = open_quarantine(relay_config(tmp_path, sink.port))
    try:
        held = q.raw(q.list()[0].id)
    finally:
        q.close()
    assert held.count(b"X-MailGuard-Action:") == 1 and b"X-MailGuard-Action: quarantine" in held
    assert strip_verdict_headers(held) == phish_message()


@pytest.mark.parametrize("relay, message", [
    ({"tls_cert": "c.pem"}, "tls_cert and tls_key must be set together"),
    ({"require_tls": True}, "require_tls: needs tls_cert"),
    ({"trusted_networks": ["10.0.0.0/33"]}, "trusted_networks"),
    ({"downstream": "mail.example:0"}, "downstream"),
    ({"listen": "[::1"}, "listen"),
])
def test_relay_settings_errors_name_the_key(tmp_path: Path, relay: dict[str, Any], message: str) -> None:
    from mailguard.config import ConfigError
    from mailguard.relay.settings import RelaySettings

    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        RelaySettings.from_config(relay_config(tmp_path, 25, relay))


def test_relay_domains_and_trusted_networks() -> None:
    from mailguard.config import Config
    from mailguard.relay.settings import RelaySettings

    settings = RelaySettings.from_config(Config.from_dict({"relay": {
        "relay_domains": ["Practice.Example.", "@clinic.example"],
        "trusted_networks": ["192.168.10.0/24", "2001:db8::/32"]}}))
    assert settings.accepts_domain("Front.Desk@PRACTICE.example")
    assert settings.accepts_domain("a@billing.practice.example")
    assert settings.accepts_domain("a@clinic.example.")
    assert not settings.accepts_domain("a@notpractice.example")
    assert not settings.accepts_domain("a@practice.example.evil.example")
    assert not settings.accepts_domain("no-domain")
    assert settings.is_trusted("192.168.10.7") and settings.is_trusted("::ffff:192.168.10.7")
    assert settings.is_trusted("2001:db8::1") and not settings.is_trusted("192.168.11.1")
    assert not settings.is_trusted("not an address")
