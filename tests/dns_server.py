"""A real DNS server on loopback for the authentication tests: dnsmasq from Debian, on a
free port, answering only from the records a test gives it (no upstream, no /etc/hosts).

Names under the given local domains that are not configured get NXDOMAIN (``--local``),
as a real authoritative server would answer; nothing is ever forwarded anywhere.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import dns.message
import dns.query
import dns.rcode

import pytest


def dnsmasq_path() -> str | None:
    return shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)


def require_dnsmasq() -> str:
    path = dnsmasq_path()
    if path is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI=true but dnsmasq is not installed: .ci/run must install it")
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq)")
    return path


def free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port for the DNS server")


def closed_port() -> int:
    """A loopback UDP port where nothing answers: a resolver that is down."""
    return free_udp_port()


def loopback_dns() -> dict[str, Any]:
    """The ``[dns]`` section of every test configuration that scans mail (in-process dicts
    and the files of ``mailguard serve|milter|daemon`` subprocesses alike, so both give the
    same results). Without it, an empty ``nameservers`` means the system resolver, which is
    off loopback on the test machines. The server refuses every query at once, so each
    lookup is ``temperror`` (not checked) within a millisecond, never a timeout."""
    return {"nameservers": [_refusing_resolver()], "timeout_ms": 500}


def loopback_dns_toml() -> str:
    """``loopback_dns()`` as a TOML section, for configuration files."""
    section = loopback_dns()
    servers = ", ".join(f'"{s}"' for s in section["nameservers"])
    return f"[dns]\nnameservers = [{servers}]\ntimeout_ms = {section['timeout_ms']}\n"


@functools.cache
def _refusing_resolver() -> str:
    """One dnsmasq for the whole test run, with no zones and no upstream: it answers REFUSED.
    Outside CI without dnsmasq, a bound loopback port that never answers instead (the same
    temperror, after ``timeout_ms``), so tests that never look anything up still run."""
    if dnsmasq_path() is None and os.environ.get("CI") != "true":
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        atexit.register(silent.close)
        return f"127.0.0.1:{silent.getsockname()[1]}"
    server = DnsServer(local_domains=()).start()
    atexit.register(server.stop)
    return server.address


def _quoted_chunks(text: str) -> str:
    """dnsmasq's TXT syntax on the command line: comma-separated strings of at most 255
    bytes each (no quoting there, so test records must not contain commas)."""
    if "," in text:
        raise ValueError(f"a TXT record for dnsmasq's command line cannot contain a comma: {text!r}")
    chunks = [text[i:i + 250] for i in range(0, len(text), 250)] or [""]
    return ",".join(chunks)


@dataclass
class DnsServer:
    txt: Sequence[tuple[str, str]] = ()
    hosts: Sequence[tuple[str, str]] = ()
    local_domains: Sequence[str] = ("test", "example")
    forward: Sequence[tuple[str, int]] = ()  # (domain, port): queries for it go to 127.0.0.1#port
    port: int = field(default_factory=free_udp_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [require_dnsmasq(), "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
               "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-poll",
               "--pid-file=", "--log-facility=-", "--local-ttl=300", "--user=root" if os.geteuid() == 0 else "--user="]
        cmd += [f"--server=/{d}/127.0.0.1#{port}" for d, port in self.forward]
        cmd += [f"--local=/{d}/" for d in self.local_domains]
        cmd += [f"--txt-record={name},{_quoted_chunks(value)}" for name, value in self.txt]
        cmd += [f"--host-record={name},{ip}" for name, ip in self.hosts]
        return cmd

    def start(self, timeout: float = 10.0) -> "DnsServer":
        self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        query = dns.message.make_query("ready.probe.test.", "A")
        while True:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"dnsmasq exited with {self._process.returncode}: {err[-2000:]}")
            try:
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                return self
            except (dns.exception.Timeout, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"dnsmasq did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
