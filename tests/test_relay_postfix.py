"""The relay with a real, throwaway Postfix (the arrangements of examples/postfix-relay/):
Postfix as the downstream server, and Postfix handing mail to mailguard before queueing it
(smtpd_proxy_filter), so that mailguard's answer is the one the sender gets."""
from __future__ import annotations

import smtplib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailguard.headers import strip_verdict_headers
from mailguard.quarantine import open_quarantine
from mailguard.scanner import Scanner
from postfix_instance import PostfixInstance, postfix_available
from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT,
    SENDER,
    LoopThread,
    RelayRunner,
    Sink,
    clean_message,
    loop_thread,
    malware_message,
    phish_message,
    relay_config,
    scanner,
    sink,
)

pytestmark = [
    pytest.mark.skipif(not postfix_available(), reason="Postfix is not installed"),
    pytest.mark.slow,
]


@dataclass
class ThrowawayPostfix(PostfixInstance):
    """PostfixInstance without a milter; ``proxy_port`` turns on smtpd_proxy_filter."""

    proxy_port: int = 0

    def main_cf(self) -> str:
        lines = [line for line in super().main_cf().splitlines() if not line.startswith(("milter", "smtpd_milters",
                                                                                          "non_smtpd_milters"))]
        if self.proxy_port:
            lines += [f"smtpd_proxy_filter = 127.0.0.1:{self.proxy_port}", "smtpd_proxy_options = speed_adjust",
                      "smtpd_proxy_timeout = 60s"]
        return "\n".join(lines) + "\n"


@pytest.fixture()
def postfix_downstream(sink: Sink) -> Iterator[ThrowawayPostfix]:
    instance = ThrowawayPostfix(sink_port=sink.port, milter_port=0)
    instance.start()
    yield instance
    instance.stop()


def test_postfix_as_the_downstream(postfix_downstream: ThrowawayPostfix, sink: Sink, tmp_path: Path,
                                   scanner: Scanner) -> None:
    config = relay_config(tmp_path, postfix_downstream.smtpd_port, {"downstream_tls": "none"},
                          policy={"quarantine_at": 1000.0})
    relay = RelayRunner(config, quarantine=open_quarantine(config), scanner=Scanner(config))
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
            client.sendmail(SENDER, [RECIPIENT], clean_message())
            client.sendmail(SENDER, [RECIPIENT], phish_message())
            code, text = client.rcpt("x@elsewhere.example") if client.mail(SENDER)[0] == 250 else (0, b"")
            assert code == 550
        received = sink.handler.wait_for(2, timeout=60)
    finally:
        relay.stop()
    clean = next(m for m in received if b"Appointment" in m.data)
    # Postfix adds its Received: line on top; below it, the message as the relay sent it.
    assert strip_verdict_headers(clean.data).endswith(clean_message())
    phish = next(m for m in received if b"INV-0" in m.data)
    assert b"X-MailGuard-Action: tag" in phish.data and b"[SUSPICIOUS] Invoice" in phish.data


def test_postfix_before_queue_proxy_passes_mailguards_answer(sink: Sink, tmp_path: Path, scanner: Scanner) -> None:
    config = relay_config(tmp_path, sink.port, {"trusted_networks": ["127.0.0.1/32"]},
                          policy={"actions": {"SIGNATURE_EICAR_TEST_FILE": "reject"}})
    quarantine = open_quarantine(config)
    relay = RelayRunner(config, quarantine=quarantine, scanner=Scanner(config))
    postfix = ThrowawayPostfix(sink_port=sink.port, milter_port=0, proxy_port=relay.port).start()
    try:
        with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=60) as client:
            client.sendmail(SENDER, [RECIPIENT], clean_message())
            client.sendmail(SENDER, [RECIPIENT], phish_message())  # held: 250, and not delivered
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail(SENDER, [RECIPIENT], malware_message())
            assert refused.value.smtp_code == 550 and b"5.7.1" in refused.value.smtp_error
        received = sink.handler.wait_for(1, timeout=60)
        assert len(quarantine.list()) == 1
        relay.stop()
        with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=60) as client:
            with pytest.raises(smtplib.SMTPDataError) as deferred:  # mailguard is down: Postfix says 4xx
                client.sendmail(SENDER, [RECIPIENT], clean_message(2))
            assert 400 <= deferred.value.smtp_code < 500
    finally:
        postfix.stop()
        quarantine.close()
    # (Postfix may also mail the postmaster a transcript of the failed proxy connection.)
    from_sender = [m for m in sink.handler.messages if m.mail_from == SENDER]
    assert len(from_sender) == 1 and b"Appointment moved to Thursday 0" in received[0].data
    assert b"X-MailGuard-Action: accept" in received[0].data


