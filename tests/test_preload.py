"""The services import at start-up (Scanner.preload) what a scan otherwise imports at the
first message that needs it: a PDF, an Office file with macros, a DKIM signature, an SPF
check and its DNS lookups, patient data going out. Each cost that first message 40-70 ms
(and every fresh daemon worker again); after preload, scanning such mail imports nothing.

Run in a fresh interpreter: this one has imported everything long ago."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dns_server import loopback_dns

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

SCRIPT = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import filetype_samples as S
from mailguard import Config, Scanner
from mailguard.model import Envelope

config = Config.from_dict(json.loads(sys.argv[3]))
scanner = Scanner(config)
if sys.argv[4] == "preload":
    scanner.preload()
signed = (b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=s1; c=relaxed/relaxed;"
          b" h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\n")
mail = [
    S.message([("statement.pdf", S.real_pdf(), "application/pdf")]),
    S.message([("intake.docm", S.real_docx(macro_source=S.AUTOOPEN_MACRO), "application/vnd.ms-word.document.macroEnabled.12")]),
    S.message([("form.doc", S.word97_with_macro(), "application/msword")]),
    signed + S.message(),
]
inbound = Envelope(mail_from="pat@sender.example", rcpt_tos=("frontdesk@practice.example",),
                   client_address="192.0.2.10", helo="mail.sender.example")
outbound = Envelope(mail_from="frontdesk@practice.example", rcpt_tos=("billing@payer.example",),
                    client_address="127.0.0.1", helo="practice.example", direction="outbound")
patient_data = S.message(body="Patient John Smith, SSN 078-05-1120, DOB 01/02/1980, member ID 998877.")
before = set(sys.modules)
for raw in mail:
    scanner.scan(raw, inbound)
scanner.scan(patient_data, outbound)
print(json.dumps(sorted(m for m in set(sys.modules) - before if not m.startswith("encodings."))))
"""


def imported_while_scanning(mode: str) -> list[str]:
    config = {"dns": loopback_dns(), "phi": {"enabled": True}}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), str(TESTS), json.dumps(config), mode],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_after_preload_scanning_imports_nothing_more() -> None:
    assert imported_while_scanning("preload") == []


def test_without_preload_the_first_such_message_imports_them() -> None:
    """The reason for preload, and a check that the mail above reaches every lazy import:
    a cold `mailguard check` keeps them lazy."""
    imported = set(imported_while_scanning("lazy"))
    for module in ("pypdf", "oletools.olevba", "dkim", "spf", "dns.resolver"):
        assert module in imported, sorted(imported)
