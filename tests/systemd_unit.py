"""Run an installed systemd unit the way systemd runs it, where the test machine has no
systemd as PID 1 (a container): the unit file is read, not assumed.

What is carried out from the file: ``User=``/``Group=`` (with the user's supplementary
groups), ``UMask=``, ``NoNewPrivileges=``, ``AmbientCapabilities=`` and
``CapabilityBoundingSet=`` (through setpriv), the environment systemd gives a service
(``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``NOTIFY_SOCKET``), each
``ExecStartPre=`` in order (a failure fails the start), ``ExecStart=`` as the main process,
``Type=notify`` readiness read from a notify socket that takes the sender's credentials
(``NotifyAccess=main``: only the main process counts), ``ExecReload=`` with ``$MAINPID``, and
a stop as ``KillMode=`` says (``KillSignal=`` to the main process, or to every process
of the service at once, then waiting ``TimeoutStopSec=``; none may be left behind). The
file-system sandbox (``ProtectSystem=``, ``PrivateTmp=``...) is not applied here;
``systemd-analyze verify`` checks that systemd accepts those lines.
"""
from __future__ import annotations

import os
import pwd
import grp
import shlex
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values in order, as systemd reads them: comments (# ;), line
    continuations (a trailing backslash), repeated keys adding values, an empty value
    resetting the list."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting outside any section: {line}"
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if value:
            current.setdefault(key, []).append(value)
        else:
            current[key] = []
    return sections


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "m": 60, "h": 3600}
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


@dataclass
class Notification:
    pid: int
    state: dict[str, str]


