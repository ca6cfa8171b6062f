"""A small mail world for the authentication tests, served by a loopback dnsmasq:

- good.example: SPF allows 192.0.2.10 (its mail server), DKIM key "sel", DMARC p=reject.
- bank.example: SPF allows only 192.0.2.1, DMARC p=reject: mail from here claiming bank.example is forged.
- shop.example: SPF ~all, DMARC p=quarantine. news.example: DMARC p=none, no SPF.
- list.example: a mailing list whose ARC seals the tests make with its key "arc".
- blackhole.example: its queries are forwarded to a port where nothing answers (a sender's
  domain whose DNS never answers).
- bl.test (IP zone) and dbl.test (domain zone): blocklists with Spamhaus-style codes.
Keys are generated per run; messages are signed in the test with dkimpy.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dns_server import DnsServer

SENDING_IP = "192.0.2.10"  # good.example's mail server
LISTED_IP = "81.2.69.142"  # a global address, listed in bl.test below
AUTHSERV_ID = "mailguard.test"


@dataclass(frozen=True)
class Key:
    private_pem: bytes
    public_b64: str

    @property
    def record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"


@lru_cache(maxsize=None)
def key(name: str) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return Key(pem, base64.b64encode(der).decode())


def zone_file(folder: Path) -> Path:
    """A blocklist table for bl.test and dbl.test (the bundled one names real lists)."""
    path = folder / "dnsbl.toml"
    path.write_text(
        '[zones."bl.test"]\nkind = "ip"\nrule = "AUTH_DNSBL_TESTIP"\nscore = 3.0\n'
        '[zones."bl.test".codes]\n"127.0.0.2" = "the test list names it as a spam source"\n'
        '[zones."dbl.test"]\nkind = "domain"\nrule = "AUTH_DNSBL_TESTDOMAIN"\nscore = 4.0\n'
        '[zones."dbl.test".codes]\n"127.0.1.4" = "the test list names it as a phishing domain"\n'
    )
    return path


def dns_server() -> DnsServer:
    from dns_server import closed_port

    reversed_listed = ".".join(reversed(LISTED_IP.split(".")))
    return DnsServer(
        forward=[("blackhole.example", closed_port())],
        txt=[
            ("good.example", "v=spf1 ip4:192.0.2.10 -all"),
            ("sel._domainkey.good.example", key("good").record),
            ("_dmarc.good.example", "v=DMARC1; p=reject; rua=mailto:d@good.example"),
            ("bank.example", "v=spf1 ip4:192.0.2.1 -all"),
            ("_dmarc.bank.example", "v=DMARC1; p=reject"),
            ("shop.example", "v=spf1 ip4:192.0.2.7 ~all"),
            ("_dmarc.shop.example", "v=DMARC1; p=quarantine; sp=none"),
            ("_dmarc.news.example", "v=DMARC1; p=none"),
            ("arc._domainkey.list.example", key("list").record),
            ("list.example", "v=spf1 ip4:192.0.2.20 -all"),
        ],
        hosts=[
            (f"{reversed_listed}.bl.test", "127.0.0.2"),
            ("phish.example.dbl.test", "127.0.1.4"),
            ("refused.example.dbl.test", "127.255.255.254"),
        ],
    )


def message(from_addr: str, subject: str = "Quarterly statement", body: str = "Your statement is ready.\r\n",
            extra_headers: str = "") -> bytes:
    return (
        f"From: {from_addr}\r\n"
        "To: frontdesk@practice.example\r\n"
        f"Subject: {subject}\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{abs(hash((from_addr, subject, body)))}@mail.test>\r\n"
        f"{extra_headers}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def via_mx(raw: bytes, ip: str = SENDING_IP, helo: str = "mail.good.example") -> bytes:
    """The Received line a local MTA in front of us (Postfix handing mail to the relay, or
    the tests' loopback client standing in for one) adds: from it we learn the sender's IP."""
    return (f"Received: from {helo} ({helo} [{ip}]) by mx.practice.example (Postfix) with ESMTPS id 4F1A;"
            " Tue, 1 Dec 2026 10:00:01 +0000\r\n").encode() + raw


def sign(raw: bytes, domain: str = "good.example", selector: str = "sel", key_name: str = "good") -> bytes:
    header = dkim.sign(raw, selector.encode(), domain.encode(), key(key_name).private_pem,
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return header + raw


def auth_config(nameserver: str, folder: Path | None = None, **auth: object) -> dict[str, object]:
    """[dns] and [auth] sections pointing at the loopback server."""
    section: dict[str, object] = {"authserv_id": AUTHSERV_ID, **auth}
    return {"dns": {"nameservers": [nameserver], "timeout_ms": 500}, "auth": section}
