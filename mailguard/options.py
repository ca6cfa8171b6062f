"""The vocabulary of configuration: ``Option`` (one key: default, kind, doc) and ``ConfigError``.

It lives apart from ``mailguard.config`` so that the modules that declare keys (analyzers,
policy, the relay, milter and quarantine schemas) never import the loader, and the loader
imports them: one direction, no cycle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

KINDS = ("bool", "int", "float", "str", "list[str]", "dict[str,float]", "dict[str,str]", "path", "list[path]")


INT_RANGE = (-(2**63), 2**63 - 1)


class ConfigError(ValueError):
    """A configuration problem, worded for the person who edits the file."""


@dataclass(frozen=True)
class Option:
    """One configuration key: its default, its kind, and what it is for (shown by
    ``mailguard config check`` and in examples/mailguard.toml)."""

    default: Any
    kind: str
    doc: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"unknown option kind {self.kind!r}")

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` in its normal form, or raise ConfigError saying what is wrong."""
        kind = self.kind
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
        elif kind in ("str", "path"):
            ok = isinstance(value, str)
        elif kind in ("list[str]", "list[path]"):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            if ok:
                value = tuple(value)
        elif kind == "dict[str,float]":
            ok = isinstance(value, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
            )
            if ok:
                value = MappingProxyType({str(k): float(v) for k, v in value.items()})
        elif kind == "dict[str,str]":
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            if ok:
                value = MappingProxyType(dict(value))
        else:  # pragma: no cover - guarded in __post_init__
            ok = False
        if not ok:
            raise ConfigError(f"{where}: expected {_describe(kind)}, got {_type_name(value)} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            # tomllib reads nan and inf as numbers; a threshold of nan is never reached (nothing
            # is ever tagged) and comparisons with it are always false: never what was meant
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if kind == "int" and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ConfigError(f"{where}: {value} is out of range for a whole number (TOML allows 64-bit integers)")
        if kind == "dict[str,float]" and not all(math.isfinite(v) for v in value.values()):
            raise ConfigError(f"{where}: expected finite numbers, got {dict(value)!r}")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, self.choices))}")
        if self.minimum is not None and isinstance(value, (int, float)) and value < self.minimum:
            raise ConfigError(f"{where}: must be at least {self.minimum:g}, got {value!r}")
        return value


Schema = Mapping[str, Option]


def _describe(kind: str) -> str:
    return {
        "bool": "true or false",
        "int": "a whole number",
        "float": "a number",
        "str": "a string",
        "path": "a file or folder path (string)",
        "list[str]": "a list of strings",
        "list[path]": "a list of paths (strings)",
        "dict[str,float]": "a table of numbers, e.g. { RULE_ID = 2.5 }",
        "dict[str,str]": "a table of strings",
    }[kind]


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )


def read_data_toml(path: Path, what: str) -> dict[str, Any]:
    """Read an operator-editable data file (rules/*.toml or an override); every failure
    is a ConfigError that names the file and what it was for. A file read before is
    taken from the build cache (keyed by its bytes): parsing TOML in Python costs a few
    hundredths of a second for the brand and rule tables, on every cold start."""
    from mailguard.resources import cache_key, cached_build

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    import hashlib

    kind = "toml-" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]
    key = cache_key(kind, (), [hashlib.sha256(data).hexdigest()])
    return cached_build(kind, key, lambda: _parse_data_toml(path, data, what))


def _parse_data_toml(path: Path, data: bytes, what: str) -> dict[str, Any]:
    import tomllib  # here: data files come from the build cache at nearly every start

    try:  # newlines translated as read_text translates them
        return tomllib.loads(data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error in the {what}: {exc}") from None
