"""Shared pieces of the relay tests: an event loop in a thread, a real downstream SMTP
server (aiosmtpd) on loopback that records what it receives, the relay itself on an
ephemeral port, configurations, and sample messages built in code."""
from __future__ import annotations

import asyncio
import base64
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

from aiosmtpd.smtp import SMTP

from dns_server import loopback_dns
from mailguard.config import Config
from mailguard.quarantine import open_quarantine
from mailguard.relay.server import RelayServer
from mailguard.scanner import Scanner

T = TypeVar("T")
PRACTICE = "practice.example"
RECIPIENT = f"frontdesk@{PRACTICE}"
SENDER = "someone@partner.example"
EICAR = base64.b64decode(
    b"WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo="
)


class LoopThread:
    """An asyncio event loop running in a daemon thread; ``call`` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool = False


@dataclass
class SinkHandler:
    """Records every message; ``data_reply`` and ``refuse`` script the server's answers, and
    ``gate`` (when set) holds DATA until released, to make the server slow on demand."""

    messages: list[Received] = field(default_factory=list)
    data_reply: str = "250 2.0.0 Ok: queued as SINK1"
    refuse: dict[str, str] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    delay: float = 0.0  # seconds before the reply to the end of DATA (a slow server)
    pipelining: bool = False  # offer PIPELINING (RFC 2920), as Postfix and smtp-sink do
    changed: threading.Condition = field(default_factory=threading.Condition)

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)  # the fault injected: a server slow to answer
        if self.data_reply.startswith("250"):
            with self.changed:
                self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                              bytes(envelope.original_content), session.ssl is not None))
                self.changed.notify_all()
        return self.data_reply

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"downstream received {len(self.messages)} messages, expected {count}")
            return list(self.messages)


class _SinkSMTP(SMTP):
    line_length_limit = 1 << 20  # like Postfix, long lines are kept rather than refused


class Sink:
    """A real SMTP server on 127.0.0.1 (the practice's mail server in the tests)."""

    def __init__(self, runner: LoopThread, port: int = 0, tls_context: Any = None) -> None:
        self.runner = runner
        self.handler = SinkHandler()
        self.tls_context = tls_context
        self.tls_sessions = 0
        self._server: asyncio.Server | None = None
        self.port = port
        self.start()

    def _protocol(self) -> SMTP:
        return _SinkSMTP(self.handler, hostname="sink.test", enable_SMTPUTF8=True, tls_context=self.tls_context,
                    loop=self.runner.loop)

    def start(self) -> None:
        async def go() -> asyncio.Server:
            return await self.runner.loop.create_server(self._protocol, "127.0.0.1", self.port, reuse_address=True)

        self._server = self.runner.call(go())
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def go() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        self.runner.call(go())


class RelayRunner:
    """The relay under test on an ephemeral loopback port, in its own loop thread."""

    def __init__(self, config: Config, *, quarantine: Any = None, scanner: Scanner | None = None) -> None:
        self.thread = LoopThread()
        self.server: RelayServer = self.thread.call(_build(config, quarantine, scanner))
        self.thread.call(self.server.start())
        self.host, self.port = self.server.address

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        return self.thread.call(fn(), timeout)

    def stop(self, timeout: float = 5) -> None:
        self.thread.call(self.server.drain(timeout), timeout + 10)
        self.thread.close()


async def _build(config: Config, quarantine: Any, scanner: Scanner | None) -> RelayServer:
    return RelayServer(config, quarantine=quarantine, scanner=scanner)


def relay_config(folder: Path, downstream_port: int, relay: dict[str, Any] | None = None,
                 policy: dict[str, Any] | None = None, logging: dict[str, Any] | None = None) -> Config:
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "downstream": f"127.0.0.1:{downstream_port}",
        "relay_domains": [PRACTICE],
        "hostname": "mailguard.test",
        "downstream_timeout": 5.0,
        "workers": 2,
    }
    settings.update(relay or {})
    data: dict[str, Any] = {
        "relay": settings,
        "quarantine": {"path": str(folder / "q"), "key_file": str(folder / "quarantine.key")},
        "auth": {"enabled": False},  # no DNS here; tests/test_auth_relay.py covers it with a loopback server
        "dns": loopback_dns(),
    }
    if policy:
        data["policy"] = policy
    if logging:
        data["logging"] = logging
    return Config.from_dict(data, folder / "mailguard.toml")


