"""Configuration: one TOML file, every key optional, defaults built in.

Each part of mailguard declares the keys of its own section as a schema of ``Option``s
(policy, limits and logging in their modules; relay, milter and quarantine in their
packages' ``schema`` modules; every analyzer on its class). ``load_config`` checks a file against those schemas so that a typo
or a wrong type is an error that names the file, the key and what was expected, instead of
a setting that silently does nothing.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from mailguard.options import KINDS, ConfigError, Option, Schema, read_data_toml

__all__ = ["KINDS", "Config", "ConfigError", "Option", "Schema", "all_schemas", "load_config", "read_data_toml", "to_toml_value"]

# Sections whose schema lives in a module of their own; imported only when configuration
# is loaded, so each part keeps its keys next to the code that reads them.
SECTION_MODULES: Mapping[str, str] = {
    "policy": "mailguard.policy",
    "limits": "mailguard.message",
    "logging": "mailguard.logsetup",
    "quarantine": "mailguard.quarantine.schema",
    "relay": "mailguard.relay.schema",
    "milter": "mailguard.milter.schema",
    "auth": "mailguard.auth.schema",
    "dns": "mailguard.auth.dns_schema",
    "daemon": "mailguard.daemon.schema",
    "metrics": "mailguard.ops.schema",
    "outbound": "mailguard.relay.outbound_schema",
    "coherence": "mailguard.coherence",
}


def all_schemas() -> dict[str, Schema]:
    """Every known section and its schema, analyzers (built-in and plug-in) included."""
    from mailguard.analyzers import analyzer_classes

    schemas: dict[str, Schema] = {}
    for section, module_name in SECTION_MODULES.items():
        schemas[section] = importlib.import_module(module_name).CONFIG_SCHEMA
    for name, cls in analyzer_classes().items():
        schemas[name] = cls.full_schema()
    return schemas


class Config:
    """Validated settings, every section complete with defaults. Immutable."""

    def __init__(self, sections: Mapping[str, Mapping[str, Any]], source: Path | None = None) -> None:
        self._sections = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in sections.items()})
        self.source = source

    @classmethod
    def default(cls) -> "Config":
        return cls.from_dict({})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path | None = None) -> "Config":
        """Check every section and key; all mistakes of a file are reported at once (one
        line each), so an operator fixes them in one pass instead of one per restart."""
        where_file = str(source) if source else "configuration"
        schemas = all_schemas()
        errors: list[str] = []
        sections: dict[str, dict[str, Any]] = {}
        for section_name, value in data.items():
            if section_name not in schemas:
                known = ", ".join(sorted(schemas))
                errors.append(f"{where_file}: unknown section [{section_name}]; "
                              f"{_did_you_mean(section_name, schemas)}known sections: {known}")
            elif not isinstance(value, dict):
                errors.append(f"{where_file}: [{section_name}] must be a table (a [section] header)")
        for section_name, schema in schemas.items():
            given = data.get(section_name, {})
            given = given if isinstance(given, dict) else {}
            values: dict[str, Any] = {}
            for key, raw in given.items():
                if key not in schema:
                    known = ", ".join(sorted(schema)) or "(none)"
                    errors.append(f"{where_file}: unknown key '{key}' in [{section_name}]; "
                                  f"{_did_you_mean(key, schema, schemas, section_name)}known keys: {known}")
                    continue
                try:
                    values[key] = schema[key].check(raw, f"{where_file}: [{section_name}] {key}")
                except ConfigError as exc:
                    errors.append(str(exc))
            for key, option in schema.items():
                if key not in values:
                    values[key] = option.check(option.default, f"built-in default [{section_name}] {key}")
            sections[section_name] = values
            checker = _section_checker(section_name)
            if checker is not None:
                errors.extend(checker(values, f"{where_file}: [{section_name}]"))
        if errors:
            raise ConfigError("\n".join(errors))
        return cls(sections, source)

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (for worker processes started by spawn or forkserver): rebuilt and
        re-validated from plain values."""
        return (_restore_config, (self.to_dict(), self.source))

    def section(self, name: str) -> Mapping[str, Any]:
        try:
            return self._sections[name]
        except KeyError:
            raise KeyError(f"no configuration section [{name}]") from None

    def sections(self) -> Iterable[str]:
        return self._sections.keys()

    def resolve_path(self, value: str) -> Path:
        """A path from the file, relative to the file's own folder (as operators expect)."""
        path = Path(value).expanduser()
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    def to_dict(self) -> dict[str, dict[str, Any]]:
        def plain(v: Any) -> Any:
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            if isinstance(v, Mapping):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {name: {k: plain(v) for k, v in sec.items()} for name, sec in self._sections.items()}


