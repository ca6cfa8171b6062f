"""The language analyzer on written messages, scanned the way a front desk meets them:
each category with obfuscated variants that must still match, benign look-alikes that must
stay quiet, and the combination scoring that separates a lure from ordinary business."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

import pytest

from mailguard import Action, Config, Scanner
from mailguard.analyzers import analyzer_classes
from mailguard.analyzers.base import AnalyzerContext
from mailguard.analyzers.language import LanguageAnalyzer
from mailguard.message import parse


def language_only(**settings: object) -> Config:
    others = {name: {"enabled": False} for name in analyzer_classes() if name != "language"}
    return Config.from_dict({**others, "language": settings})


@pytest.fixture(scope="module")
def analyzer() -> LanguageAnalyzer:
    config = language_only()
    return LanguageAnalyzer(config.section("language"), AnalyzerContext(config))


def mail(subject: str, body: str, html: str | None = None, reply: bool = False,
         sender: str = "Someone <someone@example.com>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "frontdesk@example.org"
    msg["Subject"] = subject
    if reply:
        msg["In-Reply-To"] = "<earlier@example.org>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def rules(analyzer: LanguageAnalyzer, raw: bytes) -> dict[str, float]:
    return {f.rule: f.score for f in analyzer.analyze(parse(raw))}


def total(analyzer: LanguageAnalyzer, raw: bytes) -> float:
    return sum(rules(analyzer, raw).values())


# --------------------------------------------------------------------------- categories

CATEGORY_EXAMPLES = {
    "LANGUAGE_URGENCY": [
        "Immediate action required: respond within 24 hours.",
        "This is your final notice. Failure to respond will close the file.",
        "Responda dentro de las proximas 48 horas, accion requerida.",
    ],
    "LANGUAGE_ACCOUNT_THREAT": [
        "Your account has been suspended after unusual sign-in activity.",
        "Your mailbox is almost full; incoming messages are on hold.",
        "Your password expires today.",
        "Dear client, your PayPal account has been limited.",
        "Su cuenta ha sido bloqueada por actividad sospechosa.",
    ],
    "LANGUAGE_CREDENTIAL_REQUEST": [
        "Please verify your account by clicking the link below.",
        "Sign in to view the document that was shared with you.",
        "Enter your email address and password to continue.",
        "Verifique su cuenta hoy.",
    ],
    "LANGUAGE_PAYMENT_REQUEST": [
        "Please update our bank details before Friday's payment; we have new banking information.",
        "I need you to purchase gift cards for the staff.",
        "We need to change my direct deposit information before payroll.",
        "The invoice is overdue.",
        "Tenemos nuevos datos bancarios para el pago.",
    ],
    "LANGUAGE_SECRECY_AUTHORITY": [
        "I'm in a meeting right now, can't talk. Keep this confidential.",
        "Are you at your desk? I need a favor.",
        "Estoy en una reunion, mantenga esto confidencial.",
    ],
    "LANGUAGE_HEALTHCARE_LURE": [
        "Claim denied. Sign in to view your EOB.",
        "Medicare eligibility update for your patients.",
        "HIPAA violation notice: records request attached.",
        "You have a new voicemail. Listen to the voicemail here.",
        "Your NPI credentialing will expire; CAQH attestation is due.",
        "Reclamo denegado: explicacion de beneficios adjunta.",
    ],
    "LANGUAGE_PRIZE_REFUND": [
        "Congratulations, you have won! Claim your prize now.",
        "You are eligible for a refund. Claim your refund today.",
        "Usted ha ganado, reclame su premio.",
    ],
    "LANGUAGE_SCAM_STORY": [
        "I am the next of kin of my late husband and need a foreign partner to transfer the funds.",
        "We have hacked your device and recorded you; pay in bitcoin.",
        "Virus detected on your computer. Your device is infected.",
    ],
    "LANGUAGE_DELIVERY_LURE": [
        "Your package is on hold. Schedule a redelivery and pay the customs fee.",
        "Delivery attempt failed; confirm your delivery address.",
        "Su paquete esta retenido en aduana.",
    ],
    "LANGUAGE_GENERIC_GREETING": [
        "Dear customer, we are writing about your account.",
        "Dear Wells Fargo customer, please read.",
        "Estimado cliente, le escribimos.",
    ],
}


@pytest.mark.parametrize(
    "rule,body", [(rule, body) for rule, bodies in CATEGORY_EXAMPLES.items() for body in bodies]
)
def test_each_category_recognises_its_lures(analyzer: LanguageAnalyzer, rule: str, body: str) -> None:
    assert rule in rules(analyzer, mail("Notice", body))


BENIGN = [
    # ordinary practice mail that shares words with the lures
    ("Re: schedule", "Urgent: can we move Tuesday's 3pm to 4pm? Reply asap."),
    ("Re: password reset", "IT reset the copier password, it is on the sticky note in the back office."),
    ("Invoice 2231", "Attached is our invoice for October. Thanks for your business!"),
    ("Fax machine", "The fax machine is jammed again; I called the repair company."),
    ("Lunch", "Congratulations to Maria on her new baby! Cake in the break room at noon."),
    ("Re: supervision", "Keep the client notes confidential as always and bring them to supervision."),
    ("Claims report", "Two claims were denied last month for missing modifiers; I resubmitted them."),
    ("Re: [PATCH] clk: fix pin mux", "The pin is suspended during runtime PM; verify the clock is gated."),
]


@pytest.mark.parametrize("subject,body", BENIGN)
def test_ordinary_business_wording_stays_below_tag(analyzer: LanguageAnalyzer, subject: str, body: str) -> None:
    assert total(analyzer, mail(subject, body, reply=subject.startswith("Re:"))) < 5


def test_lone_category_stays_below_tag(analyzer: LanguageAnalyzer) -> None:
    raw = mail("Reminder", "Please verify your account details at your next visit to the office.")
    found = rules(analyzer, raw)
    assert "LANGUAGE_CREDENTIAL_REQUEST" in found
    assert sum(found.values()) < 5


def test_urgent_credential_lure_is_strong(analyzer: LanguageAnalyzer) -> None:
    raw = mail("Your account has been suspended",
               "We detected unusual sign-in activity. Verify your account within 24 hours "
               "or it will be closed. Click here to sign in.")
    found = rules(analyzer, raw)
    assert {"LANGUAGE_ACCOUNT_THREAT", "LANGUAGE_CREDENTIAL_REQUEST", "LANGUAGE_URGENCY"} <= found.keys()
    assert "LANGUAGE_ACCOUNT_THREAT_LOGIN" in found
    assert sum(found.values()) >= 10


def test_ceo_gift_card_fraud_is_tagged(analyzer: LanguageAnalyzer) -> None:
    raw = mail("Quick favor", "Are you at your desk? I'm in a meeting and can't talk. I need you to purchase "
                              "gift cards for a client today. Keep this between us.")
    found = rules(analyzer, raw)
    assert "LANGUAGE_SECRET_PAYMENT" in found
    assert sum(found.values()) >= 5


def test_healthcare_claim_lure_with_login_is_tagged(analyzer: LanguageAnalyzer) -> None:
    raw = mail("Claim denied - action required", "Your claim was denied. Sign in to view your explanation of "
                                                "benefits within 48 hours.")
    found = rules(analyzer, raw)
    assert "LANGUAGE_HEALTHCARE_LOGIN" in found
    assert sum(found.values()) >= 5


# --------------------------------------------------------------------------- obfuscation


@pytest.mark.parametrize("body", [
    "Please v e r i f y  y o u r  account now.",
    "Please V-E-R-I-F-Y your account now.",
    "Please verify your acc0unt now.",
    "Please ver\u200bify your acc\u200dount now.",           # zero-width characters
    "Please verify your \u202eaccount now.",                  # bidi override
    "Please verify your \u0430ccount now.",                  # Cyrillic a
    "Please \uff56\uff45\uff52\uff49\uff46\uff59 your account now.",  # full-width letters
    "Please \U0001d42f\U0001d41e\U0001d42b\U0001d422\U0001d41f\U0001d432 your account now.",  # bold math letters
    "Please verify&#32;your&nbsp;account now.",               # entities left in plain text
    "Please VERIFY YOUR ACCOUNT now.",
])
def test_obfuscated_credential_request_still_matches(analyzer: LanguageAnalyzer, body: str) -> None:
    assert "LANGUAGE_CREDENTIAL_REQUEST" in rules(analyzer, mail("Notice", body))


@pytest.mark.parametrize("subject", [
    "Your PayPaI account is Iimited",       # capital I for small l
    "Your P\u0430yPal account is limited",  # Cyrillic a in the brand
    "Your acc0unt is l1mited",
])
def test_obfuscated_account_threat_in_subject(analyzer: LanguageAnalyzer, subject: str) -> None:
    found = analyzer.analyze(parse(mail(subject, "See below.")))
    hits = [f for f in found if f.rule == "LANGUAGE_ACCOUNT_THREAT"]
    assert hits and hits[0].details["in_subject"]


@pytest.mark.parametrize("text, plain", [
    ("U-R-G-E-N-T: don\u2019t wait, verify\xa0your acc0unt \u2014 r\u00e9sum\u00e9 24h",
     " urgent dont wait verify your account resume 24h "),   # curly apostrophe, no-break space, dash, accents
    ("u @ r g e n t", " urgent "),                            # a lone symbol does not end spaced letters
    ("a b c  d e f g", " a b c defg "),                       # two spaces do; three letters stay words
    ("Reply \U0001F642now \u2192 P@ssword!!", " reply now password "),  # emoji and arrows separate
    ("!!! ...", "  "),
])
def test_text_is_read_as_plain_words(analyzer: LanguageAnalyzer, text: str, plain: str) -> None:
    assert analyzer.normaliser.normalise(text) == plain


def test_numbers_and_ids_are_not_read_as_words(analyzer: LanguageAnalyzer) -> None:
    norm = analyzer.normaliser.normalise("Call 555-0134 about claim 4471, 2fa code a1b2c3, room 3B")
    assert " 555 0134 " in norm and " 4471 " in norm and " a1b2c3 " in norm


def test_hidden_html_text_is_ignored(analyzer: LanguageAnalyzer) -> None:
    hidden = ('<p>See you Tuesday.</p><div style="display:none">verify your account within 24 hours, '
              'your account has been suspended, claim your prize</div>')
    raw = mail("Tuesday", "See you Tuesday.", html=hidden)
    assert rules(analyzer, raw) == {}


def test_visible_html_text_is_read(analyzer: LanguageAnalyzer) -> None:
    html = "<p>Your mailbox is <b>almost full</b>. <a href='http://x.example/'>Verify your account</a></p>"
    found = rules(analyzer, mail("Mailbox", "(no text part)", html=html))
    assert {"LANGUAGE_ACCOUNT_THREAT", "LANGUAGE_CREDENTIAL_REQUEST"} <= found.keys()


def test_subject_counts_more_than_body(analyzer: LanguageAnalyzer) -> None:
    in_subject = rules(analyzer, mail("Your password expires today", "Hello."))
    in_body = rules(analyzer, mail("Hello", "Your password expires today."))
    assert in_subject["LANGUAGE_ACCOUNT_THREAT"] > in_body["LANGUAGE_ACCOUNT_THREAT"]


def test_subject_carries_more_when_the_body_is_almost_empty(analyzer: LanguageAnalyzer) -> None:
    long_body = "The office will be closed on Monday for the holiday, as every year. " * 5
    short = rules(analyzer, mail("Security alert", "See the button below."))
    longer = rules(analyzer, mail("Security alert", long_body))
    assert short["LANGUAGE_ACCOUNT_THREAT"] > longer["LANGUAGE_ACCOUNT_THREAT"]


def test_repeating_a_word_is_not_more_evidence(analyzer: LanguageAnalyzer) -> None:
    once = rules(analyzer, mail("Hi", "urgent"))
    many = rules(analyzer, mail("Hi", "urgent " * 50))
    assert once == many


def test_findings_explain_in_plain_words(analyzer: LanguageAnalyzer) -> None:
    found = list(analyzer.analyze(parse(mail("Urgent", "Your account has been suspended."))))
    threat = next(f for f in found if f.rule == "LANGUAGE_ACCOUNT_THREAT")
    assert "account" in threat.summary and '"your account has been suspended"' in threat.summary
    assert threat.details["category"] == "account"


# --------------------------------------------------------------------------- whole scanner


def test_scanner_quarantines_a_strong_lure_and_passes_a_reply() -> None:
    scanner = Scanner(language_only())
    lure = scanner.scan(mail("Urgent: mailbox suspended", "Your mailbox has been suspended due to unusual "
                                                           "sign-in activity. Verify your account within 24 "
                                                           "hours. Click here to sign in."))
    reply = scanner.scan(mail("Re: Friday", "Urgent - please call the Hendersons back today.", reply=True))
    assert reply.action == Action.ACCEPT
    # The language alone weighs modestly (fitted scores, bench/fit.py): the lure scores far
    # above the reply, and is flagged once it claims a company its sender is not.
    assert lure.score >= reply.score + 2.5
    claimed = Scanner().scan(mail("Urgent: mailbox suspended", "Your mailbox has been suspended due to unusual "
                                  "sign-in activity. Verify your account within 24 hours. Sign in here: "
                                  "https://mailbox-verify.account-help.net/login",
                                  sender='"Microsoft Outlook" <it@account-help.net>'))
    assert claimed.action >= Action.TAG


def test_analyzer_is_thread_safe(analyzer: LanguageAnalyzer) -> None:
    messages = [parse(mail("Notice", body)) for bodies in CATEGORY_EXAMPLES.values() for body in bodies]
    expected = [sorted(f.rule for f in analyzer.analyze(m)) for m in messages]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(lambda m: sorted(f.rule for f in analyzer.analyze(m)), messages)) == expected


def test_the_short_body_test_counts_words_as_counting_every_space_would() -> None:
    """The short-body and attached-document tests stop at the first spaces they need; they
    must answer as counting every space of the normalised body (words = spaces - 1) does,
    for any limit an operator's scoring.toml may hold (infinite and not-a-number too)."""
    from mailguard.analyzers.language.analyzer import _fewer_words

    texts = [" ", "  ", " a ", " a b ", " one two three four five ", " " + "w " * 300]
    for text in texts:
        words = text.count(" ") - 1
        for limit in (0, 0.5, 1, 1.5, 2, 3, 5, 6, 40, 299, 300, 301, 10**9, float("inf"), float("nan"), -1):
            assert _fewer_words(text, limit) == (words < limit), (text[:20], limit)
