"""The wording of bank phishing that the categories read besides sign-in requests: a
routine-security pretext, a form of "additional authorisation" to fill in, credit-card
offers; and the words every notification shares with phishing weigh little alone."""
from __future__ import annotations

import pytest

from mailguard.analyzers.language import LanguageAnalyzer
from tests.test_language import analyzer, mail, rules  # noqa: F401  (analyzer: the shared fixture)


def scores(analyzer: LanguageAnalyzer, subject: str, body: str) -> dict[str, float]:
    return rules(analyzer, mail(subject, body))


def test_security_pretext_is_an_account_threat(analyzer: LanguageAnalyzer) -> None:
    found = scores(analyzer, "Notice", "During our regular review we could not verify your information. "
                   "As part of our security measures, please confirm it below.")
    assert found.get("LANGUAGE_ACCOUNT_THREAT", 0) >= 2.0


@pytest.mark.parametrize("body", [
    "Wir bitten Sie, eine spezielle Form der zusätzlichen Autorisation auszufüllen.",
    "Merci de remplir le formulaire ci-dessous pour confirmer votre compte.",
    "Por favor, preencha o formulário para regularizar o seu cadastro.",
])
def test_form_to_fill_in_is_a_credential_request(analyzer: LanguageAnalyzer, body: str) -> None:
    assert scores(analyzer, "Hinweis", body).get("LANGUAGE_CREDENTIAL_REQUEST", 0) >= 2.0


def test_credit_card_offer_is_a_spam_offer(analyzer: LanguageAnalyzer) -> None:
    found = scores(analyzer, "Un-secured Gold Visa Card", "Rebuild your credit with an unsecured Visa card: instant approval.")
    assert found.get("LANGUAGE_SPAM_OFFER", 0) >= 2.0


@pytest.mark.parametrize(("subject", "body"), [
    ("Password", "Your password for the staff portal. Log in with your username."),
    ("Warning: approaching your limit", "Upgrade your account to a premium plan for more reports."),
])
def test_notification_words_do_not_join_combinations(analyzer: LanguageAnalyzer, subject: str, body: str) -> None:
    found = scores(analyzer, subject, body)
    assert found.get("LANGUAGE_CREDENTIAL_REQUEST", 0) < 1.0, found
