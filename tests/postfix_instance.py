"""Test harness: the milter in a background thread, an SMTP sink, and a throwaway Postfix.

The Postfix instance is a real one (Debian's package) with its own configuration, queue
and data folders in a temporary directory, listening on unprivileged loopback ports,
relaying everything to an aiosmtpd sink and calling our milter. Nothing here touches the
system's Postfix configuration.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable

import pytest

from mailguard.config import Config
from mailguard.milter import Engine, MilterServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------- the milter


class MilterThread:
    """A MilterServer on its own event loop in a daemon thread; ``stop`` ends it."""

    def __init__(self, config: Config, engine: Engine | None = None) -> None:
        self.engine = engine or Engine.build(config)
        self.loop = asyncio.new_event_loop()
        self.server = MilterServer(self.engine)
        self._thread = threading.Thread(target=self.loop.run_forever, name="milter", daemon=True)

    def start(self) -> "MilterThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.close(grace=2.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        self.engine.close()

    def __enter__(self) -> "MilterThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------- the sink


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Sink:
    """An aiosmtpd server that keeps what it receives, for the downstream side."""

    port: int = field(default_factory=free_port)
    received: list[Delivered] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._cond:
            self.received.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
                                           or envelope.content))
            self._cond.notify_all()
        return "250 OK"

    def start(self) -> "Sink":
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def wait_for(self, predicate: Callable[[Delivered], bool], timeout: float = 20.0) -> Delivered:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.received:
                    if predicate(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("timed out waiting for a delivery on the sink")
                self._cond.wait(remaining)

    def find(self, predicate: Callable[[Delivered], bool]) -> list[Delivered]:
        with self._cond:
            return [d for d in self.received if predicate(d)]


# ---------------------------------------------------------------------- Postfix

MASTER_CF = """\
{smtpd_address} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _shared_tmp() -> str | None:
    """/tmp, which every user can traverse, even when TMPDIR points to a private folder."""
    return "/tmp" if Path("/tmp").is_dir() else None


def postfix_available() -> bool:
    return shutil.which("postfix") is not None or Path("/usr/sbin/postfix").exists()


def require_postfix() -> None:
    """Skip the calling test module when Postfix (or root, which a throwaway instance needs)
    is missing; under CI=true a missing Postfix is an error, never a skip."""
    if not postfix_available():
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI=true but Postfix is not installed: .ci/run must install it")
        pytest.skip("Postfix is not installed", allow_module_level=True)
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("a throwaway Postfix instance needs root", allow_module_level=True)


def _postfix_bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class PostfixInstance:
    """A throwaway Postfix: ``start`` writes main.cf/master.cf under ``root`` and runs
    ``postfix -c DIR start``; ``stop`` runs ``postfix -c DIR stop`` and removes ``root``.

    ``root`` is a fresh folder directly under /tmp with mode 0755:
    Postfix's daemons run as the postfix user and must reach their data directory, which
    pytest's private (0700) temporary folders would not allow."""

    sink_port: int
    milter_port: int
    smtpd_port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mailguard-postfix-", dir=_shared_tmp())))

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def log_file(self) -> Path:
        return self.root / "maillog"

    def main_cf(self) -> str:
        return "\n".join([
            "compatibility_level = 2",
            f"queue_directory = {self.queue_dir}",
            f"data_directory = {self.root / 'data'}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            f"maillog_file = {self.log_file}",
            f"maillog_file_prefixes = {self.root}",
            "myhostname = mx.mailguard.test",
            "mydomain = mailguard.test",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "relay_domains = practice.example",
            f"default_transport = smtp:[127.0.0.1]:{self.sink_port}",
            f"relay_transport = smtp:[127.0.0.1]:{self.sink_port}",
            "smtp_dns_support_level = disabled",
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            "biff = no",
            "smtputf8_enable = no",
            "smtpd_banner = $myhostname ESMTP",
            # retry deferred mail quickly, so a flush after the milter is back delivers at once
            "queue_run_delay = 1s",
            "minimal_backoff_time = 1s",
            "maximal_backoff_time = 2s",
            f"smtpd_milters = inet:127.0.0.1:{self.milter_port}",
            "non_smtpd_milters = $smtpd_milters",
            "milter_default_action = tempfail",
            "milter_protocol = 6",
            "milter_connect_timeout = 5s",
            "milter_command_timeout = 30s",
            "milter_content_timeout = 60s",
            "",
        ])

    def start(self) -> "PostfixInstance":
        self.root.chmod(0o755)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        self.queue_dir.mkdir(exist_ok=True)
        (self.config_dir / "main.cf").write_text(self.main_cf())
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(smtpd_address=f"127.0.0.1:{self.smtpd_port}"))
        shutil.chown(self.root / "data", "postfix")
        self.postfix("start")
        wait_until(self._smtpd_answers, 20, "Postfix smtpd to accept connections")
        return self

    def _smtpd_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.smtpd_port), timeout=1) as s:
                return s.recv(3) == b"220"
        except OSError:
            return False

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([_postfix_bin("postfix"), "-c", str(self.config_dir), *args],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed: {result.stderr}{self.log_tail()}")
        return result

    def postqueue(self, *args: str) -> str:
        result = subprocess.run([_postfix_bin("postqueue"), "-c", str(self.config_dir), *args],
                                capture_output=True, text=True, timeout=30)
        return result.stdout

    def sendmail(self, sender: str, recipients: list[str], content: bytes) -> None:
        """Submit on this machine (the sendmail command: maildrop, then pickup)."""
        subprocess.run([_postfix_bin("sendmail"), "-C", str(self.config_dir), "-f", sender, "--", *recipients],
                       input=content, check=True, capture_output=True, timeout=30)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def queue_files(self, queue: str) -> list[str]:
        folder = self.queue_dir / queue
        if not folder.is_dir():
            return []
        return [p.name for p in folder.rglob("*") if p.is_file()]

    def log_tail(self, lines: int = 40) -> str:
        return "\n--- maillog ---\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.postfix("stop")
        shutil.rmtree(self.root, ignore_errors=True)
