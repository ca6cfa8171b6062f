"""The deploy path of docs/deploy.md and the README, followed on this machine as root: a
fresh venv (as under /opt/mailguard) with the wheel built from this tree, a new system user,
`mailguard setup`, `config check --user`, the relay started as that user with systemd's
readiness protocol, messages through it with swaks to a loopback sink, and the metrics
endpoint scraped. Also the failures only a second user shows: a quarantine made by root,
port 25 without root.

Needs root (useradd, chown); outside CI it is skipped when not root; under CI=true it must run.
pip installs offline, from wheels repacked from the environment running the tests.
"""
from __future__ import annotations

import json
import os
import pwd
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from dns_server import loopback_dns_toml
import wheelhouse
from postfix_instance import free_port
from systemd_unit import UnitRun
from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT,
    SENDER,
    LoopThread,
    RawClient,
    Sink,
    clean_message,
    loop_thread,
    sink,
    wire,
)

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, why: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def deployed() -> Iterator[dict[str, Any]]:
    """/opt-style venv with the wheel and its dependencies, a new system user, and the
    folders a deploy uses, all under one world-readable temporary root."""
    need(os.geteuid() == 0, "the deploy test needs root (useradd, chown)")
    need(shutil.which("useradd") is not None, "useradd is missing")
    root = Path(tempfile.mkdtemp(prefix="mailguard-deploy-", dir="/tmp"))
    root.chmod(0o755)
    user = f"mgt{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--home-dir", str(root / "var/lib/mailguard"), "--shell",
                    "/usr/sbin/nologin", user], check=True)
    try:
        wheels = root / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(wheels), str(REPO)], check=True, capture_output=True)
        [wheel] = wheels.glob("mailguard-*.whl")
        venv_dir = root / "opt/mailguard"
        # The system's python3, as on a fresh Debian machine (a python under /root, e.g. pyenv's,
        # could not be run by the service user).
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        subprocess.run([python, "-m", "venv", str(venv_dir)], check=True)
        # Offline, as every test: the dependencies come from wheels repacked from this test
        # environment (tests/wheelhouse.py), never from a package index.
        wheelhouse.build("mailguard", wheels)
        install = subprocess.run([str(venv_dir / "bin/pip"), "install", "-q", "--no-index", "--find-links",
                                  str(wheels), str(wheel)], capture_output=True, text=True, timeout=600)
        need(install.returncode == 0, f"pip could not install the wheel's dependencies: {install.stderr[-500:]}")
        bin_dir = root / "usr/local/bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "mailguard").symlink_to(venv_dir / "bin/mailguard")
        etc = root / "etc/mailguard"
        yield {"root": root, "user": user, "mailguard": str(bin_dir / "mailguard"), "etc": etc,
               "config": etc / "mailguard.toml", "state": root / "var/lib/mailguard"}
    finally:
        subprocess.run(["userdel", user], check=False)
        shutil.rmtree(root, ignore_errors=True)