def _did_you_mean(name: str, known: Mapping[str, Any], schemas: Mapping[str, Schema] | None = None,
                  section: str = "") -> str:
    """A hint for a misspelt section or key ("did you mean tag_at?"), or for a key written
    under the wrong section ("protected_domains belongs in [lookalike]"); "" when none fits."""
    import difflib

    near = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.75)
    if near:
        return f"did you mean {near[0]!r}? "
    if schemas is not None:
        homes = [other for other, schema in schemas.items() if other != section and name in schema]
        if homes:
            return f"'{name}' belongs in {' or '.join(f'[{h}]' for h in homes)}; "
    return ""


def name_the_key(config: Config | None, message: str) -> str:
    """``message`` (a ConfigError raised while a data file named in the configuration was
    read: "/x/scores.toml: cannot read the score table: ...") with the configuration file
    and key that named the file put first on each line that begins with its path, so the
    reader knows which setting to correct."""
    if config is None or config.source is None:
        return message
    named: dict[str, str] = {}
    schemas = all_schemas()
    for section_name, schema in schemas.items():
        values = config.section(section_name)
        for key, option in schema.items():
            if option.kind not in ("path", "list[path]") or not values.get(key):
                continue
            for value in ([values[key]] if option.kind == "path" else values[key]):
                named.setdefault(str(config.resolve_path(value)), f"[{section_name}] {key}")
    lines = []
    for line in message.splitlines():
        path = line.split(": ", 1)[0]
        key = named.get(path)
        lines.append(f"{config.source}: {key}: {line}" if key and not line.startswith(str(config.source)) else line)
    return "\n".join(lines)


def _section_checker(section: str) -> Any:
    """A section's own cross-key checks (``check_section(values, where) -> [error, ...]``
    in its schema module), e.g. threshold order in [policy] or the listen forms."""
    module_name = SECTION_MODULES.get(section)
    if module_name is None:
        return None
    return getattr(importlib.import_module(module_name), "check_section", None)


def _restore_config(data: Mapping[str, Any], source: Path | None) -> Config:
    return Config.from_dict(data, source)


MAX_CONFIG_BYTES = 4 << 20  # a real configuration is a few KB; lists of names and domains a few hundred


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file. Raises ConfigError with the file name."""
    path = Path(path)
    text = _read_config_bytes(path)
    import tomllib  # here: a start without a configuration file never needs it (15 ms)

    if text.startswith(b"\xef\xbb\xbf"):  # Windows Notepad's byte order mark: not TOML, but meant as none
        text = text[3:]
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = text.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the file as UTF-8") from None
    try:
        data = tomllib.loads(decoded)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {_syntax_detail(str(exc), decoded)}") from None
    return Config.from_dict(data, source=path.resolve())


def _read_config_bytes(path: Path) -> bytes:
    """The file's bytes, refusing what is not a regular file before reading it: a FIFO
    would wait for a writer for ever, /dev/zero would be read until memory ran out, a
    folder is a mistake worth naming ("give the file in it")."""
    import os
    import stat

    from mailguard.ops.errors import current_user

    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            hint = "correct the path, or write a documented one with `mailguard config example > FILE`"
            raise ConfigError(f"{path}: cannot read configuration file: no such file; {hint}") from None
        if isinstance(exc, PermissionError):
            raise ConfigError(f"{path}: cannot read configuration file: permission denied for user {current_user()}; "
                              f"make it readable by that user (e.g. `chgrp GROUP {path} && chmod g+r {path}`) "
                              "or run as a user who may read it") from None
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a folder, not a configuration file; give the file in it "
                              f"(e.g. --config {path / 'mailguard.toml'})")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file (a pipe, socket or device); give a TOML file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {info.st_size} bytes, too large for a configuration file (at most "
                              f"{MAX_CONFIG_BYTES >> 20} MiB); is it the right file?")
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            return handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror or exc}") from None
    finally:
        os.close(descriptor)


def _syntax_detail(message: str, text: str) -> str:
    """tomllib's message ("Invalid value (at line 3, column 17)") with the line it points
    at, and plainer words for a key or section given twice."""
    import re

    from mailguard.ops.shown import inline

    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if found is None:
        return message
    lines = text.splitlines()
    number = int(found.group(1))
    shown = inline(lines[number - 1].strip()[:120]) if 0 < number <= len(lines) else ""
    if message.startswith(("Cannot overwrite a value", "Cannot declare")):
        message += "; a key or [section] is given twice, keep one"
    return f"{message}: {shown}" if shown else message


def to_toml_value(value: Any) -> str:
    """Render a value as TOML, for `mailguard config check` and the documented example."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {to_toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(type(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else to_toml_value(key)
