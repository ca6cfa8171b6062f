"""Hostile and broken input: every one yields a verdict, in bounded time and memory.

The time bound is enforced by pytest-timeout as a hang guard, not as a speed assertion;
memory is measured in a child process so one test's allocations don't hide another's.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mailguard
from mailguard import Action

pytestmark = pytest.mark.timeout(120)

SCAN_AND_MEASURE = r"""
import json, resource, sys
import mailguard
scanner = mailguard.Scanner()
raw = open(sys.argv[1], "rb").read()
verdict = scanner.scan(raw)
print(json.dumps({"verdict": verdict.to_dict(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scan_in_child(tmp_path: Path, raw: bytes) -> dict:
    path = tmp_path / "input.eml"
    path.write_bytes(raw)
    out = subprocess.run(
        [sys.executable, "-c", SCAN_AND_MEASURE, str(path)], capture_output=True, check=True, timeout=110
    )
    return json.loads(out.stdout)


def rules(verdict: mailguard.Verdict | dict) -> set[str]:
    findings = verdict["findings"] if isinstance(verdict, dict) else [f.to_dict() for f in verdict.findings]
    return {f["rule"] for f in findings}


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n\n\n",
        b"From: a@b.c\nSubject: trunc",
        b"From: a@b.c\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/pl",
        b"Subject: no body, no blank line",
        b"\xff\xfe\x00\x00garbage\x00\x01\x02" * 100,
        os.urandom(64 * 1024),
        b"just a body without any headers at all\nsecond line\n",
        b"From: =?bogus?Q?=ZZ=?= <@@>\nSubject: =?utf-8?B?!!!?=\nContent-Type: text/plain; charset=\"\"\n\n\x80\x81",
        b"Content-Type: multipart/alternative\n\n--no-boundary-declared\n",
        b"Content-Transfer-Encoding: quoted-printable\n\n=ZZ=\n=0",
    ],
    ids=["empty", "blank-lines", "truncated-header", "truncated-mime", "no-blank-line", "binary", "random",
         "no-headers", "bad-encodings", "no-boundary", "bad-qp"],
)
def test_broken_input_gets_a_verdict(scanner: mailguard.Scanner, raw: bytes) -> None:
    verdict = scanner.scan(raw)
    assert isinstance(verdict.action, Action)
    json.dumps(verdict.to_dict())


def test_ten_thousand_nested_parts(tmp_path: Path) -> None:
    body = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(10_000)
    )
    raw = b"From: a@example.com\nSubject: deep\nMIME-Version: 1.0\n" + body + b"Content-Type: text/plain\n\nhi\n"
    result = scan_in_child(tmp_path, raw)
    assert "MIME_TOO_DEEP" in rules(result["verdict"])
    assert result["peak_rss_mb"] < 1024


def test_ten_thousand_sibling_parts(scanner: mailguard.Scanner) -> None:
    parts = b"".join(b"--b\nContent-Type: text/plain\n\npart %d\n" % i for i in range(10_000))
    raw = b'From: a@example.com\nSubject: wide\nContent-Type: multipart/mixed; boundary="b"\n\n' + parts + b"--b--\n"
    verdict = scanner.scan(raw)
    assert "MIME_TOO_MANY_PARTS" in rules(verdict)


def _gigabyte_zip() -> bytes:
    buffer = io.BytesIO()
    chunk = b"\0" * (1 << 20)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("invoice.txt")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as member:
            for _ in range(1024):
                member.write(chunk)
    return buffer.getvalue()


def test_gigabyte_zip_bomb_is_reported_not_expanded(tmp_path: Path) -> None:
    import base64

    bomb = _gigabyte_zip()
    assert len(bomb) < 5 * 1024 * 1024
    raw = (
        b'From: a@example.com\nSubject: bomb\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nsee zip\n--b\nContent-Type: application/zip; name=\"files.zip\"\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(bomb) + b"--b--\n"
    )
    result = scan_in_child(tmp_path, raw)
    assert "ARCHIVE_BOMB" in rules(result["verdict"])
    assert result["peak_rss_mb"] < 1024


def test_one_megabyte_header(scanner: mailguard.Scanner) -> None:
    raw = b"From: a@example.com\nSubject: " + b"A" * (1 << 20) + b"\nX-Long: " + b"word " * 200_000 + b"\n\nbody\n"
    verdict = scanner.scan(raw)
    assert "HEADER_TOO_LONG" in rules(verdict)


def test_one_megabyte_address_list(scanner: mailguard.Scanner) -> None:
    raw = b"From: a@example.com\nTo: " + b", ".join(b"u%d@example.com" % i for i in range(60_000)) + b"\n\nhi\n"
    verdict = scanner.scan(raw)
    assert isinstance(verdict.action, Action)


def test_a_message_over_max_message_bytes_is_examined_up_to_it_and_held(tmp_path: Path) -> None:
    """A file of 3 GB once took 22 GB of memory to check. Past [limits] max_message_bytes
    only the beginning is read and examined, and the message is held (what was not read
    could hide anything), from the library and from `mailguard check` alike."""
    from mailguard.config import Config

    limit = 65536
    raw = (b"From: billing@example.com\r\nTo: frontdesk@practice.example\r\nSubject: statement\r\n\r\n"
           + b"Your statement is attached.\r\n" * 10_000)  # 290 KB
    scanner = mailguard.Scanner(Config.from_dict({"limits": {"max_message_bytes": limit}}))
    assert len(scanner.parse(raw).raw) == limit
    verdict = scanner.scan(raw)
    assert "MESSAGE_TOO_LARGE" in rules(verdict) and verdict.action >= Action.QUARANTINE
    assert "MESSAGE_TOO_LARGE" not in rules(scanner.scan(raw[:limit]))
    config = tmp_path / "mailguard.toml"
    config.write_text(f"[limits]\nmax_message_bytes = {limit}\n")
    message = tmp_path / "big.eml"
    message.write_bytes(raw)
    checked = subprocess.run([sys.executable, "-m", "mailguard", "check", "--daemon", "off", "--config", str(config),
                              "--json", str(message)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1, checked.stderr
    record = json.loads(checked.stdout)
    assert record["action"] == "quarantine" and "MESSAGE_TOO_LARGE" in rules(record)
