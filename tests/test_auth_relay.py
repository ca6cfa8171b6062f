"""Authentication through the relay (`mailguard serve`), against a loopback dnsmasq:
messages signed here with dkimpy and sent with smtplib. The client is on loopback, as
Postfix is when it hands mail to the relay as a content filter: the Received line it adds
(``via_mx``) names the sending server whose SPF is checked."""
from __future__ import annotations

import smtplib
import threading
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailguard.config import Config
from mailguard.quarantine import open_quarantine
from mailguard.scanner import Scanner

from auth_world import AUTHSERV_ID, auth_config, dns_server, message, sign, via_mx
from dns_server import DnsServer, closed_port
from postfix_instance import wait_until
from test_relay_support import RECIPIENT, RelayRunner, Sink, loop_thread, sink  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with dns_server() as server:
        yield server


def config_for(tmp: Path, sink: Sink, nameserver: str, timeout_ms: int = 500) -> Config:
    data: dict[str, Any] = auth_config(nameserver)
    data["dns"]["timeout_ms"] = timeout_ms
    data["relay"] = {"listen": "127.0.0.1:0", "downstream": f"127.0.0.1:{sink.port}",
                     "relay_domains": ["practice.example"], "hostname": "relay.test", "workers": 2}
    data["quarantine"] = {"path": str(tmp / "q"), "key_file": str(tmp / "quarantine.key")}
    return Config.from_dict(data, tmp / "mailguard.toml")


@pytest.fixture()
def start(tmp_path: Path, sink: Sink) -> Iterator[Any]:
    started: list[tuple[RelayRunner, Any]] = []

    def go(nameserver: str, timeout_ms: int = 500) -> tuple[RelayRunner, Scanner]:
        config = config_for(tmp_path, sink, nameserver, timeout_ms)
        scanner = Scanner(config)
        quarantine = open_quarantine(config)
        runner = RelayRunner(config, quarantine=quarantine, scanner=scanner)
        started.append((runner, quarantine))
        return runner, scanner

    yield go
    for runner, quarantine in started:
        runner.stop()
        quarantine.close()


def send(relay: RelayRunner, data: bytes, mail_from: str) -> tuple[int, bytes]:
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        client.ehlo("mail.good.example")
        client.mail(mail_from)
        client.rcpt(RECIPIENT)
        return client.data(data)


def headers(data: bytes, name: str) -> list[str]:
    return [str(v) for v in message_from_bytes(data, policy=policy.default).get_all(name) or []]


def test_aligned_mail_is_delivered_with_dmarc_pass(start: Any, sink: Sink, dns: DnsServer) -> None:
    relay, _ = start(dns.address)
    code, _ = send(relay, via_mx(sign(message("Good Bank <alerts@good.example>"))), "bounce@good.example")
    assert code == 250
    got = sink.handler.wait_for(1)[0]
    ours = [h for h in headers(got.data, "Authentication-Results") if h.startswith(AUTHSERV_ID)]
    assert len(ours) == 1
    assert "spf=pass smtp.mailfrom=bounce@good.example" in ours[0]
    assert "dkim=pass header.d=good.example header.s=sel" in ours[0]
    assert "dmarc=pass (p=reject) header.from=good.example" in ours[0]
    assert headers(got.data, "X-MailGuard-Action") == ["accept"]


def test_forged_from_of_a_reject_domain_is_never_delivered_untagged(start: Any, sink: Sink, dns: DnsServer) -> None:
    relay, _ = start(dns.address)
    # A message with nothing else wrong with it: authentication alone must keep it from
    # arriving as if it were fine.
    code, _ = send(relay, via_mx(message("Bank Security <security@bank.example>"), "192.0.2.66", "mx.forger.test"),
                   "security@bank.example")
    assert code == 250
    got = sink.handler.wait_for(1)[0]
    assert headers(got.data, "X-MailGuard-Action") == ["tag"]
    assert "AUTH_DMARC_REJECT" in headers(got.data, "X-MailGuard-Rules")[0]
    assert "dmarc=fail (p=reject) header.from=bank.example" in headers(got.data, "Authentication-Results")[0]
    # The same forgery asking the reader to sign in adds up to a hold: not delivered at all.
    code, _ = send(relay, message("Bank Security <security@bank.example>", subject="Verify your account now",
                                  body="Your account is suspended. Sign in to verify: https://bank-verify.example/\r\n"),
                   "security@bank.example")
    assert code == 250 and len(sink.handler.messages) == 1  # answered after it was held, not delivered


def test_incoming_results_bearing_our_id_are_removed(start: Any, sink: Sink, dns: DnsServer) -> None:
    relay, _ = start(dns.address)
    forged = (f"Authentication-Results: {AUTHSERV_ID}; spf=pass; dkim=pass header.d=bank.example;"
              " dmarc=pass header.from=bank.example\r\n"
              f"Authentication-Results: {AUTHSERV_ID.upper()} (copy); dmarc=pass\r\n"
              "Authentication-Results: mx.elsewhere.test; spf=pass\r\n")
    code, _ = send(relay, via_mx(forged.encode() + sign(message("<alerts@good.example>"))), "bounce@good.example")
    assert code == 250
    got = sink.handler.wait_for(1)[0]
    results = headers(got.data, "Authentication-Results")
    ours = [h for h in results if h.lower().startswith(AUTHSERV_ID)]
    assert len(ours) == 1 and "header.d=bank.example" not in ours[0] and "dmarc=pass" in ours[0]
    assert any(h.startswith("mx.elsewhere.test") for h in results)  # other servers' headers stay


def test_with_the_resolver_down_every_message_is_answered_and_delivered(start: Any, sink: Sink) -> None:
    relay, scanner = start(f"127.0.0.1:{closed_port()}", timeout_ms=500)
    sent = 6
    for n in range(sent):
        code, _ = send(relay, via_mx(sign(message(f"<alerts{n}@good.example>"))), "bounce@good.example")
        assert code == 250
    got = sink.handler.wait_for(sent)
    assert len(got) == sent
    for item in got:
        ours = headers(item.data, "Authentication-Results")[0]
        assert "spf=temperror" in ours and "dkim=temperror" in ours and "dmarc=temperror" in ours
        assert headers(item.data, "X-MailGuard-Action") == ["accept"]
    # one lookup timed out; while DNS counts as down nothing more is sent, so no message waits
    assert scanner.authenticator.resolver.queries == 1


def test_a_slow_resolver_never_blocks_other_sessions(start: Any, sink: Sink) -> None:
    relay, scanner = start(f"127.0.0.1:{closed_port()}", timeout_ms=3000)
    resolver = scanner.authenticator.resolver
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(code=send(relay, message("<a@good.example>"),
                                                                     "a@good.example")[0]))
    worker.start()
    wait_until(lambda: resolver.queries >= 1, 10, "the first DNS lookup to start")
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as other:  # the loop still answers
        assert other.ehlo("other.test")[0] == 250 and other.noop()[0] == 250
        assert worker.is_alive()  # ... while the first message still waits for DNS
    worker.join(30)
    assert result["code"] == 250 and len(sink.handler.wait_for(1)) == 1
