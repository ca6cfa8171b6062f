"""Dating lures and crypto-wallet requests are categories of their own, and the wording
real notifications share with phishing (confirm the address you signed up with, "if this
was not you", a cancelled subscription) weighs little on its own."""
from __future__ import annotations

import pytest

from mailguard.analyzers.language import LanguageAnalyzer
from tests.test_language import analyzer, mail, rules  # noqa: F401  (analyzer: the shared fixture)


def scores(analyzer: LanguageAnalyzer, subject: str, body: str) -> dict[str, float]:
    return rules(analyzer, mail(subject, body))


@pytest.mark.parametrize(("subject", "body"), [
    ("Hi", "I am a lonely woman looking for a serious relationship. Click for date: http://x.example/p"),
    ("New matches", "Hot singles in your area want to meet you tonight."),
    ("Hallo", "Geile vrouwen bij jou in de buurt wachten op je. Bekijk mijn naaktfoto's."),
    ("Hallo", "Einsame Hausfrauen in deiner Nähe suchen Sextreffen."),
    ("Olá", "Mulheres carentes perto de você querem encontros casuais."),
])
def test_dating_lures_in_several_languages(analyzer: LanguageAnalyzer, subject: str, body: str) -> None:
    assert scores(analyzer, subject, body).get("LANGUAGE_DATING_LURE", 0) >= 2.0


@pytest.mark.parametrize("body", [
    "Your wallet has not been synchronized. Please verify your wallet before Friday or it will be suspended.",
    "To keep your assets safe, enter your 12-word recovery phrase on the page below.",
    "All unverified wallets will be restricted. Connect your MetaMask now.",
])
def test_crypto_wallet_requests(analyzer: LanguageAnalyzer, body: str) -> None:
    assert scores(analyzer, "Security notice", body).get("LANGUAGE_WALLET_REQUEST", 0) >= 2.0


def test_ordinary_mail_about_people_and_money_is_not_a_lure(analyzer: LanguageAnalyzer) -> None:
    found = scores(analyzer, "Re: Friday", "The new receptionist is single-handedly running the front desk; "
                   "we moved the petty cash wallet to the locked drawer.")
    assert "LANGUAGE_DATING_LURE" not in found and "LANGUAGE_WALLET_REQUEST" not in found


@pytest.mark.parametrize(("subject", "body"), [
    ("Confirm your email address", "Thanks for signing up. Please confirm your email address to finish."),
    ("Sign-in from Firefox", "Firefox on Windows signed in on Monday at 10:02. If this was not you, contact us."),
    ("Subscription update", "Your subscription has been cancelled as you asked. We hope to see you again."),
])
def test_notification_wording_is_weak_alone(analyzer: LanguageAnalyzer, subject: str, body: str) -> None:
    found = scores(analyzer, subject, body)
    assert found.get("LANGUAGE_ACCOUNT_THREAT", 0) < 2.0
    assert not any(rule.endswith(("_LOGIN", "_LURES")) for rule in found), found