@dataclass
class UnitRun:
    """One service of ``unit`` (a path to the installed file), started by ``start``."""

    unit: Path
    notify_path: Path
    service: dict[str, list[str]] = field(init=False)
    proc: subprocess.Popen[str] | None = None
    left_behind: list[str] = field(default_factory=list)  # "pid command"
    _notify: socket.socket | None = None

    def __post_init__(self) -> None:
        self.service = parse_unit(self.unit.read_text())["Service"]

    def one(self, key: str, default: str = "") -> str:
        values = self.service.get(key, [])
        return values[-1] if values else default

    # -- how systemd starts a process of this service

    def user(self) -> pwd.struct_passwd:
        return pwd.getpwnam(self.one("User"))

    def environment(self) -> dict[str, str]:
        entry = self.user()
        return {"PATH": SYSTEMD_PATH, "HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name,
                "SHELL": entry.pw_shell, "NOTIFY_SOCKET": str(self.notify_path)}

    def credentials(self) -> list[str]:
        """setpriv arguments for User=, Group=, NoNewPrivileges= and the capability lines."""
        entry = self.user()
        group = grp.getgrnam(self.one("Group")).gr_gid if self.one("Group") else entry.pw_gid
        args = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={group}", "--init-groups"]
        ambient = [c.lower().removeprefix("cap_") for v in self.service.get("AmbientCapabilities", [])
                   for c in v.split()]
        if ambient:
            caps = ",".join(f"+{c}" for c in ambient)
            args += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
        if "CapabilityBoundingSet" in self.service:
            kept = [c.lower().removeprefix("cap_") for v in self.service["CapabilityBoundingSet"] for c in v.split()]
            args.append("--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in kept)]))
        if self.one("NoNewPrivileges") in ("true", "yes", "1"):
            args.append("--no-new-privs")
        return args

    def command(self, line: str, mainpid: int | None = None) -> list[str]:
        if line[:1] in "-+!@:":
            raise AssertionError(f"{self.unit.name}: Exec prefix {line[0]!r} is not emulated here")
        if mainpid is not None:
            line = line.replace("${MAINPID}", str(mainpid)).replace("$MAINPID", str(mainpid))
        assert "$" not in line and "%" not in line, f"unexpanded variable or specifier in {line!r}"
        return [*self.credentials(), *shlex.split(line)]

    def _umask(self) -> Any:
        mask = int(self.one("UMask", "0022"), 8)
        return lambda: os.umask(mask)

    def run(self, line: str, mainpid: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = self.environment()
        if mainpid is not None:
            env["MAINPID"] = str(mainpid)
        return subprocess.run(self.command(line, mainpid), capture_output=True, text=True, timeout=timeout,
                              env=env, preexec_fn=self._umask())

    # -- the life of the service

    def start_pre(self) -> list[subprocess.CompletedProcess[str]]:
        """Every ExecStartPre= in order; systemd stops at the first failure."""
        done = []
        for line in self.service.get("ExecStartPre", []):
            result = self.run(line)
            done.append(result)
            if result.returncode != 0:
                break
        return done

    def start(self) -> subprocess.Popen[str]:
        """ExecStart= as the main process, with a notify socket bound first (as systemd's)."""
        [line] = self.service["ExecStart"]
        if self._notify is None:  # kept across a restart, as systemd's own
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent each state
            sock.bind(str(self.notify_path))
            os.chmod(self.notify_path, 0o777)  # the service user writes to it, as to systemd's
            self._notify = sock
        self.proc = subprocess.Popen(self.command(line), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=self.environment(), preexec_fn=self._umask())
        return self.proc

    def notification(self, timeout: float) -> Notification:
        """The next datagram on the notify socket, with the sending process's pid."""
        assert self._notify is not None
        self._notify.settimeout(timeout)
        data, ancillary, _, _ = self._notify.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[: struct.calcsize("3i")])[0]
        state = dict(item.partition("=")[::2] for item in data.decode().splitlines() if item)
        return Notification(pid, state)

    def wait_ready(self) -> Notification:
        """READY=1 from the main process within TimeoutStartSec= (others are ignored under
        NotifyAccess=main; here they fail the test, since nothing else should send)."""
        assert self.proc is not None and self.one("Type") == "notify"
        timeout = _seconds(self.one("TimeoutStartSec", "90"))
        while True:
            note = self.notification(timeout)
            assert note.pid == self.proc.pid or self.one("NotifyAccess") == "all", (
                f"notification from pid {note.pid}, not the main process {self.proc.pid}: {note.state}")
            if note.state.get("READY") == "1":
                return note

    def reload(self) -> list[subprocess.CompletedProcess[str]]:
        assert self.proc is not None
        return [self.run(line, mainpid=self.proc.pid) for line in self.service.get("ExecReload", [])]

    def processes(self) -> list[int]:
        """The main process and every descendant: the service's control group."""
        assert self.proc is not None
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    continue
        return found

    def stop(self) -> int:
        """KillSignal= to the main process (KillMode=mixed) or to every process of the
        service at once (control-group, the default), then up to TimeoutStopSec= for the main
        process to exit; systemd would then SIGKILL it, a failure here. Under mixed, what is
        left of the service afterwards would get SIGKILL too: also a failure (a process left
        behind), reported as ``left_behind``."""
        assert self.proc is not None
        signum = getattr(signal, self.one("KillSignal", "SIGTERM"))
        mode = self.one("KillMode", "control-group")
        assert mode in ("control-group", "mixed"), f"KillMode={mode} is not emulated here"
        group = self.processes()
        for pid in group if mode == "control-group" else [self.proc.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        code = self.proc.wait(timeout=_seconds(self.one("TimeoutStopSec", "90")))
        # A helper that ends on its own once the main process is gone (multiprocessing's
        # resource tracker reads until its pipe closes) gets a moment; what still runs then
        # is what systemd's final SIGKILL would find.
        deadline = time.monotonic() + 10
        while (left := [pid for pid in group[1:] if _alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.left_behind = [f"{pid} {_cmdline(pid)}" for pid in left]
        return code

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for pid in self.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(30)
        for pid in (int(item.split()[0]) for item in self.left_behind):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._notify is not None:
            self._notify.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
