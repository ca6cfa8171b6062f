"""The outbound listener end to end: a real SMTP client (smtplib) hands mail to the relay's
second listener on loopback, which delivers to a real next hop (aiosmtpd), holds the mail
in the real quarantine, or refuses it. Patient data is built in code (tests/phi_samples)."""
from __future__ import annotations

import logging
import smtplib
import ssl
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailguard.config import Config, ConfigError
from mailguard.quarantine import open_quarantine
from mailguard.relay.outbound import consent_hash
from mailguard.scanner import Scanner
import phi_samples as P
from dns_server import loopback_dns
from test_relay_support import (  # noqa: F401 (fixtures)
    PRACTICE,
    LoopThread,
    RelayRunner,
    Sink,
    loop_thread,
    scanner,
    self_signed,
    sink,
)

STAFF = f"dr.roe@{PRACTICE}"
OUTSIDE = "someone@outside.example"
INTERNAL = f"billing@{PRACTICE}"


def outbound_config(folder: Path, next_hop: str, **outbound: Any) -> Config:
    settings: dict[str, Any] = {"listen": "127.0.0.1:0", "next_hop": next_hop, "internal_domains": [PRACTICE],
                                "next_hop_timeout": 5.0}
    settings.update(outbound)
    return Config.from_dict({
        "relay": {"listen": "127.0.0.1:0", "downstream": next_hop, "relay_domains": [PRACTICE],
                  "hostname": "mailguard.test", "workers": 2},
        "outbound": settings,
        "quarantine": {"path": str(folder / "q"), "key_file": str(folder / "quarantine.key")},
        "dns": loopback_dns(),
    }, folder / "mailguard.toml")


@pytest.fixture()
def start_outbound(tmp_path: Path, sink: Sink, scanner: Scanner) -> Iterator[Any]:
    started: list[tuple[RelayRunner, Any]] = []

    def start(next_hop: str | None = None, **outbound: Any) -> RelayRunner:
        config = outbound_config(tmp_path, next_hop or f"127.0.0.1:{sink.port}", **outbound)
        quarantine = open_quarantine(config)
        runner = RelayRunner(config, quarantine=quarantine, scanner=scanner)
        runner.outbound = runner.server.outbound_address  # type: ignore[attr-defined]
        started.append((runner, quarantine))
        return runner

    yield start
    for runner, quarantine in started:
        runner.stop()
        quarantine.close()


def send(relay: RelayRunner, data: bytes, rcpts: tuple[str, ...], sender: str = STAFF) -> tuple[int, bytes]:
    host, port = relay.outbound  # type: ignore[attr-defined]
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo()
        client.mail(sender)
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        return client.data(data)


def entries(tmp_path: Path, sink: Sink) -> list[Any]:
    q = open_quarantine(outbound_config(tmp_path, f"127.0.0.1:{sink.port}"))
    try:
        return q.list()
    finally:
        q.close()


def text_of(raw: bytes) -> str:
    import email
    import email.policy

    message = email.message_from_bytes(raw, policy=email.policy.default)
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def messages_to(sink: Sink, rcpt: str) -> list[Any]:
    return [m for m in sink.handler.messages if rcpt in m.rcpt_tos]


def test_patient_data_in_the_body_to_outside_is_held_not_delivered(start_outbound: Any, sink: Sink,
                                                                   tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    relay = start_outbound()
    with caplog.at_level(logging.DEBUG):
        code, text = send(relay, P.done_when_body(OUTSIDE), (OUTSIDE,))
    assert code == 250 and b"Held for review" in text
    notice = sink.handler.wait_for(1)[0]  # only the notice to the sender arrives
    assert notice.rcpt_tos == [STAFF] and notice.mail_from in ("", "<>")  # the null sender
    assert messages_to(sink, OUTSIDE) == []
    body = text_of(notice.data)
    assert "2 Social Security numbers" in body and "1 insurance member ID" in body
    held = entries(tmp_path, sink)
    assert len(held) == 1
    assert {"PHI_HIGH_CONFIDENCE", "OUTBOUND_TLS_UNAVAILABLE"} <= set(held[0].rules)
    assert any("no verified TLS" in r for r in held[0].reasons)
    # Never the values: not in the notice, the SMTP reply, the logs or the quarantine's
    # clear-text columns (the database holds them only sealed).
    # mailguard's own log (aiosmtpd's debug log, which echoes DATA, is off in `serve`).
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records
                       if r.name.startswith("mailguard"))
    database = b"".join(p.read_bytes() for p in (tmp_path / "q").rglob("*") if p.is_file())
    for value in P.SECRET_VALUES:
        assert value not in body and value.encode() not in text
        assert value not in logged
        assert value.encode() not in database
        assert value not in " ".join(held[0].reasons)
    assert "phi" in logged and "OUTBOUND_TLS_UNAVAILABLE" in logged


