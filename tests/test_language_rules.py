"""Operator-editable phrase rules: replacing or extending the built-in folder, the phrase
syntax ({a|b}, [optional], * for one word), and the errors a person editing the files
gets (file, place, what is wrong, what to do)."""
from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from mailguard import Config, Scanner
from mailguard.analyzers import analyzer_classes
from mailguard.analyzers.language.match import AhoCorasickMatcher, RegexMatcher, WordTrieMatcher
from mailguard.analyzers.language.rules import expand
from mailguard.config import ConfigError

CATEGORY = """
[category]
name = "lunch"
rule = "LANGUAGE_LUNCH_ORDER"
summary = "It is about lunch"
cap = 3.0

[[phrases]]
weight = 2.0
match = ["{order|bring} [some] {pizza|tacos}", "dear * chef"]
"""

SCORING = """
[scoring]
subject_weight = 2.0

[[combination]]
rule = "LANGUAGE_LUNCH_RUSH"
categories = ["lunch", "rush"]
bonus = 4.0
summary = "Lunch, in a hurry"
"""

RUSH = """
[category]
name = "rush"
rule = "LANGUAGE_RUSH"
summary = "It is in a hurry"
cap = 1.0

[[phrases]]
weight = 1.0
match = ["right now"]
"""


def config_with(tmp_path: Path, **language: object) -> Config:
    others = {name: {"enabled": False} for name in analyzer_classes() if name != "language"}
    return Config.from_dict({**others, "language": language}, source=tmp_path / "mailguard.toml")


def scan_rules(config: Config, subject: str, body: str) -> dict[str, float]:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = subject
    msg.set_content(body)
    return {f.rule: f.score for f in Scanner(config).scan(msg.as_bytes()).findings}


def write_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "myrules"
    folder.mkdir()
    (folder / "lunch.toml").write_text(CATEGORY)
    (folder / "rush.toml").write_text(RUSH)
    (folder / "scoring.toml").write_text(SCORING)
    return folder


def test_rules_dir_replaces_the_built_in_rules(tmp_path: Path) -> None:
    config = config_with(tmp_path, rules_dir=str(write_folder(tmp_path)))
    found = scan_rules(config, "Hello", "Please order some tacos right now, dear head chef.")
    assert found == {"LANGUAGE_LUNCH_ORDER": 3.0, "LANGUAGE_RUSH": 1.0, "LANGUAGE_LUNCH_RUSH": 4.0}
    # built-in phrases are gone
    assert scan_rules(config, "Hello", "Your account has been suspended.") == {}


def test_extra_rules_add_to_the_built_in_ones(tmp_path: Path) -> None:
    extra = tmp_path / "lunch.toml"
    extra.write_text(CATEGORY)
    config = config_with(tmp_path, extra_rules=["lunch.toml"])  # relative to the config file
    found = scan_rules(config, "Hello", "Bring pizza. Your account has been suspended.")
    assert "LANGUAGE_LUNCH_ORDER" in found and "LANGUAGE_ACCOUNT_THREAT" in found


def test_expand_choices_and_optional_words() -> None:
    assert expand("{act|respond} [now|today]", "x") == (
        "act now", "act today", "act", "respond now", "respond today", "respond")


@pytest.mark.parametrize("engine", [AhoCorasickMatcher, WordTrieMatcher, RegexMatcher])
def test_engines_agree_on_wildcards_and_overlaps(engine: type) -> None:
    phrases = [" dear * customer ", " verify ", " verify your account ", " your account ", " a * b * c "]
    matcher = engine(phrases)
    assert matcher.find(" dear acme customer please verify your account ") == {0, 1, 2, 3}
    assert matcher.find(" dear customer ") == frozenset()
    assert matcher.find(" a x b y c ") == {4}


def test_a_phrase_spaced_oddly_is_still_found_as_its_words() -> None:
    """Phrases come normalised (single spaces, one at each end); one that is not, from a
    caller of the matcher, is matched as its words, as before the shortcut for normal ones."""
    matcher = AhoCorasickMatcher([" verify\taccount ", "  your   bill ", " your bill "])
    assert matcher.find(" please verify account now ") == {0}
    assert matcher.find(" here is your bill ") == {1, 2}


@pytest.mark.parametrize("text,expected", [
    ('[category]\nname = "x"\nrule = "lower_case"\nsummary = "s"\ncap = 1\n', "must look like LANGUAGE_"),
    ('[category]\nname = "x"\nrule = "LANGUAGE_X"\nsummary = "s"\ncap = -1\n', "cap"),
    ('[category]\nname = "x"\nrule = "LANGUAGE_X"\nsummary = "s"\ncap = 1\n[[phrases]]\nweight = 1\n'
     'match = ["{a|b"]\n', "unbalanced"),
    ('[category]\nname = "x"\nrule = "LANGUAGE_X"\nsummary = "s"\ncap = 1\n[[phrases]]\nweight = 1\n'
     'match = ["pay $5 now"]\n', "words only"),
    ('[category]\nname = "x"\nrule = "LANGUAGE_X"\nsummary = "s"\ncap = 1\n[[phrases]]\nweight = 1\n'
     'match = ["* at the start"]\n', "one whole word"),
    ('[category]\nname = "x"\nrule = "LANGUAGE_X"\nsummary = "s"\ncap = 1\n[[phrases]]\nweight = 1\n'
     'match = "not a list"\n', "match must be a list"),
    ('[[combination]]\nrule = "LANGUAGE_C"\ncategories = ["nope", "urgency"]\nbonus = 1\nsummary = "s"\n',
     "unknown category 'nope'"),
    ('[scoring]\nsubject_wieght = 2\n', "[scoring] takes only"),
    ('name = "no tables"\n', "not a language rules file"),
    ('[category\n', "TOML syntax error"),
])
def test_mistakes_in_rule_files_are_clear_errors(tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        Scanner(config_with(tmp_path, extra_rules=[str(bad)]))
    assert "bad.toml" in str(err.value) and expected in str(err.value)


def test_missing_rules_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rules_dir"):
        Scanner(config_with(tmp_path, rules_dir=str(tmp_path / "nowhere")))


def test_python_engine_finds_what_the_default_finds(tmp_path: Path) -> None:
    body = ("Dear PayPal customer, your account has been limited after unusual sign-in activity. "
            "Verify your account within 24 hours: click here to sign in.")
    default = scan_rules(config_with(tmp_path), "Account limited", body)
    python = scan_rules(config_with(tmp_path, engine="python"), "Account limited", body)
    assert default == python and "LANGUAGE_ACCOUNT_THREAT_LOGIN" in default
