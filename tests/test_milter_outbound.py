"""The milter tells outbound mail from Postfix's macros ({auth_authen}, {daemon_name}, the
client's network) and applies the [outbound] policy: patient data to an outside address is
held (the milter cannot see the next hop's TLS) or refused; inbound mail is not searched."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import phi_samples as P
from dns_server import loopback_dns
from mailguard.config import Config
from mailguard.milter import protocol as mp
from test_milter_protocol import MTA, MilterThread, make_engine


def config(tmp_path: Path, outbound: dict[str, Any] | None = None, **milter: Any) -> Config:
    return Config.from_dict({
        "milter": {"listen": "inet:127.0.0.1:0", **milter},
        "quarantine": {"path": str(tmp_path / "q"), "key_file": str(tmp_path / "q.key")},
        "outbound": {"internal_domains": ["practice.example"], **(outbound or {})},
        "auth": {"enabled": False},
        "dns": loopback_dns(),
    })


def send(tmp_path: Path, raw: bytes, rcpt: str, connect_macros: bytes, mail_macros: bytes = b"",
         outbound: dict[str, Any] | None = None, **milter: Any) -> tuple[list[tuple[bytes, bytes]], Any]:
    cfg = config(tmp_path, outbound, **milter)
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n") if b": " in line]
    with MilterThread(cfg, make_engine(cfg)) as running:
        mta = MTA(running.port)
        try:
            mta.negotiate()
            mta.send(mp.SMFIC_MACRO, b"C" + connect_macros)
            mta.expect_continue(mp.SMFIC_CONNECT, b"ws1\x004" + struct.pack("!H", 40000) + b"192.0.2.7\0")
            mta.expect_continue(mp.SMFIC_HELO, b"ws1\0")
            mta.send(mp.SMFIC_MACRO, b"M" + b"i\0Q1\0" + mail_macros)
            mta.expect_continue(mp.SMFIC_MAIL, b"<dr.roe@practice.example>\0")
            mta.expect_continue(mp.SMFIC_RCPT, b"<" + rcpt.encode() + b">\0")
            for name, value in headers:
                mta.expect_continue(mp.SMFIC_HEADER, name + b"\0" + value + b"\0")
            mta.expect_continue(mp.SMFIC_EOH)
            mta.expect_continue(mp.SMFIC_BODY, body)
            mta.send(mp.SMFIC_BODYEOB)
            replies = mta.until_final()
            return replies, list(running.engine.quarantine.list())
        finally:
            mta.close()


def test_authenticated_submission_with_patient_data_to_outside_is_held(tmp_path: Path) -> None:
    replies, held = send(tmp_path, P.done_when_body("someone@outside.example"), "someone@outside.example",
                         b"{daemon_name}\0smtpd\0", b"{auth_authen}\0droe\0")
    assert replies == [(mp.SMFIR_DISCARD, b"")]  # kept in the quarantine, then discarded by Postfix
    assert len(held) == 1 and {"PHI_HIGH_CONFIDENCE", "OUTBOUND_HELD"} <= set(held[0].rules)


def test_submission_service_with_refuse_bounces_with_kinds_not_values(tmp_path: Path) -> None:
    replies, held = send(tmp_path, P.done_when_body("someone@outside.example"), "someone@outside.example",
                         b"{daemon_name}\0submission\0", outbound={"phi_high": "refuse"},
                         outbound_daemon_names=["submission"], outbound_authenticated=False)
    assert len(replies) == 1 and replies[0][0] == mp.SMFIR_REPLYCODE
    text = replies[0][1].decode()
    assert text.startswith("550") and "patient data" in text
    assert not any(v in text for v in P.SECRET_VALUES)
    assert held == []


def test_tls_enforced_by_the_mta_lets_require_tls_pass(tmp_path: Path) -> None:
    replies, held = send(tmp_path, P.done_when_body("someone@outside.example"), "someone@outside.example",
                         b"{daemon_name}\0smtpd\0", b"{auth_authen}\0droe\0", outbound_tls_by_mta=True)
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"") and held == []


def test_internal_recipient_and_inbound_mail_pass(tmp_path: Path) -> None:
    replies, held = send(tmp_path, P.done_when_body("billing@practice.example"), "billing@practice.example",
                         b"{daemon_name}\0smtpd\0", b"{auth_authen}\0droe\0")
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"") and held == []
    # Not authenticated, port 25 service, outside network: inbound; patient data is not searched.
    replies, held = send(tmp_path, P.done_when_body("someone@outside.example"), "someone@outside.example",
                         b"{daemon_name}\0smtpd\0")
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"") and held == []
    assert b"PHI_" not in b"".join(data for _, data in replies)


def test_client_network_makes_mail_outbound(tmp_path: Path) -> None:
    replies, held = send(tmp_path, P.done_when_body("someone@outside.example"), "someone@outside.example",
                         b"{daemon_name}\0smtpd\0", outbound_networks=["192.0.2.0/24"])
    assert replies == [(mp.SMFIR_DISCARD, b"")] and len(held) == 1
