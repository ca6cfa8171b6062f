"""Configuration: defaults need no file; mistakes are errors that say where and what."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mailguard
from mailguard.cli import render_documented_example
from mailguard.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailguard.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    config = mailguard.Config.default()
    assert config.section("policy")["tag_at"] == 4.5
    assert config.section("lookalike")["enabled"] is True


def test_values_from_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[policy]\ntag_at = 4\nsubject_tag = "[CHECK]"\n'))
    assert config.section("policy")["tag_at"] == 4.0
    assert config.section("policy")["subject_tag"] == "[CHECK]"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[policy]\ntag_at = \"high\"\n", ["mailguard.toml", "[policy] tag_at", "expected a number", "'high'"]),
        ("[policy]\ntagat = 4\n", ["mailguard.toml", "unknown key 'tagat' in [policy]", "tag_at"]),
        ("[polcy]\ntag_at = 4\n", ["unknown section [polcy]", "policy"]),
        ("[policy]\non_error = \"explode\"\n", ["[policy] on_error", "'explode' is not one of"]),
        ("[policy\n", ["TOML syntax error", "line 1"]),
        ("[lookalike]\nprotected_domains = \"practice.example\"\n", ["[lookalike] protected_domains", "a list of strings"]),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    for fragment in expected:
        assert fragment in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "absent.toml")


def test_config_check_command(tmp_path: Path) -> None:
    good = write(tmp_path, "[policy]\nquarantine_at = 12\n")
    run = subprocess.run([sys.executable, "-m", "mailguard.cli", "config", "check", "--config", str(good)],
                         capture_output=True, text=True)
    assert run.returncode == 0
    assert "quarantine_at = 12.0" in run.stdout
    bad = write(tmp_path, "[policy]\nquarantine_at = true\n")
    run = subprocess.run([sys.executable, "-m", "mailguard.cli", "config", "check", "--config", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "[policy] quarantine_at: expected a number" in run.stderr


def test_documented_example_is_current_and_valid() -> None:
    """examples/mailguard.toml documents every key; regenerate with `mailguard config example`."""
    example = (REPO / "examples" / "mailguard.toml").read_text()
    assert example == render_documented_example(), "run: mailguard config example > examples/mailguard.toml"
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") else line for line in example.splitlines()
    )
    mailguard.Config.from_dict(tomllib.loads(uncommented))


def test_config_survives_pickling_for_worker_processes(tmp_path: Path) -> None:
    import pickle

    config = load_config(write(tmp_path, "[policy]\nscores = { RULE_A = 1.5 }\n"))
    copy = pickle.loads(pickle.dumps(config))
    assert copy.to_dict() == config.to_dict() and copy.source == config.source
