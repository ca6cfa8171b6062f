"""`mailguard milter` behind a real Postfix on loopback.

One throwaway Postfix instance for the module (its own config and queue folders, smtpd on
an unprivileged port, relaying everything to an aiosmtpd sink, milter_default_action =
tempfail). The milter runs in this process and is restarted with another configuration
where a test needs one; Postfix opens a new milter connection per SMTP session, so it
follows at once. Messages are submitted with smtplib, as a sending server would.
"""
from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.config import Config
from mailguard.message import ParsedMessage
from mailguard.model import Finding
from mailguard.scanner import Scanner
from mailguard.milter import Engine
from dns_server import loopback_dns
from postfix_instance import Delivered, MilterThread, PostfixInstance, Sink, free_port, require_postfix, wait_until

require_postfix()

PRACTICE = "practice.example"
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*").encode()


def milter_config(tmp: Path, port: int, release: str = "127.0.0.1:25", **overrides: dict[str, Any]) -> Config:
    data: dict[str, dict[str, Any]] = {
        "milter": {"listen": f"inet:127.0.0.1:{port}"},
        # store mode needs a release path: the Postfix under test (see Rig.start_milter)
        "quarantine": {"path": str(tmp / "quarantine"), "key_file": str(tmp / "quarantine.key"),
                       "release_host": release},
        "lookalike": {"protected_domains": [PRACTICE]},
        # a lookalike sender alone tags (score 6 >= tag_at 5) but does not quarantine
        "policy": {"tag_at": 5.0, "quarantine_at": 50.0, "scores": {"LOOKALIKE_SENDER_DOMAIN": 6.0}},
        "auth": {"enabled": False},  # no DNS here; tests/test_auth_milter.py covers it with a loopback server
        "dns": loopback_dns(),
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return Config.from_dict(data)


class Rig:
    """Postfix, the sink, and the milter, with a way to swap the milter's configuration."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.milter_port = free_port()
        self.sink = Sink().start()
        self.postfix = PostfixInstance(self.sink.port, self.milter_port)
        self.milter: MilterThread | None = None
        self.changed = False  # the running milter is not the default one

    def start_milter(self, config: Config | None = None, engine: Engine | None = None) -> MilterThread:
        self.stop_milter()
        self.changed = config is not None or engine is not None
        config = config or milter_config(self.tmp, self.milter_port, f"127.0.0.1:{self.postfix.smtpd_port}")
        self.milter = MilterThread(config, engine).start()
        return self.milter

    def stop_milter(self) -> None:
        if self.milter is not None:
            self.milter.stop()
            self.milter = None

    def send(self, message: EmailMessage) -> None:
        with smtplib.SMTP("127.0.0.1", self.postfix.smtpd_port, timeout=30) as smtp:
            smtp.send_message(message)

    def delivered(self, message: EmailMessage) -> Delivered:
        message_id = message["Message-ID"]
        try:
            return self.sink.wait_for(lambda d: d.message["Message-ID"] == message_id)
        except AssertionError:
            raise AssertionError(f"not delivered: {message_id}{self.postfix.log_tail()}") from None

    def never_delivered(self, message: EmailMessage) -> None:
        """Prove a negative without sleeping: a clean message sent afterwards arrives, and
        the first one is still not there (Postfix delivers each queue file on its own, but
        the refused or discarded one never entered the queue)."""
        marker = new_message("marker")
        self.send(marker)
        self.delivered(marker)
        assert not self.sink.find(lambda d: d.message["Message-ID"] == message["Message-ID"])

    def close(self) -> None:
        self.stop_milter()
        self.postfix.stop()
        self.sink.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig = Rig(tmp_path_factory.mktemp("milter-postfix"))
    try:
        rig.start_milter()
        rig.postfix.start()
        yield rig
    finally:
        rig.close()


@pytest.fixture
def default_milter(rig: Rig) -> Rig:
    """The default milter for each test, put back if the previous test changed it."""
    if rig.milter is None or rig.changed:
        rig.start_milter()
    return rig


def new_message(subject: str, sender: str = "Dr. Sam Lee <sam.lee@example.org>", body: str = "See you Tuesday.\n"
                ) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"frontdesk@{PRACTICE}"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@example.org>"
    msg.set_content(body)
    return msg


def eicar_message() -> EmailMessage:
    msg = new_message("Scanned documents")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="scan.txt")
    return msg


def test_clean_mail_arrives_with_verdict_headers(default_milter: Rig) -> None:
    msg = new_message("Appointment on Tuesday")
    default_milter.send(msg)
    got = default_milter.delivered(msg).message
    assert got["X-MailGuard-Action"] == "accept"
    assert got["X-MailGuard-Score"] == "0.0"
    assert got["X-MailGuard-Rules"] == "none"
    assert got["Subject"] == "Appointment on Tuesday"
    assert "See you Tuesday." in got.get_content()


def test_phish_arrives_tagged_in_subject_and_headers(default_milter: Rig) -> None:
    msg = new_message("Invoice overdue", sender="Billing <billing@practlce.example>")
    default_milter.send(msg)
    got = default_milter.delivered(msg).message
    assert got["Subject"] == "[SUSPICIOUS] Invoice overdue"
    assert got["X-MailGuard-Action"] == "tag"
    assert "LOOKALIKE_SENDER_DOMAIN(6)" in got["X-MailGuard-Rules"]


def test_long_non_ascii_subject_is_tagged_and_the_body_is_untouched(default_milter: Rig) -> None:
    """A folded, RFC 2047-encoded subject keeps its words; the body arrives byte for byte."""
    rig = default_milter
    subject = "Überweisung dringend: Ihre Rechnung Nr. 4711 für die Behandlung vom 3. März " * 2
    msg = new_message(subject.strip(), sender="Billing <billing@practlce.example>",
                      body="Zahlen Sie heute.\n" + "x" * 70 + "\n")
    sent_body = split_body(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
    rig.send(msg)
    delivered = rig.delivered(msg)
    got = delivered.message
    assert got["Subject"] == "[SUSPICIOUS] " + subject.strip()
    assert split_body(delivered.content) == sent_body


def split_body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def test_forged_verdict_headers_are_removed(default_milter: Rig) -> None:
    msg = new_message("Invoice overdue", sender="Billing <billing@practlce.example>")
    msg["X-MailGuard-Action"] = "accept"
    msg["X-MailGuard-Rules"] = "forged-by-sender"
    msg["X-Mailguard-Score"] = "-100"
    default_milter.send(msg)
    got = default_milter.delivered(msg).message
    assert got.get_all("X-MailGuard-Action") == ["tag"]
    scores = got.get_all("X-MailGuard-Score") or []
    assert len(scores) == 1 and float(scores[0]) >= 6.0
    assert "forged-by-sender" not in str(got.get_all("X-MailGuard-Rules"))
    assert len(got.get_all("X-MailGuard-Rules") or []) == 1


def test_malware_is_stored_in_the_quarantine_and_never_delivered(default_milter: Rig) -> None:
    rig = default_milter
    assert rig.milter is not None
    before = len(list(rig.milter.engine.quarantine.list()))
    msg = eicar_message()
    rig.send(msg)  # accepted (250) and discarded by Postfix: the copy is in the quarantine
    rig.never_delivered(msg)
    entries = list(rig.milter.engine.quarantine.list())
    assert len(entries) == before + 1
    assert "SIGNATURE_EICAR_TEST_FILE" in entries[0].rules or any(
        "SIGNATURE_EICAR_TEST_FILE" in e.rules for e in entries)


def test_a_stored_message_is_found_by_the_queue_id_postfix_told_the_sender(default_milter: Rig) -> None:
    """Postfix answers "250 2.0.0 Ok: queued as ID" for a message the milter discards into
    the quarantine; `mailguard quarantine list --queue-id ID` finds that entry."""
    rig = default_milter
    msg = eicar_message()
    with smtplib.SMTP("127.0.0.1", rig.postfix.smtpd_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("sam.lee@example.org")
        smtp.rcpt(f"frontdesk@{PRACTICE}")
        code, text = smtp.data(msg.as_bytes())
    found = re.fullmatch(r"2\.0\.0 Ok: queued as (\S+)", text.decode())
    assert code == 250 and found, text
    rig.never_delivered(msg)
    config = rig.tmp / "review.toml"  # what the IT person's configuration says of the quarantine
    config.write_text(f'[quarantine]\npath = "{rig.tmp / "quarantine"}"\nkey_file = "{rig.tmp / "quarantine.key"}"\n')
    listed = subprocess.run([sys.executable, "-m", "mailguard.cli", "quarantine", "list", "--queue-id", found.group(1),
                             "--json", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["message_id"], r["queue_id"]) for r in records] == [(msg["Message-ID"], found.group(1))]


def test_malware_is_rejected_with_5xx_when_policy_says_reject(default_milter: Rig) -> None:
    rig = default_milter
    rig.start_milter(milter_config(rig.tmp, rig.milter_port,
                                   policy={"actions": {"SIGNATURE_EICAR_TEST_FILE": "reject"}}))
    msg = eicar_message()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        rig.send(msg)
    assert refused.value.smtp_code == 550
    assert b"5.7.1 Message refused as dangerous" in refused.value.smtp_error
    rig.never_delivered(msg)


def test_malware_is_held_in_the_postfix_hold_queue(default_milter: Rig) -> None:
    rig = default_milter
    rig.start_milter(milter_config(rig.tmp, rig.milter_port, milter={"quarantine": "hold"}))
    held_before = set(rig.postfix.queue_files("hold"))
    msg = eicar_message()
    rig.send(msg)
    wait_until(lambda: set(rig.postfix.queue_files("hold")) - held_before, 20, "a message in the hold queue")
    rig.never_delivered(msg)


def test_quarantine_failure_is_a_451_and_nothing_is_lost(default_milter: Rig) -> None:
    rig = default_milter
    assert rig.milter is not None
    rig.milter.engine.quarantine.close()  # the database is gone: storing fails
    rig.changed = True
    msg = eicar_message()
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        rig.send(msg)
    assert deferred.value.smtp_code == 451
    rig.never_delivered(msg)


def test_banner_replaces_the_body_of_tagged_mail(default_milter: Rig) -> None:
    rig = default_milter
    rig.start_milter(milter_config(rig.tmp, rig.milter_port, policy={"banner": True}))
    # a body of several milter packets, so the replacement is sent in chunks too
    msg = new_message("Invoice overdue", sender="Billing <billing@practlce.example>",
                      body="Please pay today.\n" + "filler line\n" * 8000)
    rig.send(msg)
    got = rig.delivered(msg).message
    text = got.get_content().replace("\r\n", "\n")
    assert text.startswith("CAUTION: this message may be a scam")
    assert "practlce.example imitates practice.example" in text
    assert "Please pay today.\n" + "filler line\n" * 8000 in text
    assert got["X-MailGuard-Action"] == "tag"


class SlowAnalyzer(Analyzer):
    """Takes its time on subjects that say so, as a big attachment would."""

    name = "slow"

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        if "slow" in message.subject:
            time.sleep(1.0)
        return ()


def test_a_slow_scan_keeps_postfix_waiting_with_progress(default_milter: Rig) -> None:
    rig = default_milter
    config = milter_config(rig.tmp, rig.milter_port, milter={"progress_interval": 0.2})
    engine = Engine.build(config)
    engine.scanner = Scanner(config, extra_analyzers=[SlowAnalyzer({}, AnalyzerContext(config))])
    rig.start_milter(config, engine)
    log_start = len(rig.postfix.log_text())
    msg = new_message("A slow one")
    rig.send(msg)
    assert rig.delivered(msg).message["X-MailGuard-Action"] == "accept"
    assert "warning" not in rig.postfix.log_text()[log_start:]  # progress packets are understood


def test_with_the_milter_stopped_postfix_tempfails_and_nothing_is_lost(default_milter: Rig) -> None:
    rig = default_milter
    rig.stop_milter()
    msg = new_message("Lab results are ready")
    with pytest.raises(smtplib.SMTPResponseException) as deferred:
        rig.send(msg)
    assert 400 <= deferred.value.smtp_code < 500
    assert rig.postfix.queue_files("incoming") == [] and rig.postfix.queue_files("active") == []
    rig.start_milter()
    rig.send(msg)  # the sending server retries
    got = rig.delivered(msg).message
    assert got["X-MailGuard-Action"] == "accept"
    assert len(rig.sink.find(lambda d: d.message["Message-ID"] == msg["Message-ID"])) == 1



def test_local_mail_waits_in_postfix_while_the_milter_is_down_then_is_delivered(default_milter: Rig) -> None:
    """non_smtpd_milters: mail from the sendmail command stays in Postfix's maildrop while
    mailguard is down (tempfail) and is delivered, scanned, after `postqueue -f`."""
    rig = default_milter
    rig.stop_milter()
    msg = new_message("Fax from the scanner")
    sender = f"scanner-{uuid.uuid4().hex[:8]}@{PRACTICE}"
    rig.postfix.sendmail(sender, [f"frontdesk@{PRACTICE}"], msg.as_bytes())
    wait_until(lambda: any("milter-reject" in line and sender in line for line in rig.postfix.log_text().splitlines()),
               30, "Postfix to try the milter")
    assert rig.postfix.queue_files("maildrop")
    assert not rig.sink.find(lambda d: d.message["Message-ID"] == msg["Message-ID"])
    rig.start_milter()
    rig.postfix.postqueue("-f")
    got = rig.delivered(msg)
    assert got.mail_from == sender and got.message["X-MailGuard-Action"] == "accept"
    assert len(rig.sink.find(lambda d: d.message["Message-ID"] == msg["Message-ID"])) == 1


def test_a_release_in_store_mode_reaches_its_recipients_exactly_once(default_milter: Rig) -> None:
    """Issue 12: released through Postfix, the message passes the milter again; its signed
    release marker lets it through once (not held again), and the marker never arrives."""
    rig = default_milter
    msg = eicar_message()
    rig.send(msg)  # stored and discarded
    quarantine = rig.milter.engine.quarantine
    [entry] = [e for e in quarantine.list() if e.message_id == msg["Message-ID"]]
    [result] = quarantine.release([entry.id])
    assert result.ok, result.message
    got = rig.delivered(msg)
    assert got.message["X-MailGuard-Released"].startswith(f"entry {entry.id} by ")
    assert got.message["X-MailGuard-Release-Token"] is None  # stripped before delivery
    assert got.message["X-MailGuard-Action"] == "quarantine"  # the held copy's own verdict
    [again] = quarantine.release([entry.id])
    assert "--force" in again.message
    rig.never_delivered(new_message("unrelated"))  # flushes: nothing else is on its way
    assert len(rig.sink.find(lambda d: d.message["Message-ID"] == msg["Message-ID"])) == 1
    assert quarantine.get(entry.id).status == "released"
    assert [e.id for e in quarantine.list() if e.message_id == msg["Message-ID"]] == [entry.id]  # not held again


def test_a_forged_release_marker_is_scanned_as_usual(default_milter: Rig) -> None:
    rig = default_milter
    msg = eicar_message()
    msg["X-MailGuard-Release-Token"] = "0123456789abcdef." + "ab" * 32
    rig.send(msg)
    rig.never_delivered(msg)
    entries = [e for e in rig.milter.engine.quarantine.list() if e.message_id == msg["Message-ID"]]
    assert len(entries) == 1  # held, the forged marker did not let it pass


def test_store_mode_without_a_release_path_refuses_to_start(tmp_path: Path) -> None:
    from mailguard.config import ConfigError

    config = milter_config(tmp_path, free_port(), release="")
    with pytest.raises(ConfigError, match="release_host"):
        Engine.build(config)
