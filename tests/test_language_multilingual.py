"""Sign-in, account-threat, payment and deadline lures in Portuguese, Spanish, French, German
and Dutch, written with their accents as people write them: the phrase rules (written without
accents) must still match, and each must land in the same category as its English twin so the
coherence stage reads the same request."""
from __future__ import annotations

import pytest

from mailguard.analyzers.language import LanguageAnalyzer
from tests.test_language import analyzer, mail, rules  # noqa: F401  (analyzer: the shared fixture)


def categories(analyzer: LanguageAnalyzer, body: str) -> set[str]:
    return set(rules(analyzer, mail("Aviso", body)))


EXAMPLES = [
    # Portuguese
    ("LANGUAGE_CREDENTIAL_REQUEST", "Por favor, acesse a sua conta e redefina sua senha."),
    ("LANGUAGE_CREDENTIAL_REQUEST", "Toque no botão para reativar o serviço."),
    ("LANGUAGE_ACCOUNT_THREAT", "Detectamos uma atividade incomum; seu acesso está temporariamente bloqueado."),
    ("LANGUAGE_PAYMENT_REQUEST", "Não foi possível processar o seu pagamento. Confirme o pagamento."),
    # Spanish
    ("LANGUAGE_CREDENTIAL_REQUEST", "Restablezca su contraseña: pulse clic aquí en el botón."),
    ("LANGUAGE_ACCOUNT_THREAT", "Hemos detectado un inicio de sesión inusual en su cuenta."),
    ("LANGUAGE_PAYMENT_REQUEST", "No hemos podido procesar su pago. Reembolso pendiente."),
    # French
    ("LANGUAGE_CREDENTIAL_REQUEST", "Connectez-vous à votre espace et réinitialisez votre mot de passe."),
    ("LANGUAGE_ACCOUNT_THREAT", "Nous avons détecté une activité inhabituelle sur votre compte."),
    ("LANGUAGE_PAYMENT_REQUEST", "Nous n'avons pas pu traiter votre paiement. Remboursement en attente."),
    # German
    ("LANGUAGE_CREDENTIAL_REQUEST", "Bitte ändern Sie Ihr Passwort, um Ihre Daten zu bestätigen."),
    ("LANGUAGE_ACCOUNT_THREAT", "Wir haben ungewöhnliche Anmeldeversuche festgestellt."),
    ("LANGUAGE_PAYMENT_REQUEST", "Ihre Zahlung konnte nicht verarbeitet werden. Rückerstattung verfügbar."),
    # Dutch
    ("LANGUAGE_CREDENTIAL_REQUEST", "Wijzig uw wachtwoord en klik hier om uw gegevens te bevestigen."),
    ("LANGUAGE_ACCOUNT_THREAT", "We hebben verdachte inlogpogingen gedetecteerd."),
    ("LANGUAGE_PAYMENT_REQUEST", "Uw betaling is mislukt. Bevestig uw betaling."),
]


@pytest.mark.parametrize(("rule", "body"), EXAMPLES)
def test_lure_in_each_language_lands_in_its_category(analyzer: LanguageAnalyzer, rule: str, body: str) -> None:
    assert rule in categories(analyzer, body)


@pytest.mark.parametrize("body", [
    "Caso contrário, sua conta será encerrada.",
    "De lo contrario, su cuenta será cerrada.",
    "Sinon votre compte sera fermé.",
    "Andernfalls wird Ihr Konto gesperrt.",
    "Anders wordt uw account geblokkeerd.",
])
def test_deadline_in_each_language_is_urgency(analyzer: LanguageAnalyzer, body: str) -> None:
    assert "LANGUAGE_URGENCY" in categories(analyzer, body)


def test_accents_fold_to_the_plain_letters_the_rules_use(analyzer: LanguageAnalyzer) -> None:
    plain = analyzer.normaliser.normalise("Ação: vérifiez, Zahlungsbestätigung über Señal ÇA")
    assert plain == " acao verifiez zahlungsbestatigung uber senal ca "


def test_ordinary_mail_in_these_languages_stays_quiet(analyzer: LanguageAnalyzer) -> None:
    for body in ("Obrigado pela reunião de ontem, segue a ata.", "Gracias por su visita, hasta el martes.",
                 "Merci pour votre message, à jeudi.", "Vielen Dank für Ihre Nachricht, bis Montag.",
                 "Bedankt voor uw bericht, tot dinsdag."):
        assert not categories(analyzer, body), body


def test_elided_articles_are_words_of_their_own(analyzer: LanguageAnalyzer) -> None:
    # "l'accès" joined into "lacces" hid "accès" from every phrase; English contractions
    # still join as before ("don't" -> "dont").
    plain = analyzer.normaliser.normalise("Aujourd’hui, l'accès à votre compte d'identité. Don't, it's")
    assert plain == " aujourdhui l acces a votre compte d identite dont its "
    assert "LANGUAGE_ACCOUNT_THREAT" in categories(analyzer, "L’accès à votre espace client est bloqué.")
