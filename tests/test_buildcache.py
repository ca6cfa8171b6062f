"""The build cache: what is slow to build (language automaton, compiled YARA, the public
suffix list, parsed data files) is kept in a folder that is safe to delete, keyed by what
it was built from, and never fatal."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailguard import Scanner
from mailguard.resources import CACHE_ENV, cache_key, cached_build

PHISH = (
    b"From: PayPal <service@paypa1-secure.com>\nTo: a@practice.example\nSubject: Urgent: verify your account\n"
    b"Message-ID: <c1@x>\n\nYour account will be suspended. Verify your password now at http://paypa1-secure.com/login\n"
)


def test_scanner_built_from_cache_gives_the_same_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = Scanner().scan(PHISH).to_dict()
    kinds = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    # (the public suffix list, "psl", is loaded once per process: here only if no test before did)
    assert {"language", "yara", "toml"} <= set(kinds) <= {"language", "yara", "psl", "toml"}
    second = Scanner().scan(PHISH).to_dict()
    first.pop("elapsed_ms"), second.pop("elapsed_ms")
    assert first == second and first["action"] != "accept"


def test_a_data_file_edited_after_it_was_cached_is_read_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailguard.options import ConfigError, read_data_toml

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = tmp_path / "brands.toml"
    data.write_text("a = 1\r\n")
    assert read_data_toml(data, "brand table") == {"a": 1} == read_data_toml(data, "brand table")  # the second from the cache
    data.write_text("a = 2\n")
    assert read_data_toml(data, "brand table") == {"a": 2}
    data.write_text("a = \n")
    with pytest.raises(ConfigError, match="brands.toml: TOML syntax error in the brand table"):
        read_data_toml(data, "brand table")


def test_a_changed_input_is_a_new_key(tmp_path: Path) -> None:
    rule = tmp_path / "r.toml"
    rule.write_text("a = 1\n")
    before = cache_key("language", [rule])
    rule.write_text("a = 2\n")
    assert cache_key("language", [rule]) != before


def test_unwritable_cache_folder_only_means_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    assert cached_build("thing", "k", lambda: {"built": True}) == {"built": True}


def test_damaged_or_foreign_writable_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    assert cached_build("thing", "k", lambda: 1) == 1
    stored = folder / "thing-k.bin"
    stored.write_bytes(b"garbage")
    assert cached_build("thing", "k", lambda: 2) == 2  # damaged: built again and stored
    assert cached_build("thing", "k", lambda: 3) == 2
    os.chmod(stored, 0o666)  # others could have written it: never unpickled
    assert cached_build("thing", "k", lambda: 4) == 4


def test_cache_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cached_build("thing", "k", lambda: 5) == 5
    assert not list(tmp_path.iterdir())