def test_patient_data_in_a_pdf_to_outside_is_held(start_outbound: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_outbound(notify_sender=False)
    code, text = send(relay, P.done_when_pdf(OUTSIDE), (OUTSIDE,))
    assert code == 250 and b"Held for review" in text
    held = entries(tmp_path, sink)
    assert len(held) == 1 and "PHI_HIGH_CONFIDENCE" in held[0].rules
    assert any("in the attachments" in r for r in held[0].reasons)
    assert sink.handler.messages == []


def test_the_pdf_sample_has_extractable_text() -> None:
    from mailguard.analyzers.phi.extract import pdf_text

    assert "536-22-1234" in pdf_text(P.pdf(P.DONE_WHEN_TEXT))


def test_patient_data_to_an_internal_address_is_delivered(start_outbound: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_outbound()
    code, _ = send(relay, P.done_when_body(INTERNAL), (INTERNAL,))
    assert code == 250
    got = sink.handler.wait_for(1)[0]
    assert got.rcpt_tos == [INTERNAL] and b"536-22-1234" in got.data
    assert entries(tmp_path, sink) == []


def test_mixed_recipients_hold_the_whole_message(start_outbound: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_outbound(notify_sender=False)
    code, _ = send(relay, P.done_when_body(OUTSIDE), (INTERNAL, OUTSIDE))
    assert code == 250
    held = entries(tmp_path, sink)
    assert len(held) == 1 and list(held[0].envelope.rcpt_tos) == [INTERNAL, OUTSIDE]
    assert sink.handler.messages == []


def test_ordinary_business_mail_to_outside_is_delivered(start_outbound: Any, sink: Sink, tmp_path: Path) -> None:
    relay = start_outbound()
    for n in range(3):
        assert send(relay, P.business_mail(OUTSIDE, n), (OUTSIDE,))[0] == 250
    got = sink.handler.wait_for(3)
    assert [m.rcpt_tos for m in got] == [[OUTSIDE]] * 3
    assert all(b"X-MailGuard-Action: accept" in m.data for m in got)
    assert entries(tmp_path, sink) == []


def test_require_tls_delivers_patient_data_over_verified_tls_only(loop_thread: LoopThread, start_outbound: Any,
                                                                 tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    secure = Sink(loop_thread, tls_context=context)
    try:
        relay = start_outbound(f"localhost:{secure.port}", next_hop_ca_file=str(cert), next_hop_tls="none")
        code, _ = send(relay, P.done_when_body(OUTSIDE), (OUTSIDE,))
        assert code == 250
        got = secure.handler.wait_for(1)[0]
        assert got.rcpt_tos == [OUTSIDE] and got.tls
        # The same next hop for ordinary mail follows next_hop_tls ("none" here): plain.
        send(relay, P.business_mail(OUTSIDE), (OUTSIDE,))
        assert secure.handler.wait_for(2)[1].tls is False
        # An unverifiable certificate counts as no TLS: held, not delivered.
        untrusted = start_outbound(f"localhost:{secure.port}", notify_sender=False)
        code, text = send(untrusted, P.done_when_body(OUTSIDE), (OUTSIDE,))
        assert code == 250 and b"Held for review" in text
        assert len(secure.handler.messages) == 2
    finally:
        secure.stop()


def test_refuse_says_what_kinds_and_what_to_do(start_outbound: Any, sink: Sink) -> None:
    relay = start_outbound(phi_high="refuse")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        host, port = relay.outbound  # type: ignore[attr-defined]
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.sendmail(STAFF, [OUTSIDE], P.done_when_body(OUTSIDE))
    assert refused.value.smtp_code == 550
    reason = refused.value.smtp_error.decode()
    assert "2 Social Security numbers" in reason and "secure" in reason
    assert not any(v in reason for v in P.SECRET_VALUES)
    assert sink.handler.messages == []


def test_warn_delivers_and_notifies_the_sender(start_outbound: Any, sink: Sink) -> None:
    relay = start_outbound(phi_high="warn")
    assert send(relay, P.done_when_body(OUTSIDE), (OUTSIDE,))[0] == 250
    got = sink.handler.wait_for(2)
    assert [m.rcpt_tos for m in got] == [[OUTSIDE], [STAFF]]
    assert "Patient data in a message you sent" in got[1].data.decode()
    assert "send patient data through the practice's secure" in text_of(got[1].data)


def test_consenting_patient_and_business_associate(start_outbound: Any, sink: Sink, tmp_path: Path) -> None:
    consent = tmp_path / "consent.txt"
    consent.write_text(f"# patients who asked for plain email\n{consent_hash('Patient@Home.example')}\n")
    relay = start_outbound(consent_file=str(consent), business_associates=["billing-partner.example"])
    assert send(relay, P.done_when_body("patient@home.example"), ("patient@home.example",))[0] == 250
    assert sink.handler.wait_for(1)[0].rcpt_tos == ["patient@home.example"]
    assert b"patient@home.example" not in consent.read_bytes().lower()
    # A business associate gets it only over verified TLS; this next hop has none: held.
    code, text = send(relay, P.done_when_body("ar@billing-partner.example"), ("ar@billing-partner.example",))
    assert code == 250 and b"Held for review" in text
    assert len(entries(tmp_path, sink)) == 1


def test_consent_file_with_an_address_in_clear_is_an_error(tmp_path: Path) -> None:
    consent = tmp_path / "consent.txt"
    consent.write_text("patient@home.example\n")
    from mailguard.relay.outbound import OutboundSettings

    with pytest.raises(ConfigError, match="line 1.*not an address in clear"):
        OutboundSettings.from_config(outbound_config(tmp_path, "127.0.0.1:25", consent_file=str(consent)), "h")


def test_listen_without_next_hop_is_an_error(tmp_path: Path) -> None:
    from mailguard.relay.outbound import OutboundSettings

    with pytest.raises(ConfigError, match="next_hop: required"):
        OutboundSettings.from_config(outbound_config(tmp_path, ""), "h")


def test_misdirected_lookalike_domain_is_held_with_an_explanation(start_outbound: Any, sink: Sink,
                                                                  tmp_path: Path) -> None:
    history = tmp_path / "history.json"
    relay = start_outbound(history_file=str(history), history_min_messages=2, notify_sender=False)
    for n in range(2):  # the practice writes to labcorp.com ...
        assert send(relay, P.business_mail("results@labcorp.com", n), ("results@labcorp.com",))[0] == 250
    sink.handler.wait_for(2)
    assert '"labcorp.com": 2' in history.read_text()
    assert "results@" not in history.read_text()  # domains only, never addresses
    # ... so labcorp.co (a different ending) is held, even without patient data.
    code, text = send(relay, P.business_mail("results@labcorp.co"), ("results@labcorp.co",))
    assert code == 250 and b"Held for review" in text
    held = entries(tmp_path, sink)
    assert len(held) == 1 and "OUTBOUND_HELD" in held[0].rules
    assert any("labcorp.co imitates labcorp.com" in r for r in held[0].reasons)
    assert len(sink.handler.messages) == 2


def test_clients_outside_the_trusted_networks_are_refused(start_outbound: Any, sink: Sink) -> None:
    relay = start_outbound(trusted_networks=["10.99.0.0/16"])
    host, port = relay.outbound  # type: ignore[attr-defined]
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo()
        client.mail(STAFF)
        code, text = client.rcpt(OUTSIDE)
    assert code == 550 and b"5.7.1" in text
    assert sink.handler.messages == []


def test_malware_going_out_is_held_like_inbound(start_outbound: Any, sink: Sink, tmp_path: Path) -> None:
    from test_relay_support import malware_message

    relay = start_outbound()
    assert send(relay, malware_message(), (OUTSIDE,))[0] == 250
    held = entries(tmp_path, sink)
    assert len(held) == 1 and "SIGNATURE_EICAR_TEST_FILE" in held[0].rules
    assert sink.handler.messages == []


def test_the_inbound_listener_does_not_look_for_patient_data(start_outbound: Any, sink: Sink) -> None:
    relay = start_outbound()
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        client.sendmail("someone@outside.example", [INTERNAL], P.done_when_body(INTERNAL))
    got = sink.handler.wait_for(1)[0]
    assert b"PHI_" not in got.data


def test_phishing_score_holds_outbound_mail_only_from_the_outbound_threshold(tmp_path: Path) -> None:
    from mailguard.model import Action, Finding, Verdict
    from mailguard.relay.outbound import OutboundSettings, outbound_verdict

    settings = OutboundSettings.from_config(outbound_config(tmp_path, "127.0.0.1:25"), "h")
    assert settings is not None and settings.quarantine_at == 15.0
    lure = Finding("language", "LANGUAGE_CREDENTIAL_REQUEST", 12.0, "asks to sign in")
    assert outbound_verdict(settings, Verdict(12.0, Action.QUARANTINE, (lure,))).action == Action.TAG
    assert outbound_verdict(settings, Verdict(16.0, Action.QUARANTINE, (lure,))).action == Action.QUARANTINE
    malware = Finding("signatures", "SIGNATURE_EICAR_TEST_FILE", 1.0, "test virus", min_action=Action.QUARANTINE)
    assert outbound_verdict(settings, Verdict(1.0, Action.QUARANTINE, (malware,))).action == Action.QUARANTINE
