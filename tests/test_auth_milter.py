"""Authentication through the milter behind a real Postfix, against a loopback dnsmasq.

Postfix (a throwaway instance, see postfix_instance.py) receives with smtpd on loopback,
calls our milter, and relays to an aiosmtpd sink; our milter looks up SPF, DKIM and DMARC
on the loopback DNS server. Messages are signed here with dkimpy."""
from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailguard.config import Config

from auth_world import AUTHSERV_ID, auth_config, dns_server, message, sign, via_mx
from dns_server import DnsServer, closed_port
from postfix_instance import Delivered, MilterThread, PostfixInstance, Sink, free_port, require_postfix

require_postfix()

RECIPIENT = "frontdesk@practice.example"


class Rig:
    def __init__(self, tmp: Path, dns: DnsServer) -> None:
        self.tmp, self.dns = tmp, dns
        self.milter_port = free_port()
        self.sink = Sink().start()
        self.postfix = PostfixInstance(self.sink.port, self.milter_port)
        self.milter: MilterThread | None = None

    def start_milter(self, nameserver: str) -> None:
        if self.milter is not None:
            self.milter.stop()
        data: dict[str, Any] = auth_config(nameserver)
        data["milter"] = {"listen": f"inet:127.0.0.1:{self.milter_port}"}
        data["quarantine"] = {"path": str(self.tmp / "q"), "key_file": str(self.tmp / "q.key"),
                              "release_host": "127.0.0.1:25"}  # store mode needs a release path
        self.milter = MilterThread(Config.from_dict(data)).start()

    def send(self, raw: bytes, mail_from: str) -> int:
        with smtplib.SMTP("127.0.0.1", self.postfix.smtpd_port, timeout=60) as smtp:
            smtp.ehlo("mail.good.example")
            smtp.mail(mail_from)
            smtp.rcpt(RECIPIENT)
            return smtp.data(raw)[0]

    def delivered(self, message_id: str) -> Delivered:
        try:
            return self.sink.wait_for(lambda d: d.message["Message-ID"] == message_id, timeout=30)
        except AssertionError:
            raise AssertionError(f"not delivered: {message_id}{self.postfix.log_tail()}") from None

    def close(self) -> None:
        if self.milter is not None:
            self.milter.stop()
        self.postfix.stop()
        self.sink.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with dns_server() as dns:
        rig = Rig(tmp_path_factory.mktemp("auth-milter"), dns)
        try:
            rig.start_milter(dns.address)
            rig.postfix.start()
            yield rig
        finally:
            rig.close()


def message_id(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no Message-ID")


def ours(item: Delivered) -> list[str]:
    return [str(v) for v in item.message.get_all("Authentication-Results") or [] if str(v).startswith(AUTHSERV_ID)]


def test_aligned_mail_gets_dmarc_pass_and_forged_results_are_removed(rig: Rig) -> None:
    rig.start_milter(rig.dns.address)
    forged = (f"Authentication-Results: {AUTHSERV_ID}; dmarc=pass header.from=bank.example\r\n"
              "Authentication-Results: mx.elsewhere.test; spf=pass\r\n").encode()
    # The test client is on loopback, so it stands in for a local MTA: its Received line
    # names the sending server (see via_mx); Postfix's own line from 127.0.0.1 is skipped.
    raw = via_mx(forged + sign(message("Good Bank <alerts@good.example>", subject="Statement ready (milter)")))
    assert rig.send(raw, "bounce@good.example") == 250
    got = rig.delivered(message_id(raw))
    results = ours(got)
    assert len(results) == 1, results
    assert "spf=pass" in results[0] and "dkim=pass header.d=good.example" in results[0]
    assert "dmarc=pass (p=reject) header.from=good.example" in results[0]
    assert "bank.example" not in results[0]
    assert any(str(v).startswith("mx.elsewhere.test") for v in got.message.get_all("Authentication-Results"))
    assert got.message["X-MailGuard-Action"] == "accept"


def test_forged_from_of_a_reject_domain_is_never_delivered_untagged(rig: Rig) -> None:
    rig.start_milter(rig.dns.address)
    raw = via_mx(message("Bank Security <security@bank.example>", subject="Statement (milter forged)"),
                 "192.0.2.66", "mx.forger.test")
    code = rig.send(raw, "security@bank.example")
    assert code in (250, 550)
    if code == 250:  # delivered, or held in Postfix's hold queue: never as if it were fine
        got = rig.delivered(message_id(raw))
        assert got.message["X-MailGuard-Action"] in ("tag", "quarantine")
        assert "AUTH_DMARC_REJECT" in got.message["X-MailGuard-Rules"]
        assert "dmarc=fail (p=reject) header.from=bank.example" in ours(got)[0]


def test_with_the_resolver_down_every_message_is_answered_and_delivered(rig: Rig) -> None:
    rig.start_milter(f"127.0.0.1:{closed_port()}")
    ids = []
    for n in range(4):
        raw = sign(message(f"<alerts{n}@good.example>", subject=f"DNS down {n}"))
        assert rig.send(raw, "bounce@good.example") == 250
        ids.append(message_id(raw))
    for mid in ids:
        got = rig.delivered(mid)
        assert "dmarc=temperror" in ours(got)[0] and got.message["X-MailGuard-Action"] == "accept"
    rig.start_milter(rig.dns.address)
