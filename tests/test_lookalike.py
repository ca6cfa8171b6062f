"""Lookalike senders and links, scanned as whole messages through mailguard.Scanner the way
a front desk would meet them: each technique, the display-name and Reply-To checks, link
deception, the wording staff read, and the real senders that must never be flagged."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path

import pytest

import mailguard
from mailguard import Action, Config, Envelope
from mailguard.analyzers import analyzer_classes
from mailguard.config import ConfigError

PRACTICE = "mindwellpsychology.org"


def only_lookalike(settings: dict[str, object]) -> Config:
    """The lookalike analyzer alone, so each test shows what its findings do by themselves
    (a tag or a quarantine from these scores alone)."""
    others = {name: {"enabled": False} for name in analyzer_classes() if name != "lookalike"}
    return Config.from_dict({**others, "lookalike": settings})


def make_config(**lookalike: object) -> Config:
    settings: dict[str, object] = {
        "protected_domains": [PRACTICE, "brightpaththerapy.com", "uhc.com"],
        "protected_names": ["Dr. Jane Roe"],
    }
    settings.update(lookalike)
    return only_lookalike(settings)


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner(make_config())


def message(
    sender: str = "billing@paypal.com",
    name: str = "",
    reply_to: str = "",
    text: str = "Hello, please see the attached statement.",
    html: str = "",
    subject: str = "Your statement",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr((name, sender)) if name else sender
    msg["To"] = f"frontdesk@{PRACTICE}"
    msg["Subject"] = subject
    msg["Message-ID"] = "<test-1@example.net>"
    if reply_to:
        msg["Reply-To"] = reply_to
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def lookalike(verdict: mailguard.Verdict) -> dict[str, mailguard.Finding]:
    assert not verdict.errors, verdict.errors
    return {f.rule: f for f in verdict.findings if f.analyzer == "lookalike"}


def scan(scanner: mailguard.Scanner, **kw: str) -> dict[str, mailguard.Finding]:
    return lookalike(scanner.scan(message(**kw)))


# ---------------------------------------------------------------- sender domain techniques

SENDER_CASES = {
    # host: (technique, imitated domain, words the explanation must contain)
    "paypa1.com": ("homoglyph", "paypal.com", "the letter l was replaced by the digit 1"),
    "xn--pypal-4ve.com": ("homoglyph", "paypal.com", "Cyrillic letter а"),
    "rnicrosoft.com": ("homoglyph", "microsoft.com", "the letter m was replaced by the letters rn"),
    "paypal.net": ("tld_swap", "paypal.com", "different ending (.net instead of .com)"),
    "pay-pal.com": ("hyphenation", "paypal.com", "a hyphen was added"),
    "pay.pal.com": ("split", "paypal.com", "a dot splits the name paypal"),
    "secure-paypal-billing.com": ("combosquat", "paypal.com", "adds the words \"secure\" and \"billing\""),
    "availity-billing.net": ("combosquat", "availity.com", "the word \"billing\""),
    "paypal.com.verify-account.info": ("embedded", "paypal.com", "really belongs to is verify-account.info"),
    "paypall.com": ("typo", "paypal.com", "the letter l was doubled"),
    "pyapal.com": ("typo", "paypal.com", "the letters a and y were swapped"),
    "simplepractise.com": ("typo", "simplepractice.com", "the letter c was replaced by the letter s"),
    "mindwelpsychology.org": ("typo", PRACTICE, "the letter l was left out"),
    "uhx.com": ("typo", "uhc.com", "the letter c was replaced by the letter x"),
    "actma.com": ("typo", "aetna.com", "the letter e was replaced by the letter c, which looks like e"),
    "ṗaypal.com": ("homoglyph", "paypal.com", "the letter p was replaced by the look-alike character ṗ"),
}


@pytest.mark.parametrize("host", sorted(SENDER_CASES))
def test_sender_lookalike_quarantines_and_names_technique(scanner: mailguard.Scanner, host: str) -> None:
    technique, target, words = SENDER_CASES[host]
    verdict = scanner.scan(message(sender=f"accounts@{host}"))
    found = lookalike(verdict)
    finding = found["LOOKALIKE_SENDER_DOMAIN"]
    assert finding.details["technique"] == technique
    assert finding.details["imitates"] == target
    assert words in finding.summary
    assert finding.summary.startswith("Sender domain ")
    assert verdict.action >= Action.QUARANTINE


def test_explanation_wording_is_plain_english(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="billing@paypa1.com")
    assert found["LOOKALIKE_SENDER_DOMAIN"].summary == (
        "Sender domain paypa1.com imitates paypal.com (PayPal): the letter l was replaced by the digit 1, "
        "which looks like l"
    )
    found = scan(scanner, sender="billing@pаypal.com")
    assert "the letter a was replaced by the Cyrillic letter а, which looks the same" in (
        found["LOOKALIKE_SENDER_DOMAIN"].summary
    )
    assert "mixes Cyrillic and Latin letters" in found["LOOKALIKE_SENDER_DOMAIN"].summary


def test_practice_domain_under_another_ending(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="office@mindwellpsychology.com")
    assert found["LOOKALIKE_SENDER_DOMAIN"].summary == (
        "Sender domain mindwellpsychology.com imitates mindwellpsychology.org: it uses the name "
        "mindwellpsychology with a different ending (.com instead of .org), and mindwellpsychology.com is "
        "not on the practice's list of trusted domains"
    )


@pytest.mark.parametrize("sender", [
    "billing@paypal.com", "service@mail.paypal.com", "no-reply@office365.com", "alerts@outlook.com",
    "x@sharepoint.com", "team@simplepractice.com", f"jane@{PRACTICE}", "someone@gmail.com",
    "news@github.com", "list@vger.kernel.org", "dse@docusign.net", "no-reply@zoom.us",
])
def test_real_domains_are_never_flagged(scanner: mailguard.Scanner, sender: str) -> None:
    found = scan(scanner, sender=sender)
    assert not {r for r in found if r.endswith("_DOMAIN")}, found


def test_reply_to_and_envelope_lookalikes(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="billing@paypal.com", reply_to="billing@paypa1.com")
    assert "LOOKALIKE_REPLY_TO_DOMAIN" in found
    verdict = scanner.scan(message(sender="x@example.net"), Envelope(mail_from="bounce@paypa1.com"))
    found = lookalike(verdict)
    assert found["LOOKALIKE_ENVELOPE_DOMAIN"].summary.startswith("Envelope sender domain paypa1.com imitates")


@pytest.mark.parametrize("sender", [
    "a@ibm.com",            # one slip from ibx.com (a built-in Blue Cross plan): another company
    "a@epic.org",           # an ordinary word under another ending (Epic is epic.com)
    "a@google.com.br", "a@microsoft.de", "a@amazon.co.uk",  # global brands' country endings
    "a@mail.com",           # a real free-mail provider, not a slip of gmail.com
    "a@evernote.com",       # two slips from evernorth.com: too far for a 9-letter name
    "a@zoominfo.com",       # a brand word plus a word phishers do not use
])
def test_real_companies_resembling_brands_are_not_flagged(scanner: mailguard.Scanner, sender: str) -> None:
    assert not scan(scanner, sender=sender)


def test_short_builtin_names_need_listing_for_typos() -> None:
    builtin_only = mailguard.Scanner(only_lookalike({}))
    assert not lookalike(builtin_only.scan(message(sender="a@uhx.com")))
    # Exact-form tricks on a short built-in name are still caught.
    found = lookalike(builtin_only.scan(message(sender="a@uhc-billing.com")))
    assert found["LOOKALIKE_SENDER_DOMAIN"].details["technique"] == "combosquat"


def test_global_brand_under_generic_ending_is_flagged(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="a@google.info")
    assert found["LOOKALIKE_SENDER_DOMAIN"].details["technique"] == "tld_swap"


def test_brand_word_as_subdomain_is_evidence_only(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(message(sender="billing@paypal.mailer-host.net"))
    finding = lookalike(verdict)["LOOKALIKE_SENDER_SUBDOMAIN"]
    assert "the name paypal is put in front of an unrelated domain, mailer-host.net" in finding.summary
    assert verdict.action == Action.ACCEPT
    links = scan(scanner, sender="news@example.org", text="Add-in: https://outlook.addin-vendor.com/get")
    assert not links


def test_mixed_script_sender_domain_without_brand(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="a@nоrdlake-clinic.com")  # a Cyrillic о inside a Latin name
    finding = found["LOOKALIKE_MIXED_SCRIPT_DOMAIN"]
    assert "mixes Cyrillic and Latin letters" in finding.summary


def test_unregistrable_link_hosts_are_ignored(scanner: mailguard.Scanner) -> None:
    assert not scan(scanner, sender="a@example.org", text="See http://uk.my.yahoo.comm/ today")


# ---------------------------------------------------------------- display names

def test_brand_in_display_name_of_unrelated_sender_tags(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(message(sender="billing@invoices-center.net", name="PayPal Billing"))
    finding = lookalike(verdict)["LOOKALIKE_DISPLAY_NAME_BRAND"]
    assert finding.summary == (
        "The sender calls itself \"PayPal Billing\" but writes from invoices-center.net, which is not one of "
        "PayPal's domains"
    )
    # The name alone no longer tags (its score is fitted, bench/fit.py); the phish it goes
    # with (a sign-in request whose link is not PayPal's) is flagged by the whole scanner.
    phish = mailguard.Scanner(Config.from_dict({})).scan(message(
        sender="billing@invoices-center.net", name="PayPal Billing",
        text="Your account has been limited. Sign in to restore access: https://restore.account-help.net/x"))
    assert phish.action >= Action.TAG
    assert "PayPal" in phish.summary and "sign in" in phish.summary and "restore.account-help.net" in phish.summary


@pytest.mark.parametrize("name,sender", [
    ("PayPal", "service@paypal.com"),
    ("Chase Miller", "chase.miller@gmail.com"),      # a first name, not the bank
    ("Microsoft Teams", "noreply@email.teams.microsoft.com"),
    ("Zoom", "no-reply@zoom.us"),
])
def test_display_name_brand_not_flagged_for_real_or_ordinary_names(
    scanner: mailguard.Scanner, name: str, sender: str
) -> None:
    assert "LOOKALIKE_DISPLAY_NAME_BRAND" not in scan(scanner, sender=sender, name=name)


def test_word_brand_counts_with_generic_words(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="alerts@secure-notices.info", name="Chase Online Banking")
    assert found["LOOKALIKE_DISPLAY_NAME_BRAND"].details["brand"] == "Chase"


@pytest.mark.parametrize("name,sender,brand", [
    ("Ledger Live", "reports@mailer-tools.example", "Ledger"),       # wallets and exchanges
    ("Support, Ledger.", "x@school.example", "Ledger"),
    ("OpenSea", "postmaster@mg.shop-tools.example", "OpenSea"),
    ("Stellar Foundation", "herb@club.example", "Stellar"),
    ("Eco Savings by Elon Musk", "news@promo.example", "Tesla"),
    ("Trust WaIIet", "service@isp.example", "Trust Wallet"),          # capital I drawn for l
    ("Ledger Iive", "a@uni.example", "Ledger"),
    ("C o i n b a s e", "noreply@dogchew.example", "Coinbase"),      # letters spaced out
    ("MetaMaskTeam", "metateam@gps.example", "MetaMask"),            # glued to a generic word
    ("BinanceMail", "mail2@cloud.example", "Binance"),
])
def test_disguised_and_wallet_brands_in_display_name(
    scanner: mailguard.Scanner, name: str, sender: str, brand: str
) -> None:
    assert scan(scanner, sender=sender, name=name)["LOOKALIKE_DISPLAY_NAME_BRAND"].details["brand"] == brand


@pytest.mark.parametrize("name,sender", [
    ("General Ledger Team", "books@accounting.example"),  # the ordinary word, not the wallet
    ("Ledger", "support@ledger.com"),
    ("Ivan Iliev", "ivan@mail.example"),                   # capital I of a person's name
    ("J R R Tolkien", "jrr@books.example"),                # initials are no spelled-out brand
    ("Stellar Plumbing", "office@stellarplumbing.example"),
])
def test_undisguised_reading_does_not_invent_brands(scanner: mailguard.Scanner, name: str, sender: str) -> None:
    assert "LOOKALIKE_DISPLAY_NAME_BRAND" not in scan(scanner, sender=sender, name=name)


def test_protected_person_from_free_mail(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="drjaneroe1@gmail.com", name="Dr. Jane Roe")
    finding = found["LOOKALIKE_DISPLAY_NAME_PERSON_FREEMAIL"]
    assert "uses the name \"Dr. Jane Roe\" but writes from a free email account at gmail.com" in finding.summary
    assert not scan(scanner, sender=f"jroe@{PRACTICE}", name="Jane Roe, PsyD")


def test_address_written_into_display_name(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="x@mailer-42.biz", name="billing@availity.com")
    finding = found["LOOKALIKE_DISPLAY_NAME_ADDRESS"]
    assert "shows the address billing@availity.com but the mail really comes from mailer-42.biz" in finding.summary


# ---------------------------------------------------------------- Reply-To diversion

def test_reply_to_free_mail_from_protected_domain(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender=f"office@{PRACTICE}", reply_to="mindwell.office@gmail.com")
    finding = found["LOOKALIKE_REPLY_TO_FREEMAIL"]
    assert finding.summary == (
        f"The message claims to come from {PRACTICE}, but replies would go to a free email account at gmail.com"
    )


def test_reply_to_same_brand_is_fine_and_free_mail_senders_are_individuals(scanner: mailguard.Scanner) -> None:
    assert not scan(scanner, sender="a@microsoft.com", reply_to="b@email.microsoft.com")
    assert not scan(scanner, sender="a@office365.com", reply_to="b@microsoft.com")
    # A Gmail user writing to a mailing list: Reply-To elsewhere is normal.
    assert not scan(scanner, sender="someone@gmail.com", reply_to="list@lists.example.org")


# ---------------------------------------------------------------- links

def test_link_text_shows_protected_domain_but_goes_elsewhere(scanner: mailguard.Scanner) -> None:
    html = '<p>Sign in at <a href="https://login.example-verify.net/x">www.chase.com</a></p>'
    found = scan(scanner, sender="news@example.org", html=html)
    finding = found["LOOKALIKE_LINK_TEXT_PROTECTED"]
    assert finding.summary == "A link shows chase.com but really goes to login.example-verify.net"


def test_link_to_lookalike_tags(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(message(sender="news@example.org", text="Pay here: https://paypa1.com/pay now"))
    finding = lookalike(verdict)["LOOKALIKE_LINK_DOMAIN"]
    assert finding.summary.startswith("A link goes to paypa1.com, which imitates paypal.com (PayPal): the letter l")
    # The link alone no longer tags (its score is fitted); with the claim and the request
    # that go with it, the whole scanner flags the message.
    phish = mailguard.Scanner(Config.from_dict({})).scan(message(
        sender="service@example.org", name="PayPal",
        text="Your account is on hold. Sign in to restore access: https://paypa1.com/signin"))
    assert phish.action >= Action.TAG
    assert "paypa1.com" in phish.summary


def test_raw_ip_and_punycode_links(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="news@example.org", text="See http://203.0.113.7/login and http://xn--mnchen-3ya.de/")
    assert "203.0.113.7" in found["LOOKALIKE_LINK_IP"].summary
    assert "münchen.de" in found["LOOKALIKE_LINK_PUNYCODE"].summary
    assert "xn--mnchen-3ya.de" in found["LOOKALIKE_LINK_PUNYCODE"].summary
    # A punycode host that imitates a brand is called what it is.
    found = scan(scanner, sender="news@example.org", text="See http://xn--80ak6aa92e.com/")
    assert found["LOOKALIKE_LINK_DOMAIN"].summary.startswith(
        "A link goes to аррӏе.com (xn--80ak6aa92e.com), which imitates apple.com (Apple)"
    )


def test_same_brand_link_text_is_fine(scanner: mailguard.Scanner) -> None:
    html = '<a href="https://click.email.microsoft.com/t/1">www.microsoft.com</a>'
    assert not scan(scanner, sender="news@microsoft.com", html=html)


# ---------------------------------------------------------------- configuration

def test_relay_domains_are_protected_too() -> None:
    """The relay's own domains are the practice's: imitations of them are caught and
    mail from them is never called a lookalike."""
    others = {name: {"enabled": False} for name in analyzer_classes() if name != "lookalike"}
    config = Config.from_dict({**others, "relay": {"relay_domains": ["northbridge-counseling.com"]}})
    scanner = mailguard.Scanner(config)
    found = lookalike(scanner.scan(message(sender="billing@northbrldge-counseling.com")))
    assert found["LOOKALIKE_SENDER_DOMAIN"].details["imitates"] == "northbridge-counseling.com"
    assert not lookalike(scanner.scan(message(sender="billing@northbridge-counseling.com")))


def test_bad_brand_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "brands.toml"
    bad.write_text('[[brand]]\nname = "Acme"\ndomains = ["http://acme.com/x"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"brand #1 \(Acme\).*not a domain name"):
        mailguard.Scanner(make_config(brands_file=str(bad)))
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="brands_file"):
        mailguard.Scanner(make_config(brands_file=str(missing)))


def test_bad_protected_domain_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="protected_domains.*not a domain name"):
        mailguard.Scanner(make_config(protected_domains=["https://practice.example.com/"]))


def test_thread_safe_under_concurrency(scanner: mailguard.Scanner) -> None:
    raws = [message(sender=f"a@{h}") for h in SENDER_CASES] * 4
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(scanner.scan, raws))
    assert all("LOOKALIKE_SENDER_DOMAIN" in lookalike(v) for v in verdicts)


def test_display_names_with_lookalike_letters(scanner: mailguard.Scanner) -> None:
    found = scan(scanner, sender="x@notices-center.net", name="PayPaI Service")  # capital I for l
    assert found["LOOKALIKE_DISPLAY_NAME_BRAND"].details["brand"] == "PayPal"
    found = scan(scanner, sender="jroe.office@outlook.com", name="Dr. Jаne R0e")  # Cyrillic а, zero
    assert "LOOKALIKE_DISPLAY_NAME_PERSON_FREEMAIL" in found


@pytest.mark.parametrize("host", ["3232235777", "0xc0a80001", "0300.0250.0.1"])
def test_obfuscated_ip_links(scanner: mailguard.Scanner, host: str) -> None:
    found = scan(scanner, sender="a@example.org", text=f"Log in at http://{host}/portal today")
    assert host in found["LOOKALIKE_LINK_IP"].summary


def test_odd_hosts_never_break_the_scan(scanner: mailguard.Scanner) -> None:
    raw = (
        b"From: \"a@b@c\" <x@.>\r\nReply-To: <>\r\nContent-Type: text/html\r\n\r\n"
        b"<a href=\"http://a..b/\">www..com</a><a href='http://xn--/'>http://xn--zz.com</a>"
        b"<a href='http://[::1]/'>x</a> http://" + b"b" * 300 + b".com"
    )
    verdict = scanner.scan(raw)
    assert not verdict.errors
    assert all(f.summary and "  " not in f.summary for f in verdict.findings)


def test_operator_brand_table_and_allow_list(tmp_path: Path) -> None:
    brands = tmp_path / "brands.toml"
    brands.write_text(
        '[combosquat]\nwords = ["login"]\n\n'
        '[[brand]]\nname = "Northwind Labs"\ndomains = ["northwindlabs.com"]\nnames = ["Northwind"]\n',
        encoding="utf-8",
    )
    scanner = mailguard.Scanner(make_config(brands_file=str(brands), allow_domains=["northwlndlabs.com"]))
    found = lookalike(scanner.scan(message(sender="results@northwindlabs-login.com")))
    assert found["LOOKALIKE_SENDER_DOMAIN"].summary.startswith(
        "Sender domain northwindlabs-login.com imitates northwindlabs.com (Northwind Labs)"
    )
    # The built-in table is replaced, and an allowed partner is never called a lookalike.
    assert not lookalike(scanner.scan(message(sender="a@paypa1.com")))
    assert not lookalike(scanner.scan(message(sender="a@northwlndlabs.com")))


def test_bad_confusables_and_freemail_files(tmp_path: Path) -> None:
    table = tmp_path / "confusables.toml"
    table.write_text('[characters]\n"ab" = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"confusables.toml: \[characters\] 'ab'.*one character"):
        mailguard.Scanner(make_config(confusables_file=str(table)))
    free = tmp_path / "free.toml"
    free.write_text('domains = "gmail.com"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="free.toml: domains: expected a list"):
        mailguard.Scanner(make_config(freemail_file=str(free)))


def test_envelope_only_lookalike_tags(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(message(sender="news@example.org"), Envelope(mail_from="bounce@availity-support.com"))
    assert "LOOKALIKE_ENVELOPE_DOMAIN" in lookalike(verdict)
    assert verdict.action == Action.TAG


def test_hostile_sizes_stay_fast(scanner: mailguard.Scanner) -> None:
    name = "PayPal " + "x" * 60000
    links = "".join(f'<a href="http://h{i}.example-{i}.com/">www.site{i}.com</a>' for i in range(3000))
    raw = message(sender="a@example.org", name=name, html=links)
    verdict = scanner.scan(raw)
    assert not verdict.errors
    assert verdict.elapsed_ms < 5000


def test_domain_character_classes_written_as_complements_match_the_same_characters() -> None:
    """brands.py and links.py write [a-z0-9\\u00a1-\\uffff] and friends as the characters
    they leave out (far cheaper to compile at every start): the same characters match."""
    import re

    from mailguard.analyzers.lookalike import brands, links

    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    pairs = [(brands._LABEL_CHAR, r"[a-z0-9\u00a1-\uffff]", 0),
             (brands._LABEL_CHAR_OR_HYPHEN, r"[a-z0-9\u00a1-\uffff-]", 0),
             (brands._TLD_FIRST, r"[a-z\u00a1-\uffff]", 0),
             (links._TLD_FIRST_ANY_CASE, r"[a-z\u00a1-\uffff]", re.I)]
    for written, meant, flags in pairs:
        assert re.sub(written, "", every, flags=flags) == re.sub(meant, "", every, flags=flags), written
