"""The README stays a newcomer's page: under 20 KB, its links resolve, and every command it
shows is run by a test or by .ci/run (the table below says which; each entry is checked to
be present there, so removing a test or changing a command shows up here)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()

# README command (its start) -> (file that runs it, text that file contains)
COVERED = {
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/mailguard check examples/messages":
        ("tests/test_cli.py", '"check", "--json", str(EXAMPLES)'),
    "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest -q":
        (".ci/run", "python3 -m venv .venv && .venv/bin/pip install -q '.[test]' && .venv/bin/python -m pytest -q"),
    "apt-get install -y python3-venv libmagic1 swaks": (".ci/run", "apt-get install"),
    "useradd --system --home-dir /var/lib/mailguard --shell /usr/sbin/nologin mailguard":
        ("tests/test_deploy.py", '"useradd", "--system", "--home-dir"'),
    "python3 -m venv /opt/mailguard && /opt/mailguard/bin/pip install":
        ("tests/test_deploy.py", '[str(venv_dir / "bin/pip"), "install"'),
    "ln -sf /opt/mailguard/bin/mailguard /usr/local/bin/mailguard": ("tests/test_deploy.py", "symlink_to"),
    "mailguard setup --user mailguard --config": ("tests/test_deploy.py", '"setup", "--user", user, "--config", config, "--units"'),
    "mailguard config check --user mailguard --config": ("tests/test_deploy.py", '"config", "check", "--user", user'),
    # No systemd as PID 1 in CI: the installed unit files are carried out as systemd would
    # (tests/systemd_unit.py) and checked with systemd-analyze verify.
    "systemctl daemon-reload && systemctl enable --now mailguard":
        ("tests/test_deploy.py", "def test_the_installed_units_run_as_systemd_runs_them"),
    "swaks --server 127.0.0.1:25 --to frontdesk@practice.example --from": ("tests/test_deploy.py", '"swaks", "--server"'),
    "swaks --server 127.0.0.1:25 --to frontdesk@practice.example --data examples/messages/lookalike-invoice.eml":
        ("tests/test_deploy.py", "examples/messages/lookalike-invoice.eml"),
    "mailguard quarantine list --since 1d": ("tests/test_deploy.py", '"quarantine", "list", "--since", "1d"'),
    "mailguard quarantine list --queue-id": ("tests/test_relay_process.py", '"quarantine", "list", "--queue-id"'),
    "mailguard quarantine show": ("tests/test_quarantine_cli.py", '"show"'),
    "mailguard quarantine release": ("tests/test_quarantine_cli.py", '"release"'),
    "mailguard quarantine delete": ("tests/test_quarantine_cli.py", '"delete"'),
    "mailguard stats --url": ("tests/test_deploy.py", '"stats", "--url"'),
    "/opt/mailguard/bin/pip install --upgrade": ("tests/test_deploy.py", '"install", "-q", "--upgrade"'),
    "mailguard config check --user mailguard --config /etc/mailguard/mailguard.toml && systemctl restart":
        ("tests/test_deploy.py", "# systemctl restart: the stop above, then the start again"),
}


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_readme_command_is_exercised() -> None:
    commands = readme_commands()
    assert len(commands) >= 10
    for command in commands:
        matches = [key for key in COVERED if command.startswith(key)]
        assert matches, f"README command not covered by a test or .ci/run: {command}"
        where, text = COVERED[max(matches, key=len)]
        assert text in (REPO / where).read_text(), (command, where, text)


def test_readme_is_short_and_its_links_resolve() -> None:
    assert len(README.encode()) < 20_000
    assert "issue's targets" not in README
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target
    for heading in ("## Quickstart", "## Relay or milter?", "## Deploy", "## The five settings to set",
                    "## Test it with swaks", "## Daily quarantine review", "## Troubleshooting"):
        assert heading in README