def as_user(user: str, *command: str, **kwargs: Any) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--init-groups",
            "--reset-env", *command]


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NOTIFY_SOCKET")}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str, lines: int = 1) -> None:
    """Exit 2, no traceback, one line per problem (each naming the path and the fix)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    found = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(found) == lines, result.stderr
    for fragment in fragments:
        assert fragment in found[0], (fragment, found[0])


def write_config(deploy: dict[str, Any], sink_port: int) -> None:
    deploy["etc"].mkdir(parents=True, exist_ok=True)
    deploy["config"].write_text(
        "[lookalike]\nprotected_domains = [\"practice.example\"]\n"
        "[relay]\nlisten = \"127.0.0.1:0\"\n"
        f"downstream = \"127.0.0.1:{sink_port}\"\n"
        "relay_domains = [\"practice.example\"]\nworkers = 1\n"
        "[quarantine]\n"
        f"path = \"{deploy['state'] / 'quarantine'}\"\nkey_file = \"{deploy['etc'] / 'quarantine.key'}\"\n"
        "[metrics]\nlisten = \"127.0.0.1:0\"\n"
        "[logging]\nformat = \"json\"\n"
        + loopback_dns_toml()
    )


def test_deploy_steps_then_a_message_through_the_relay(deployed: dict[str, Any], sink: Sink) -> None:
    d, user, mg, config = deployed, deployed["user"], deployed["mailguard"], str(deployed["config"])
    write_config(d, sink.port)

    # The first-day mistake: a quarantine command run as root before setup creates a
    # root-owned folder, key and database; the service user is then locked out.
    key = d["etc"] / "quarantine.key"
    folder = d["state"] / "quarantine"
    assert run([mg, "quarantine", "list", "--config", config]).returncode == 0
    one_line_error(run(as_user(user, mg, "quarantine", "list", "--config", config)), str(folder), user,
                   "mailguard setup", lines=2)  # the folder, and the key
    one_line_error(run(as_user(user, mg, "config", "check", "--config", config)), str(folder), user,
                   "mailguard setup", lines=2)

    # mailguard setup: folders and key for the service user, units; idempotent.
    units = d["root"] / "etc/systemd/system"
    first = run([mg, "setup", "--user", user, "--config", config, "--units", str(units)])
    assert first.returncode == 0 and "fixed" in first.stdout, first.stdout + first.stderr
    uid = pwd.getpwnam(user).pw_uid
    assert key.stat().st_uid == uid and key.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_uid == uid and folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_uid == uid for p in folder.iterdir())
    unit = (units / "mailguard.service").read_text()
    assert "Type=notify" in unit and f"User={user}" in unit and f"ExecStart={mg} serve --config {config}" in unit
    assert (units / "mailguard-milter.service").is_file()
    # ProtectSystem=strict: the quarantine configured outside /var/lib/mailguard is writable.
    assert f"ReadWritePaths=/var/lib/mailguard {folder}\n" in unit
    key_before = key.read_bytes()
    again = run([mg, "setup", "--user", user, "--config", config, "--units", str(units)])
    assert again.returncode == 0 and "created" not in again.stdout and "fixed" not in again.stdout, again.stdout
    assert key.read_bytes() == key_before
    # A review with sudo afterwards does not lock the service out again.
    assert run([mg, "quarantine", "list", "--config", config]).returncode == 0
    check = run(as_user(user, mg, "config", "check", "--config", config))
    assert check.returncode == 0, check.stderr
    as_root = run([mg, "config", "check", "--user", user, "--config", config])  # the README's form
    assert as_root.returncode == 0 and f"checked for user {user}" in as_root.stdout, as_root.stderr
    assert "[relay]" in check.stdout and "listen = \"127.0.0.1:0\"" in check.stdout
    assert "tag_at" not in check.stdout  # defaults only with --all
    assert "tag_at = 4.5" in run(as_user(user, mg, "config", "check", "--all", "--config", config)).stdout

    # Port 25 as the service user without the unit's capability: one line, exit 2.
    one_line_error(run(as_user(user, mg, "serve", "--config", config, "--listen", "127.0.0.1:25")),
                   "127.0.0.1:25", "CAP_NET_BIND_SERVICE")

    # The relay as the service user, with systemd's readiness protocol.
    notify_path = d["root"] / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        os.chmod(notify_path, 0o777)
        env = {"NOTIFY_SOCKET": str(notify_path), "PATH": "/usr/bin:/bin"}
        # Started from a folder the service user cannot enter (as `sudo -u` from root's home
        # would): its scanning processes must start all the same.
        root_only = d["root"] / "root-only"
        root_only.mkdir(mode=0o700, exist_ok=True)
        proc = subprocess.Popen(["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}",
                                 "--init-groups", mg, "serve", "--config", config],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=root_only)
        lines: queue.Queue[dict[str, Any]] = queue.Queue()
        log: list[dict[str, Any]] = []  # every line, for the failure message: what the relay did meanwhile
        threading.Thread(target=_read_json_lines, args=(proc, lines, log), daemon=True).start()
        try:
            notify.settimeout(120)
            state = notify.recv(4096).decode()
            assert "READY=1" in state, state
            port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", state).group(1))
            metrics_port = _wait_event(lines, "metrics listening")["port"]

            for n in range(2):
                sent = run(["swaks", "--server", f"127.0.0.1:{port}", "--to", "frontdesk@practice.example",
                            "--from", "colleague@partner.example", "--header", f"Subject: hello {n}",
                            "--body", "See you on Tuesday."])
                assert sent.returncode == 0, sent.stdout + _relay_log(log)
            phish = REPO / "examples/messages/lookalike-invoice.eml"  # the README's second swaks
            sent = run(["swaks", "--server", f"127.0.0.1:{port}", "--to", "frontdesk@practice.example",
                        "--data", str(phish)])
            assert sent.returncode == 0 and "queued as" in sent.stdout, sent.stdout + _relay_log(log)
            received = sink.handler.wait_for(2)
            assert len(received) == 2 and all(b"X-MailGuard-Action: accept" in m.data for m in received)
            events = [_wait_event(lines, "message") for _ in range(3)]
            assert {e["result"] for e in events} == {"delivered", "quarantined"}
            for e in events:  # one line per message, the documented fields
                assert {"way", "queue_id", "message_id", "action", "score", "rules", "scan_ms", "elapsed_ms"} <= set(e)

            # The metrics endpoint counts what happened.
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
            assert _sample(text, "mailguard_messages_total", action="accept") == 2
            assert _sample(text, "mailguard_messages_total", action="quarantine") == 1
            assert _sample(text, "mailguard_results_total", result="quarantined") == 1
            assert _sample(text, "mailguard_scan_seconds_count") == 3
            assert _sample(text, "mailguard_rule_hits_total", rule="LOOKALIKE_SENDER_DOMAIN") == 1
            assert _sample(text, "mailguard_quarantine_entries") == 1
            assert _sample(text, "mailguard_tempfails_total") == 0
            stats = run([mg, "stats", "--url", f"http://127.0.0.1:{metrics_port}/metrics"])
            assert stats.returncode == 0 and "messages: 3" in stats.stdout and "quarantine entries: 1" in stats.stdout
            listed = run(as_user(user, mg, "quarantine", "list", "--since", "1d", "--config", config))
            assert listed.returncode == 0 and "paypa1.com" in listed.stdout and "more" in listed.stdout, listed.stdout + listed.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=90)
    assert code == 0
    # Upgrading: the README's pip line on the same venv (here the same wheel), then the check.
    pip = str(Path(d["mailguard"]).resolve().parent / "pip")
    upgrade = run([pip, "install", "-q", "--upgrade", "--no-deps", str(next((d["root"] / "wheels").glob("mailguard-*.whl")))],
                  timeout=300)
    assert upgrade.returncode == 0, upgrade.stderr
    assert run([mg, "config", "check", "--user", user, "--config", config]).returncode == 0


def _read_json_lines(proc: subprocess.Popen[str], out: queue.Queue[dict[str, Any]],
                     log: list[dict[str, Any]]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            record = json.loads(line)
        except ValueError:
            record = {"event": "text", "line": line}
        log.append(record)
        out.put(record)


def _relay_log(log: list[dict[str, Any]]) -> str:
    return "\nthe relay's log so far:\n" + "\n".join(json.dumps(record) for record in list(log))


def _wait_event(lines: queue.Queue[dict[str, Any]], event: str, timeout: float = 60) -> dict[str, Any]:
    while True:
        record = lines.get(timeout=timeout)
        if record.get("event") == event:
            return record


def _sample(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def free_privileged_port() -> int:
    """A loopback port below 1024 that nothing holds: the relay unit must bind it as its
    unprivileged user with only the capability the unit grants."""
    for port in range(600, 1024):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024 on 127.0.0.1")


def write_units_config(deploy: dict[str, Any], sink_port: int, relay_port: int, milter_port: int) -> Path:
    """One file for both units, as one practice would have it (the milter's store mode
    releases through the sink here)."""
    path = deploy["etc"] / "units.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[lookalike]\nprotected_domains = [\"practice.example\"]\n"
        "[auth]\nenabled = false\n"  # no DNS: nothing here may ask the system resolver
        f"[relay]\nlisten = \"127.0.0.1:{relay_port}\"\ndownstream = \"127.0.0.1:{sink_port}\"\n"
        "relay_domains = [\"practice.example\"]\nworkers = 1\nshutdown_timeout = 20.0\n"
        f"[milter]\nlisten = \"inet:127.0.0.1:{milter_port}\"\n"
        "[quarantine]\n"
        f"path = \"{deploy['state'] / 'quarantine'}\"\nkey_file = \"{deploy['etc'] / 'quarantine.key'}\"\n"
        f"release_host = \"127.0.0.1:{sink_port}\"\n"
        "[logging]\nformat = \"json\"\n"
    )
    return path


def test_the_installed_units_run_as_systemd_runs_them(deployed: dict[str, Any], sink: Sink) -> None:
    """The README's `systemctl daemon-reload && systemctl enable --now mailguard` (and
    `systemctl reload`, `systemctl restart`), without systemd as PID 1: the unit files
    `mailguard setup --units` wrote are read and carried out as systemd would
    (tests/systemd_unit.py): ExecStartPre and ExecStart as User= with the unit's
    capabilities, READY=1 from the main process once the port answers, ExecReload with
    $MAINPID, and a stop as KillMode= says while a message is in transfer (it is delivered, no
    process is left behind). `systemd-analyze verify` checks the rest."""
    d, user, mg = deployed, deployed["user"], deployed["mailguard"]
    relay_port, milter_port = free_privileged_port(), free_port()
    config = write_units_config(d, sink.port, relay_port, milter_port)
    units = d["root"] / "units"
    setup = run([mg, "setup", "--user", user, "--config", str(config), "--units", str(units)])
    assert setup.returncode == 0, setup.stdout + setup.stderr
    relay_unit, milter_unit = units / "mailguard.service", units / "mailguard-milter.service"

    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is missing (apt-get install systemd)")
    verify = run(["systemd-analyze", "verify", str(relay_unit), str(milter_unit)])
    ours = [line for line in (verify.stdout + verify.stderr).splitlines() if "mailguard" in line]
    assert verify.returncode == 0 and not ours, verify.stdout + verify.stderr

    # The relay: port {relay_port} (< 1024) as the service user, by AmbientCapabilities alone.
    relay = UnitRun(relay_unit, d["root"] / "relay-notify.sock")
    try:
        assert [r.returncode for r in relay.start_pre()] == [0]
        proc = relay.start()
        lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=_read_json_lines, args=(proc, lines, []), daemon=True).start()
        ready = relay.wait_ready()
        with RawClient("127.0.0.1", relay_port) as client:  # open at READY=1: no retry, no wait
            assert client.reply()[0] == 220
        assert ready.state.get("STATUS") == f"listening on 127.0.0.1:{relay_port}"
        assert _status_field(proc.pid, "Uid").split()[0] == str(pwd.getpwnam(user).pw_uid)

        [reload] = relay.reload()  # systemctl reload mailguard
        assert reload.returncode == 0, reload.stderr
        _wait_event(lines, "reloaded")

        busy = RawClient("127.0.0.1", relay_port)  # systemctl stop while a message is on its way
        try:
            assert busy.reply()[0] == 220
            for command in ("EHLO client.test", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>"):
                assert busy.command(command)[0] == 250
            assert busy.command("DATA")[0] == 354
            message = clean_message(7)
            busy.send(wire(message)[:100])
            stopping = threading.Thread(target=lambda: setattr(relay, "code", relay.stop()))
            stopping.start()
            assert _wait_event(lines, "draining")["in_transfer"] == 1
            busy.send(wire(message)[100:])
            code, text = busy.reply()
            assert code == 250, text  # received, scanned and delivered while stopping
        finally:
            busy.close()
        stopping.join(120)
        assert getattr(relay, "code") == 0 and relay.left_behind == []  # its scanning processes stopped too
        [received] = sink.handler.wait_for(1)
        assert received.data.endswith(message.split(b"\r\n\r\n", 1)[1])

        # systemctl restart: the stop above, then the start again (the port is free at once).
        assert [r.returncode for r in relay.start_pre()] == [0]
        proc = relay.start()
        lines = queue.Queue()
        threading.Thread(target=_read_json_lines, args=(proc, lines, []), daemon=True).start()
        relay.wait_ready()
        with RawClient("127.0.0.1", relay_port) as client:
            assert client.reply()[0] == 220
        assert relay.stop() == 0 and relay.left_behind == []
    finally:
        relay.close()

    # The milter unit: the same steps (no capability: its port is unprivileged).
    milter = UnitRun(milter_unit, d["root"] / "milter-notify.sock")
    try:
        assert [r.returncode for r in milter.start_pre()] == [0]
        proc = milter.start()
        lines = queue.Queue()
        threading.Thread(target=_read_json_lines, args=(proc, lines, []), daemon=True).start()
        ready = milter.wait_ready()
        assert ready.state.get("STATUS") == f"milter listening on inet:127.0.0.1:{milter_port}", ready.state
        assert _milter_answers(milter_port)
        [reload] = milter.reload()
        assert reload.returncode == 0, reload.stderr
        _wait_event(lines, "configuration reloaded from " + str(config))
        assert milter.stop() == 0 and milter.left_behind == []
    finally:
        milter.close()


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _milter_answers(port: int) -> bool:
    """An MTA's first packet (option negotiation) gets the milter's answer."""
    from mailguard.milter import protocol as mp

    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(mp.OptNeg(6, 0x1FF, 0x1FFFFF).encode())
        header = conn.recv(4, socket.MSG_WAITALL)
        body = conn.recv(mp.packet_length(header), socket.MSG_WAITALL)
    return body[:1] == mp.SMFIC_OPTNEG


def test_start_up_as_the_service_user_names_what_it_cannot_use(deployed: dict[str, Any]) -> None:
    """Issue 15's first-day failures at the real start (serve and milter as the service user,
    as the units run them), not only in `config check`: a key file the user cannot create,
    and a quarantine and key that a root review created before `mailguard setup` ran. One
    line per problem naming the path and the fix, exit 2, no traceback."""
    d, user, mg = deployed, deployed["user"], deployed["mailguard"]
    entry = pwd.getpwnam(user)
    base = d["root"] / "startup"
    mine = base / "state"  # the user's own: only the key is out of reach
    mine.mkdir(parents=True)
    os.chown(mine, entry.pw_uid, entry.pw_gid)
    keys = base / "root-keys"  # root's, 0755: the service user cannot create a file in it
    keys.mkdir(mode=0o755)

    def config(name: str, folder: Path, key: Path) -> str:
        path = base / name
        path.write_text(
            "[relay]\nlisten = \"127.0.0.1:0\"\n[milter]\nlisten = \"inet:127.0.0.1:0\"\n"
            f"[quarantine]\npath = \"{folder}\"\nkey_file = \"{key}\"\nrelease_host = \"127.0.0.1:25\"\n")
        path.chmod(0o644)
        return str(path)

    no_key = config("no-key.toml", mine / "quarantine", keys / "quarantine.key")
    one_line_error(run([mg, "config", "check", "--user", user, "--config", no_key]),
                   str(keys / "quarantine.key"), f"user {user} cannot create it", "mailguard setup")
    for way in ("serve", "milter"):
        one_line_error(run(as_user(user, mg, way, "--config", no_key)),
                       str(keys / "quarantine.key"), f"user {user} cannot create it", "mailguard setup")

    root_made = config("root-made.toml", base / "root-quarantine", base / "root-made.key")
    assert run([mg, "quarantine", "list", "--config", root_made]).returncode == 0  # as root, before setup
    for way in ("serve", "milter"):
        one_line_error(run(as_user(user, mg, way, "--config", root_made)),
                       str(base / "root-quarantine"), user, "mailguard setup", lines=2)  # the folder, and the key
