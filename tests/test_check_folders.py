"""`mailguard check` on a real mailbox folder: the mail store's own files are skipped with a
note (by name and content: a message is never skipped for its name), and the progress bar
on a terminal's standard error (with its rate) never mixes with the report on standard output."""
from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "messages"


def maildir(tmp_path: Path) -> Path:
    box = tmp_path / "Maildir"
    (box / "cur").mkdir(parents=True)
    for message in sorted(EXAMPLES.glob("*.eml")):
        shutil.copy(message, box / "cur" / message.name)
    (box / "dovecot.index").write_bytes(b"\x01\x02\x00\x00\x00\x00 index")
    (box / "dovecot.index.log").write_bytes(b"\x01\x00\x00\x00")
    (box / "dovecot-uidlist").write_text("3 V1700000000 N4 G0a1b2c\n1 :1700000000.M1P1.host\n")
    (box / "maildirfolder").write_bytes(b"")
    (box / "subscriptions").write_text("INBOX\nSent\n")
    # A real message that happens to have a bookkeeping name is still scanned.
    shutil.copy(EXAMPLES / "lookalike-invoice.eml", box / "cur" / "dovecot.keep")
    return box


def test_mailbox_bookkeeping_is_skipped_with_a_note(tmp_path: Path) -> None:
    box = maildir(tmp_path)
    run = subprocess.run([sys.executable, "-m", "mailguard", "check", "--daemon", "off", "-j", "1", str(box)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    scanned = [line for line in run.stdout.splitlines() if not line.startswith(" ")]
    assert len(scanned) == len(list(EXAMPLES.glob("*.eml"))) + 1
    assert any("dovecot.keep: QUARANTINE" in line for line in scanned)
    for name in ("dovecot.index", "dovecot.index.log", "dovecot-uidlist", "maildirfolder", "subscriptions"):
        assert f"{box / name}: skipped" in run.stderr
        assert str(box / name) + ":" not in run.stdout


def test_progress_bar_on_a_terminal_never_mixes_with_the_report(tmp_path: Path) -> None:
    box = maildir(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mailguard", "check", "--daemon", "off", "-j", "1", str(box)],
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    terminal = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        assert ready, "no output on the terminal"
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    report, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 1
    text = terminal.decode("utf-8", "replace")
    assert "msg/s" in text.split("checked in")[0]  # the bar, with its rate
    assert "checked in" in text and "quarantine" in text.split("checked in")[-1]  # the summary by action
    assert "\r" not in report and "|" not in report.replace("||", "")  # no bar in the report
    assert all(line.startswith(("  ", str(box))) for line in report.splitlines())
