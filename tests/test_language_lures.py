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
    ("Good day! How are things?", "I'm a unmarried sincere girl. Now I'm waiting for fine guy, I can send to You my "
     "photo attach) Where r You from and how old r You?"),
    ("Rencontrer des célibataires ukrainiens", "Rencontrer des beautés ukrainiennes. Voir les photos !"),
    ("Wil je met me uit?", "Kan je zo even chatten? Ik heb zin in iets stouts."),
    ("Hi", "We offer the opportunity to get acquainted with the girl without obligation: a city girl with a photo."),
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


@pytest.mark.parametrize(("rule", "body"), [
    ("LANGUAGE_PRIZE_REFUND", "Your balance has been replenished +29,738$ https://drive.example/file/d/1"),
    ("LANGUAGE_PRIZE_REFUND", "You have 24 hours to withdraw +17,794$ https://drive.example/file/d/2"),
    ("LANGUAGE_SCAM_STORY", "I would like to request your assistance in a lucrative business that would be mutually "
     "beneficial, email me for more details."),
    ("LANGUAGE_PRIZE_REFUND", "Username: www.abcdef.example - 1.360 BTC BINANCE To set your password, visit the address."),
    ("LANGUAGE_SCAM_STORY", "Intimação de Testemunha – Audiência por Videoconferência. Caso deixe de comparecer será "
     "conduzido coercitivamente."),
    ("LANGUAGE_SCAM_STORY", "Anklageschreiben wegen eines Verbrechens. Ihre Einladung finden Sie im Anhang."),
    ("LANGUAGE_SCAM_STORY", "Ihre McAfee-Lizenz ist abgelaufen. Ihr Gerät ist jetzt anfällig für Viren."),
    ("LANGUAGE_WALLET_REQUEST", "Activate the staking feature: register and migrate your account to the new contract."),
])
def test_short_money_lures(analyzer: LanguageAnalyzer, rule: str, body: str) -> None:
    assert scores(analyzer, "Hello", body).get(rule, 0) >= 2.0


def test_everyday_wording_near_the_new_lures_is_quiet(analyzer: LanguageAnalyzer) -> None:
    found = scores(analyzer, "Re: front desk", "The new receptionist is waiting for the courier; we will send you "
                   "the report. Your balance is zero and the business is doing well for both of us.")
    assert not {"LANGUAGE_DATING_LURE", "LANGUAGE_PRIZE_REFUND", "LANGUAGE_SCAM_STORY"} & set(found), found


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
