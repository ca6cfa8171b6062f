"""The checks start-up makes, in one place, so that ``mailguard config check`` refuses
exactly what ``serve`` and ``milter`` would refuse (systemd runs it in ExecStartPre).

Every check returns one line per problem (file, key or path; what is wrong; what to do) and
never raises: the caller prints them all and exits 2.
"""
from __future__ import annotations

import difflib
import inspect
import os
import re
import ssl
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mailguard.config import Config
from mailguard.resources import data_dir

RULE_ID = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
YARA_RULE = re.compile(r"^\s*(?:(?:private|global)\s+)*rule\s+(\w+)", re.MULTILINE)
WAYS = ("relay", "milter", "all")


@dataclass(frozen=True)
class ServiceUser:
    """Whose access counts: the user the service runs as (``--user``), by default whoever runs
    the check (in the unit's ExecStartPre that is the service user itself)."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def lookup(cls, name: str | None = None) -> "ServiceUser":
        import grp
        import pwd

        entry = pwd.getpwnam(name) if name else pwd.getpwuid(os.geteuid())
        groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}
        if not name:
            groups |= set(os.getgroups())
        return cls(entry.pw_name, entry.pw_uid, frozenset(groups))

    def can(self, path: Path, want: int) -> bool:
        """Whether this user has ``want`` (os.R_OK | os.W_OK | os.X_OK) on ``path``, by its mode
        bits (the same answer as access(2) for that user, without becoming it)."""
        try:
            st = path.stat()
        except OSError:
            return False
        if self.uid == 0:
            return not (want & os.X_OK) or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
        if st.st_uid == self.uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid in self.gids:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        return bits & want == want

    def reaches(self, path: Path) -> bool:
        """Every folder above ``path`` can be entered."""
        return all(self.can(parent, os.X_OK) for parent in path.parents)


def check(config: Config, way: str = "all", user: ServiceUser | None = None, scanner: Any = None) -> list[str]:
    """All start-up checks for ``way`` ("relay", "milter" or "all")."""
    user = user or ServiceUser.lookup()
    errors: list[str] = []
    errors += check_rule_ids(config, scanner)
    errors += check_libraries()
    if way in ("relay", "all"):
        errors += check_tls(config, user)
    uses_store = way in ("relay", "all") or config.section("milter")["quarantine"] == "store"
    if uses_store:
        errors += check_quarantine(config, user)
    return errors


def check_libraries() -> list[str]:
    """Libraries the scan opens only when a message needs them (libmagic, at the first
    attachment): a service finds out at start, not at the first attachment."""
    from mailguard.analyzers.filetype import libmagic_problem

    problem = libmagic_problem()
    return [problem] if problem else []


# --------------------------------------------------------------------------- rule ids


def known_rule_ids(scanner: Any) -> frozenset[str]:
    """Rule ids any analyzer can report: the UPPER_SNAKE names in the analyzers' code (built-in
    and plug-in), the core's (MIME limits), the data in rules/ and the YARA rules' ids."""
    sources: list[Path] = [p for p in Path(__file__).resolve().parents[1].rglob("*.py")]
    for analyzer in getattr(scanner, "analyzers", ()):
        module = sys.modules.get(type(analyzer).__module__)
        if module is not None and getattr(module, "__file__", None):
            sources.append(Path(module.__file__))
    for name in ("rules", "yara"):
        sources += [p for p in data_dir(name).rglob("*") if p.is_file()]
    ids: set[str] = set()
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        ids.update(RULE_ID.findall(text))
        if path.suffix in (".yar", ".yara"):
            ids.update(f"SIGNATURE_{name.upper()}" for name in YARA_RULE.findall(text))
    for analyzer in getattr(scanner, "analyzers", ()):
        compiled = getattr(analyzer, "compiled", None)  # signatures: operators' own YARA rules
        ids.update(info.rule_id for info in getattr(compiled, "info", {}).values())
        ids.update(_class_constants(type(analyzer)))
    from mailguard.analyzers.filetype import CATEGORY_RULES

    ids.update(CATEGORY_RULES.values())
    return frozenset(ids)


def _class_constants(cls: type) -> Iterable[str]:
    try:
        return RULE_ID.findall(inspect.getsource(cls))
    except (OSError, TypeError):
        return ()


def check_rule_ids(config: Config, scanner: Any = None) -> list[str]:
    """A rule id in [policy] scores or actions that no analyzer reports would silently do
    nothing: say so, with the nearest real id."""
    policy = config.section("policy")
    wanted = list(policy["scores"]) + list(policy["actions"])
    if not wanted:
        return []
    if scanner is None:
        from mailguard.scanner import Scanner

        scanner = Scanner(config)
    known = known_rule_ids(scanner)
    where = f"{config.source or 'configuration'}: [policy]"
    errors = []
    for key, table in (("scores", policy["scores"]), ("actions", policy["actions"])):
        for rule in table:
            if rule in known:
                continue
            near = difflib.get_close_matches(rule, sorted(known), n=1)
            hint = f"did you mean {near[0]}?" if near else "see docs/detection.md for the rule ids"
            errors.append(f"{where} {key}: {rule} is not a rule id any analyzer reports; {hint}")
    return errors


# --------------------------------------------------------------------------- TLS


def check_tls(config: Config, user: ServiceUser) -> list[str]:
    relay = config.section("relay")
    where = f"{config.source or 'configuration'}: [relay]"
    errors = []
    paths = {key: config.resolve_path(relay[key]) for key in ("tls_cert", "tls_key") if relay[key]}
    for key, path in paths.items():
        if not path.is_file():
            errors.append(f"{where} {key}: {path}: no such file; create it or correct the path")
        elif not (user.can(path, os.R_OK) and user.reaches(path)):
            errors.append(f"{where} {key}: {path}: not readable by user {user.name}; "
                          f"e.g. `chgrp {user.name} {path} && chmod g+r {path}`")
    if len(paths) == 2 and not errors and user.uid == os.geteuid():
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(paths["tls_cert"], paths["tls_key"])
        except (ssl.SSLError, OSError) as exc:
            errors.append(f"{where} tls_cert, tls_key: {paths['tls_cert']} and {paths['tls_key']} are not a PEM "
                          f"certificate chain and its private key ({getattr(exc, 'reason', None) or exc})")
    return errors


# --------------------------------------------------------------------------- quarantine


def check_quarantine(config: Config, user: ServiceUser) -> list[str]:
    """The quarantine folder, its database and the key file must be usable by the service user
    (a folder or key created by root is the classic first-day failure)."""
    settings = config.section("quarantine")
    where = f"{config.source or 'configuration'}: [quarantine]"
    fix = f"run `mailguard setup --user {user.name}" + (f" --config {config.source}`" if config.source else "`")
    errors = []
    if settings["backend"] == "sqlite":
        folder = config.resolve_path(settings["path"])
        folder_errors = _usable(folder, user, f"{where} path", fix, folder=True)
        errors += folder_errors
        if not folder_errors and folder.is_dir():
            try:
                items = sorted(folder.iterdir())
            except OSError:
                items = []
            for item in items:
                if item.is_file() and not user.can(item, os.R_OK | os.W_OK):
                    errors.append(f"{where} path: {item}: not readable and writable by user {user.name} "
                                  f"(created by another user?); {fix} or `chown -R {user.name} {folder}`")
    key = config.resolve_path(settings["key_file"])
    errors += _usable(key, user, f"{where} key_file", fix, folder=False)
    return errors


def _usable(path: Path, user: ServiceUser, where: str, fix: str, folder: bool) -> list[str]:
    if path.exists():
        want = os.R_OK | os.W_OK | os.X_OK if folder else os.R_OK
        if not (user.can(path, want) and user.reaches(path)):
            what = "usable" if folder else "readable"
            return [f"{where}: {path}: not {what} by user {user.name}; {fix}"]
        return []
    parent = next((p for p in path.parents if p.exists()), Path("/"))
    if not (user.can(parent, os.W_OK | os.X_OK) and user.reaches(parent)):
        what = "folder" if folder else "key file"
        return [f"{where}: {path}: the {what} does not exist and user {user.name} cannot create it in {parent}; {fix}"]
    return []
