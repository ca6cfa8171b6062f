"""Shared pieces of the quarantine tests: a configuration in a temp folder, sample
messages and verdicts, and a real SMTP server on loopback that records what it receives."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller

from dns_server import loopback_dns
from mailguard.config import Config
from mailguard.model import Action, Envelope, Finding, Verdict

BODY_MARKER = "ZEBRA-PATIENT-7731"
SUBJECT_MARKER = "KESTREL-INTAKE-4410"
SENDER = "billing@paypa1-secure.example"
RECIPIENT = "frontdesk@practice.example"


def make_config(folder: Path, **quarantine: Any) -> Config:
    settings = {"path": str(folder / "q"), "key_file": str(folder / "keys" / "quarantine.key")}
    settings.update(quarantine)
    return Config.from_dict({"quarantine": settings, "dns": loopback_dns()})


def make_message(n: int = 0, subject: str = SUBJECT_MARKER) -> bytes:
    return (
        f"From: PayPal Billing <{SENDER}>\r\n"
        f"To: {RECIPIENT}\r\n"
        f"Subject: {subject} invoice {n}\r\n"
        f"Message-ID: <msg{n}@paypa1-secure.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Dear client, the session notes for {BODY_MARKER} are attached. Pay now.\r\n"
        ".leading dot line\r\n"
    ).encode()


def make_envelope(*rcpts: str) -> Envelope:
    return Envelope(mail_from=SENDER, rcpt_tos=tuple(rcpts or (RECIPIENT,)), client_address="203.0.113.9",
                    helo="mx.paypa1-secure.example")


def make_verdict(n: int = 0, rule: str = "LOOKALIKE_SENDER_DOMAIN", action: Action = Action.QUARANTINE) -> Verdict:
    return Verdict(
        score=14.0,
        action=action,
        findings=(Finding("lookalike", rule, 9.0, "Sender domain paypa1-secure.example imitates paypal.com"),
                  Finding("language", "URGENT_PAYMENT", 5.0, "Asks for an urgent payment")),
        message_id=f"<msg{n}@paypa1-secure.example>",
    )


def store_many(config: Config, count: int, tag: str, barrier: Any = None, results: Any = None) -> list[str]:
    """Worker for the multi-process test (importable by spawned processes): open the
    quarantine, wait at ``barrier`` until every worker is ready, then store ``count``
    messages and put their ids on ``results``."""
    from mailguard.quarantine import open_quarantine

    q = open_quarantine(config)
    try:
        if barrier is not None:
            barrier.wait()
        ids = [q.store(make_message(i, f"{tag}-{i}"), make_envelope(), make_verdict(i)) for i in range(count)]
    finally:
        q.close()
    if results is not None:
        results.put(ids)
    return ids


def files_containing(folder: Path, needle: str) -> list[Path]:
    """Every file under ``folder`` whose bytes contain ``needle`` (as UTF-8 or UTF-16)."""
    needles = [needle.encode(), needle.encode("utf-16-le"), needle.lower().encode()]
    return [p for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class RecordingHandler:
    """An aiosmtpd handler that keeps every accepted message; recipients containing
    'refuse' are refused with 550, and ``data_reply`` (e.g. '451 ...') refuses the data."""

    received: list[Received] = field(default_factory=list)
    data_reply: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if "refuse" in address:
            return "550 5.1.1 <%s>: Recipient address rejected" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued"


class EphemeralController(Controller):
    """aiosmtpd's Controller on an ephemeral port chosen by the OS (no port races)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """A real SMTP server on 127.0.0.1 for a test; use as a context manager."""

    def __init__(self, data_reply: str = "") -> None:
        self.handler = RecordingHandler(data_reply=data_reply)
        self.controller = EphemeralController(self.handler, hostname="127.0.0.1", port=0)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.controller.port}"

    def __enter__(self) -> "SmtpServer":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def refused_port() -> Iterator[str]:
    """A loopback address where nothing listens: the socket is bound but never listens,
    so a connection is refused at once and no other test can take the port meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL server for the tests: its own data folder, listening only on
    a Unix socket in that folder (no TCP port), fsync off, removed afterwards."""

    base: Path
    bindir: Path
    runas: list[str]
    databases: int = 0

    def conninfo(self, dbname: str) -> str:
        return f"host={self.base} port=5432 user=mailguard dbname={dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; its connection string."""
        import psycopg

        self.databases += 1
        name = f"quarantine_{os.getpid()}_{self.databases}"
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def checkpoint(self) -> None:
        """Make the server write everything into its data files (for the plaintext search)."""
        import psycopg

        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def find_postgres_bindir() -> Path | None:
    """The folder with initdb and pg_ctl (Debian keeps them out of PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
                        if p.parts[-3].isdigit() else 0)
    return candidates[-1].parent if candidates else None


def start_postgres() -> Iterator[PostgresServer]:
    """Start the server (as the 'postgres' user when running as root: initdb refuses root)."""
    bindir = find_postgres_bindir()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        bindir = None
    if bindir is None:
        message = "PostgreSQL (initdb, package postgresql) and the psycopg package are needed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="mailguard-pg-"))
    runas: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        runas = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    options = f"-k {base} -c listen_addresses='' -p 5432 -F"
    for command in (
        [str(bindir / "initdb"), "-D", str(data), "-U", "mailguard", "--auth=trust", "--no-sync", "-E", "UTF8"],
        [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "120", "-o", options, "-l", str(base / "server.log"),
         "start"],
    ):
        done = subprocess.run(runas + command, capture_output=True, text=True)
        if done.returncode != 0:
            log = (base / "server.log").read_text(errors="replace") if (base / "server.log").exists() else ""
            shutil.rmtree(base, ignore_errors=True)
            pytest.fail(f"{' '.join(command[:1])} failed: {done.stderr or done.stdout}\n{log}")
    server = PostgresServer(base, bindir, runas)
    try:
        yield server
    finally:
        subprocess.run(runas + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