def clean_message(n: int = 0, eol: str = "\r\n") -> bytes:
    lines = [
        "From: Dr. Jane Roe <jane@partner.example>",
        f"To: {RECIPIENT}",
        f"Subject: Appointment moved to Thursday {n}",
        "Date: Mon, 23 Nov 2026 09:14:00 +0000",
        f"Message-ID: <appt{n}@partner.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Hi, the appointment is moved to Thursday at 10:00. See you then.",
        ".a line that starts with a dot",
        "..and one with two",
        "Gr\u00fc\u00dfe, Jane",
        "",
    ]
    return eol.join(lines).encode("utf-8")


def phish_message(n: int = 0) -> bytes:
    """A lookalike-domain invoice: scored well above the default tag threshold."""
    return (
        "From: \"PayPal Billing\" <billing@paypa1.com>\r\n"
        "Reply-To: paypal.billing.dept@gmail.com\r\n"
        f"To: {RECIPIENT}\r\n"
        f"Subject: Invoice INV-{n} is past due\r\n"
        f"Message-ID: <inv{n}@paypa1.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=\"alt-1\"\r\n"
        "\r\n"
        "--alt-1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Your invoice is past due. Sign in to view the invoice and pay today to avoid\r\n"
        "suspension of your account: https://paypa1.com/invoice/INV\r\n"
        "--alt-1\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "\r\n"
        "<html><body><p>Your invoice is past due. Sign in to pay today to avoid suspension:\r\n"
        "<a href=\"https://paypa1.com/invoice/INV\">https://www.paypal.com/invoice/INV</a></p></body></html>\r\n"
        "--alt-1--\r\n"
    ).encode()


def malware_message() -> bytes:
    attachment = base64.b64encode(EICAR).decode()
    return (
        "From: Scanner <scans@partner.example>\r\n"
        f"To: {RECIPIENT}\r\n"
        "Subject: Scanned document\r\n"
        "Message-ID: <scan1@partner.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "See attached.\r\n"
        "--b1\r\n"
        "Content-Type: application/octet-stream; name=\"scan.com\"\r\n"
        "Content-Disposition: attachment; filename=\"scan.com\"\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{attachment}\r\n"
        "--b1--\r\n"
    ).encode()


class RawClient:
    """A hand-driven SMTP client over a plain socket, for what smtplib will not send
    (bare line endings, stalls, half-finished commands). Blocking reads have a guard
    timeout; they wait on the socket, never on a clock."""

    def __init__(self, host: str, port: int, timeout: float = 20) -> None:
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """One whole (possibly multi-line) reply; (0, '') when the server closed."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self._buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return (0, "") if not lines else (int(lines[-1][:3]), "\n".join(lines))
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(l[4:] for l in lines)

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def repeat_until_closed(self, line: str, pace: float = 0.25, most: int = 40) -> tuple[int, float]:
        """Send ``line`` every ``pace`` seconds (the attacker's pace, not synchronisation)
        until the server closes the session: (commands answered, seconds it took)."""
        started = time.monotonic()
        answered = 0
        for _ in range(most):
            if self.command(line)[0] == 0:
                return answered, time.monotonic() - started
            answered += 1
            time.sleep(pace)
        raise AssertionError(f"the session was never closed ({most} x {line!r})")

    def closed_by_server(self) -> bool:
        """Reads until the server closes the connection (True) or sends something (False)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------- fixtures (imported by the test modules)


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    # default rules, no DNS; built once for the module (compiling takes a while)
    return Scanner(Config.from_dict({"auth": {"enabled": False}, "dns": loopback_dns()}))


@pytest.fixture()
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


@pytest.fixture()
def sink(loop_thread: LoopThread) -> Iterator[Sink]:
    server = Sink(loop_thread)
    yield server
    server.stop()


@pytest.fixture()
def start_relay(tmp_path: Path, sink: Sink, scanner: Scanner) -> Iterator[Any]:
    started: list[tuple[RelayRunner, Any]] = []

    def start(relay: dict[str, Any] | None = None, policy: dict[str, Any] | None = None,
              scanner_override: Scanner | None = None) -> RelayRunner:
        config = relay_config(tmp_path, sink.port, relay, policy)
        quarantine = open_quarantine(config)
        use = scanner_override or (Scanner(config) if policy else scanner)
        runner = RelayRunner(config, quarantine=quarantine, scanner=use)
        started.append((runner, quarantine))
        return runner

    yield start
    for runner, quarantine in started:
        runner.stop()
        quarantine.close()


def self_signed(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A throwaway certificate and key for STARTTLS tests (written as PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def wire(message: bytes) -> bytes:
    """A CRLF message as a client sends it after DATA: dots stuffed, end-of-data line added."""
    import re

    return re.sub(rb"(?m)^\.", b"..", message) + b".\r\n"
