"""``mailguard setup``: the service user's folders and key, with the right owner and modes.

Run as root once after installing (and again after any change of paths: it is idempotent).
It never overwrites a key or a configuration, and it fixes the classic first-day failure,
a quarantine or key created by root (by running a `quarantine` command as root first) that
the service user then cannot open. It ends with the checks `mailguard config check --user`
makes, so "setup succeeded" means "the service will start".
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mailguard.config import Config, ConfigError, load_config

UNITS = ("mailguard.service", "mailguard-milter.service")


@dataclass
class Owner:
    name: str
    uid: int
    gid: int
    done: list[str] = field(default_factory=list)

    def own(self, path: Path, mode: int) -> None:
        """Give ``path`` to the service user with ``mode``; say what changed."""
        st = path.stat()
        changes = []
        if (st.st_uid, st.st_gid) != (self.uid, self.gid):
            os.chown(path, self.uid, self.gid)
            changes.append(f"owner {self.name}")
        if st.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
            changes.append(f"mode {mode:04o}")
        self.done.append(f"{'fixed' if changes else 'ok':7} {path} ({', '.join(changes) or f'{self.name}, {mode:04o}'})")

    def folder(self, path: Path, mode: int = 0o700) -> None:
        if not path.is_dir():
            path.mkdir(parents=True, mode=mode)
            self.done.append(f"created {path}")
        self.own(path, mode)


def cli_main(argv: Sequence[str], prog: str = "mailguard setup") -> int:
    from mailguard.ops import preflight
    from mailguard.ops.errors import report

    parser = argparse.ArgumentParser(
        prog=prog, description="Create the service user's quarantine folder, key file and log folder with the "
        "right owner and modes (idempotent; run as root), write a starter configuration if there is none, "
        "and check that the service can start.")
    parser.add_argument("--user", required=True, metavar="NAME", help="the service's user (create it first: "
                        "useradd --system --home-dir /var/lib/mailguard --shell /usr/sbin/nologin mailguard)")
    parser.add_argument("--config", "-c", metavar="FILE", required=True,
                        help="the configuration file, e.g. /etc/mailguard/mailguard.toml (written if absent)")
    parser.add_argument("--units", metavar="DIR",
                        help="also write the systemd units (relay and milter) into DIR, e.g. /etc/systemd/system, "
                             "with this installation's mailguard command")
    args = parser.parse_args(list(argv))
    try:
        import pwd

        entry = pwd.getpwnam(args.user)
    except KeyError:
        return report(prog, f"--user {args.user}: no such user; create it first: useradd --system --home-dir "
                            f"/var/lib/mailguard --shell /usr/sbin/nologin {args.user}")
    if os.geteuid() != 0:
        return report(prog, "must run as root (it creates folders and gives them to the service user); "
                            f"try: sudo mailguard setup --user {args.user} --config {args.config}")
    owner = Owner(entry.pw_name, entry.pw_uid, entry.pw_gid)
    config_path = Path(args.config).absolute()
    try:
        _starter_config(config_path, owner)
        config = load_config(config_path)
        _quarantine(config, owner)
        _log_file(config, owner)
        if args.units:
            _units(Path(args.units), config, config_path, owner)
    except ConfigError as exc:
        return report(prog, exc)
    except OSError as exc:
        from mailguard.ops.errors import path_error

        return report(prog, path_error(exc, "setup"))
    for line in owner.done:
        print(line)
    errors = preflight.check(config, "all", preflight.ServiceUser.lookup(owner.name))
    if errors:
        return report(prog, "\n".join(errors))
    print(f"ready: `mailguard config check --user {owner.name} --config {config_path}` passes")
    return 0


def _starter_config(path: Path, owner: Owner) -> None:
    """Absent: the documented example (every key commented, so built-in defaults), readable
    by the service's group only (it may name database URLs); its folder root-owned."""
    if path.exists():
        owner.done.append(f"{'ok':7} {path} (kept as it is)")
        return
    from mailguard.cli import render_documented_example

    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o750)
        os.chown(path.parent, 0, owner.gid)
        owner.done.append(f"created {path.parent} (root:{owner.name}, 0750)")
    path.write_text(render_documented_example())
    os.chown(path, 0, owner.gid)
    os.chmod(path, 0o640)
    owner.done.append(f"created {path} (every key commented: built-in defaults; edit it, then `mailguard config check`)")


def _quarantine(config: Config, owner: Owner) -> None:
    settings = config.section("quarantine")
    if settings["backend"] == "sqlite":
        folder = config.resolve_path(settings["path"])
        owner.folder(folder)
        for item in sorted(folder.iterdir()):
            if item.is_file() and not item.is_symlink():
                owner.own(item, 0o600)
    key = config.resolve_path(settings["key_file"])
    if not key.exists():
        from mailguard.quarantine.crypto import create_key_file

        if not key.parent.is_dir():
            key.parent.mkdir(parents=True, mode=0o750)
            os.chown(key.parent, 0, owner.gid)
        create_key_file(key)
        owner.done.append(f"created {key} (the quarantine key: back it up, apart from the quarantine's backup)")
    owner.own(key, 0o600)


def _log_file(config: Config, owner: Owner) -> None:
    name = config.section("logging")["file"]
    if not name:
        return
    path = config.resolve_path(name)
    if not path.parent.is_dir():
        owner.folder(path.parent, 0o750)
    if not path.exists():
        path.touch(mode=0o640)
        owner.done.append(f"created {path}")
    owner.own(path, 0o640)


def _writable_paths(config: Config) -> list[str]:
    """What the service writes, for the units' ReadWritePaths: under ProtectSystem=strict
    everything else is read-only, so a quarantine or log file configured outside
    /var/lib/mailguard would fail at the first held message unless the unit names it."""
    paths = [Path("/var/lib/mailguard")]
    quarantine = config.section("quarantine")
    if quarantine["backend"] == "sqlite":
        paths.append(config.resolve_path(quarantine["path"]))
    log_file = config.section("logging")["file"]
    if log_file:
        paths.append(config.resolve_path(log_file).parent)
    kept: list[Path] = []
    for path in paths:
        if not any(path.is_relative_to(other) for other in kept):
            kept.append(path)
    return [str(path) for path in kept]


def _units(folder: Path, config: Config, config_path: Path, owner: Owner) -> None:
    """The shipped units, with this installation's command, the configuration, the user and
    the paths it writes."""
    from mailguard.resources import data_dir

    command = shutil.which("mailguard") or str(Path(sys.argv[0]).absolute())
    folder.mkdir(parents=True, exist_ok=True)
    for name in UNITS:
        text = (data_dir("examples") / name).read_text()
        text = text.replace("/usr/local/bin/mailguard", command)
        text = text.replace("/etc/mailguard/mailguard.toml", str(config_path))
        text = text.replace("ReadWritePaths=/var/lib/mailguard", "ReadWritePaths=" + " ".join(_writable_paths(config)))
        text = text.replace("User=mailguard", f"User={owner.name}").replace("Group=mailguard",
                                                                           f"Group={owner.name}")
        target = folder / name
        if target.exists() and target.read_text() == text:
            owner.done.append(f"{'ok':7} {target}")
            continue
        target.write_text(text)
        os.chmod(target, 0o644)
        owner.done.append(f"wrote   {target} (then: systemctl daemon-reload)")
