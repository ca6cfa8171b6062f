"""STARTTLS on both sides of the relay, with certificates generated in the test."""
from __future__ import annotations

import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest

from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT,
    SENDER,
    LoopThread,
    Sink,
    clean_message,
    loop_thread,
    scanner,
    self_signed,
    sink,
    start_relay,
)


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_starttls_with_a_test_certificate(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    relay = start_relay({"tls_cert": str(cert), "tls_key": str(key)})
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.starttls(context=client_context())[0] == 220
        assert isinstance(client.sock, ssl.SSLSocket)
        peer = client.sock.getpeercert(binary_form=True)
        assert peer == ssl.PEM_cert_to_DER_cert(cert.read_text())
        client.ehlo()
        client.sendmail(SENDER, [RECIPIENT], clean_message())
    assert len(sink.handler.wait_for(1)) == 1


def test_require_tls_refuses_plain_clients(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    relay = start_relay({"tls_cert": str(cert), "tls_key": str(key), "require_tls": True})
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        code, _ = client.mail(SENDER)
        assert code == 530
        client.starttls(context=client_context())
        client.ehlo()
        client.sendmail(SENDER, [RECIPIENT], clean_message())
    assert len(sink.handler.wait_for(1)) == 1


def test_downstream_starttls_when_offered(loop_thread: LoopThread, start_relay: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "sink.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    secure = Sink(loop_thread, tls_context=context)
    try:
        relay = start_relay({"downstream": f"127.0.0.1:{secure.port}"})
        with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
            client.sendmail(SENDER, [RECIPIENT], clean_message())
        assert secure.handler.wait_for(1)[0].tls
    finally:
        secure.stop()


def test_downstream_tls_required_and_checked(loop_thread: LoopThread, start_relay: Any, sink: Sink,
                                            tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    secure = Sink(loop_thread, tls_context=context)
    try:
        trusted = start_relay({"downstream": f"localhost:{secure.port}", "downstream_tls": "required",
                               "downstream_ca_file": str(cert)})
        with smtplib.SMTP(trusted.host, trusted.port, timeout=20) as client:
            client.sendmail(SENDER, [RECIPIENT], clean_message())
        assert secure.handler.wait_for(1)[0].tls
        untrusted = start_relay({"downstream": f"localhost:{secure.port}", "downstream_tls": "required"})
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            with smtplib.SMTP(untrusted.host, untrusted.port, timeout=20) as client:
                client.sendmail(SENDER, [RECIPIENT], clean_message())
        assert deferred.value.smtp_code == 451
    finally:
        secure.stop()
    plain = start_relay({"downstream_tls": "required"})  # the default sink offers no STARTTLS
    with pytest.raises(smtplib.SMTPDataError) as no_tls:
        with smtplib.SMTP(plain.host, plain.port, timeout=20) as client:
            client.sendmail(SENDER, [RECIPIENT], clean_message())
    assert no_tls.value.smtp_code == 451
    assert sink.handler.messages == []


def test_commands_sent_in_the_clear_with_starttls_are_not_run_inside_tls(
        start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    """STARTTLS command injection (CVE-2011-0411 in Postfix, CVE-2024-34083 in aiosmtpd):
    commands a man in the middle appends after STARTTLS in the same packet must be thrown
    away, not run as if the client had sent them inside the encrypted session."""
    import socket

    cert, key = self_signed(tmp_path)
    relay = start_relay({"tls_cert": str(cert), "tls_key": str(key)})
    raw = socket.create_connection((relay.host, relay.port), timeout=20)
    reader = raw.makefile("rb")
    assert reader.readline().startswith(b"220")
    raw.sendall(b"EHLO client.example\r\n")
    while not reader.readline().startswith(b"250 "):
        pass
    raw.sendall(f"STARTTLS\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\n".encode())
    assert reader.readline().startswith(b"220")
    tls = client_context().wrap_socket(raw, server_hostname="relay.example")
    tls_reader = tls.makefile("rb")
    tls.sendall(b"EHLO client.example\r\n")
    while not tls_reader.readline().startswith(b"250 "):
        pass
    tls.sendall(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
    assert tls_reader.readline().startswith(b"503")  # no MAIL inside TLS: the injected one was dropped
    tls.sendall(b"QUIT\r\n")
    tls.close()
