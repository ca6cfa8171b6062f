"""A phisher who has read mailguard's source takes a lure it holds and disguises one thing at
a time: the words (look-alike letters, invisible characters, letters split by tags, decoy
text hidden with CSS, combining marks, a right-to-left override), the link (a name before
"@", escape codes in the host, a redirect whose target is in base64, a javascript: link, a
form, a <base href>, a QR-code picture) or the sender's name. Each disguise must leave the
verdict and the reasons a person reads where they were; ordinary mail that looks a little
like that (white text on a coloured button, a real Microsoft notice) must stay as it was."""
from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr

import pytest

import mailguard
from mailguard import Action
from mailguard.analyzers.language.text import _unoverride
from mailguard.htmltext import html_to_text
from mailguard.message import parse

LURE = ("Your Microsoft 365 password expires today. To keep your mailbox, verify your account "
        "within 24 hours or your account will be suspended.")
EVIL = "https://ms365-login.account-check.top/auth"
BENIGN = " ".join(["Thanks for the lovely lunch meeting yesterday, the quarterly garden newsletter recipes "
                   "and the team picnic photos are attached for everyone."] * 25)


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner()


def mail(html: str, sender: str = "it-support@account-check.top", name: str = "IT Service Desk",
         subject: str = "Mailbox notice") -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr((name, sender)) if name else sender
    msg["To"] = "staff@clinic.test"
    msg["Subject"] = subject
    msg["Message-ID"] = "<evasion-1@account-check.top>"
    msg.set_content("Please view this message in HTML.")
    msg.add_alternative(f"<html><body bgcolor='#ffffff'>{html}</body></html>", subtype="html")
    return msg.as_bytes()


def lure(words: str = LURE, href: str = EVIL, extra: str = "", button: str = "Sign in here") -> str:
    return f'<p>{words}</p><p><a href="{href}">{button}</a></p>{extra}'


def rules(verdict: mailguard.Verdict) -> dict[str, mailguard.Finding]:
    return {f.rule: f for f in verdict.findings}


def language(verdict: mailguard.Verdict) -> set[str]:
    return {f.rule for f in verdict.findings if f.analyzer == "language"}


@pytest.fixture(scope="module")
def plain(scanner: mailguard.Scanner) -> mailguard.Verdict:
    verdict = scanner.scan(mail(lure()))
    assert verdict.action >= Action.QUARANTINE  # the lure as sent today: held
    assert {"LANGUAGE_CREDENTIAL_REQUEST", "LANGUAGE_ACCOUNT_THREAT", "LANGUAGE_URGENCY"} <= language(verdict)
    return verdict


# ---------------------------------------------------------------- the words

def _split(words: str, splitter: str) -> str:
    for word in ("password", "account", "verify", "suspended", "expires", "hours"):
        words = words.replace(word, word[:3] + splitter + word[3:])
    return words


@pytest.mark.parametrize("words", [
    _split(LURE, "<span style=\"color:#ffffff;background:#fff\">zq</span>"),  # white on white inside words
    "".join(c + "\u0323" if c.isalpha() else c for c in LURE),  # a combining dot under every letter
    "".join(c + "\u0301" if c.isalpha() else c for c in LURE),  # an acute on letters that have no such letter
    "\u202e" + LURE[::-1] + "\u202c",  # written backwards behind a right-to-left override: reads forwards
    _split(LURE, "\u00ad"), _split(LURE, "&#8203;"), _split(LURE, "<span></span>"),
    LURE.translate(str.maketrans({"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441"})),
], ids=["white-letters", "dot-below", "acute", "rtl-override", "soft-hyphen", "zero-width", "empty-span", "cyrillic"])
def test_disguised_lure_words_read_as_a_person_reads_them(scanner: mailguard.Scanner, plain: mailguard.Verdict,
                                                          words: str) -> None:
    verdict = scanner.scan(mail(lure(words)))
    assert language(verdict) == language(plain)
    assert verdict.action >= Action.QUARANTINE
    assert verdict.score >= plain.score - 0.01


@pytest.mark.parametrize("style", [
    "font-size:1px", "color:#ffffff;background:#ffffff", "position:absolute;left:-9999px", "text-indent:-5000px",
    "height:0;overflow:hidden", "overflow:hidden;width:0px", "transform:scale(0)", "clip:rect(0 0 0 0);position:absolute",
    "color:#fefefe;background-color:#ffffff",
])
def test_decoy_text_hidden_with_css_does_not_dilute_the_lure(scanner: mailguard.Scanner, plain: mailguard.Verdict,
                                                             style: str) -> None:
    """Hundreds of harmless words the reader cannot see would make the lure look like a long,
    chatty letter (and no longer "a short message whose one purpose is that request")."""
    verdict = scanner.scan(mail(lure(extra=f'<div style="{style}">{BENIGN}</div>')))
    assert "COHERENCE_FOCUSED_REQUEST_ELSEWHERE" in rules(verdict)
    assert language(verdict) == language(plain)
    assert verdict.action >= Action.QUARANTINE
    assert "lunch" not in parse(mail(lure(extra=f'<div style="{style}">{BENIGN}</div>'))).body_text


def test_text_in_the_colour_of_its_background_is_hidden_readable_text_is_not() -> None:
    rendered = html_to_text(
        '<body bgcolor="#ffffff"><p>seen</p><font color="#FFFFFF">decoy words</font>'
        '<table><tr><td bgcolor="#1a73e8"><font color="#ffffff">Button on blue</font></td></tr></table>'
        '<div style="background:url(hero.png)"><span style="color:white">On a picture</span></div>'
        '<table style="background-color:#000;color:#000"><tr><td style="color:#fff">Own colour inside</td></tr></table>'
        '<p style="color:#333;background-color:#333">same as its background</p></body>')
    assert rendered.visible.split("\n\n") == ["seen", "Button on blue", "On a picture", "Own colour inside"]
    assert rendered.hidden == "decoy words same as its background"


def test_light_text_without_a_known_background_is_left_visible() -> None:
    """Dark-mode letters set their background in a style sheet or leave it to the mail
    program: white text with no background of its own is not taken for hidden."""
    for html in ('<style>body { background: #202124 }</style><p style="color:#ffffff">Dark mode letter</p>',
                 '<p style="color:#ffffff">Dark mode letter</p>'):
        rendered = html_to_text(html)
        assert rendered.visible == "Dark mode letter" and rendered.hidden == ""


def test_right_to_left_override_is_read_in_screen_order() -> None:
    assert _unoverride("a \u202edrowssap\u202c b \u202eemit\nnext") == "a password b time\nnext"


def test_zero_width_space_inside_a_brand_display_name(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(mail(lure(), sender="it@qwerty-host.example", name="Micro\u200bsoft Account Team"))
    found = rules(verdict)
    assert "LOOKALIKE_DISPLAY_NAME_BRAND" in found and "Microsoft" in found["LOOKALIKE_DISPLAY_NAME_BRAND"].summary
    assert verdict.summary.startswith("Claims to be Microsoft")


# ---------------------------------------------------------------- the link

def test_domain_before_an_at_sign_is_called_out(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(mail(lure(href="https://login.microsoftonline.com@login.qwerty-host.example/auth")))
    finding = rules(verdict)["LOOKALIKE_LINK_USERINFO"]
    assert finding.summary.startswith("A link's address begins with login.microsoftonline.com but really goes to "
                                      "login.qwerty-host.example")
    assert "ignores everything before the @" in finding.summary
    assert "COHERENCE_REQUEST_SUSPECT_LINK" in rules(verdict)


def test_user_name_of_the_same_site_is_no_trick(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(mail("<p>Download the build</p><p><a href='https://ci.example.org@example.org/b'>here</a></p>",
                                sender="builds@example.org", name="Build bot"))
    assert "LOOKALIKE_LINK_USERINFO" not in rules(verdict)


def test_escape_codes_in_the_host_are_decoded_and_named(scanner: mailguard.Scanner) -> None:
    escaped = "".join(f"%{ord(c):02x}" for c in "microsoft")
    verdict = scanner.scan(mail(lure(href=f"https://{escaped}.com.qwerty-host.com/auth")))
    found = rules(verdict)
    assert "microsoft.com.qwerty-host.com" in found["LOOKALIKE_LINK_ENCODED_HOST"].summary
    assert "LOOKALIKE_LINK_DOMAIN" in found  # the decoded name imitates microsoft.com
    assert verdict.action >= Action.QUARANTINE


def test_backslash_before_at_does_not_make_the_link_microsofts(scanner: mailguard.Scanner) -> None:
    """A browser reads "\\" as "/": https://x.example\\@microsoft.com/ opens x.example."""
    verdict = scanner.scan(mail(lure(href="https://login.qwerty-host.example\\@login.microsoftonline.com/"),
                                sender="security@ms-alerts.example", name="Microsoft Account Team"))
    finding = rules(verdict)["COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE"]
    assert "login.qwerty-host.example" in finding.summary


def test_redirect_through_bing_with_a_base64_target_is_not_microsofts(scanner: mailguard.Scanner) -> None:
    """bing.com is Microsoft's, so "Microsoft" linking there looked like its own site; the
    target written in base64 after "a1" is where the click lands."""
    href = "https://www.bing.com/ck/a?!&&p=4f2a&u=a1aHR0cHM6Ly9sb2dpbi5xd2VydHktaG9zdC5leGFtcGxlL2F1dGg&ntb=1"
    verdict = scanner.scan(mail(lure(href=href), sender="security@ms-alerts.example", name="Microsoft Account Team"))
    finding = rules(verdict)["COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE"]
    assert finding.summary.endswith("not Microsoft's (login.qwerty-host.example)")


@pytest.mark.parametrize("href", ["javascript:location='https://login.qwerty-host.example/'",
                                  "java&#x09;script:void(0)", "data:text/html;base64,PGgxPkhpPC9oMT4="])
def test_script_link_is_a_destination_nobody_owns(scanner: mailguard.Scanner, href: str) -> None:
    verdict = scanner.scan(mail(lure(href=href), sender="security@ms-alerts.example", name="Microsoft Account Team"))
    found = rules(verdict)
    assert "LINKS_SCRIPT_URL" in found
    assert "a page built into the message" in found["COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE"].summary
    assert verdict.action >= Action.QUARANTINE


def test_form_action_is_where_the_password_goes(scanner: mailguard.Scanner) -> None:
    html = (f"<p>{LURE}</p><form action='https://login.qwerty-host.example/post' method='post'>"
            "<input name='email'><input type='password' name='pw'><button>Sign in</button></form>")
    verdict = scanner.scan(mail(html, sender="security@ms-alerts.example", name="Microsoft Account Team"))
    assert "login.qwerty-host.example" in rules(verdict)["COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE"].summary


def test_base_href_makes_relative_links_absolute(scanner: mailguard.Scanner) -> None:
    raw = mail(f"<base href='https://login.qwerty-host.example/'><p>{LURE}</p><p><a href='auth'>Sign in</a></p>",
               sender="security@ms-alerts.example", name="Microsoft Account Team")
    assert [l.url for l in parse(raw).links] == ["https://login.qwerty-host.example/auth"]
    verdict = scanner.scan(raw)
    assert "login.qwerty-host.example" in rules(verdict)["COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE"].summary
    assert verdict.action >= Action.QUARANTINE


def test_qr_code_picture_as_the_only_call_to_action(scanner: mailguard.Scanner) -> None:
    html = f"<p>{LURE}</p><p>Scan the code below with your phone to sign in.</p><p><img src='cid:qr' width=200></p>"
    verdict = scanner.scan(mail(html, sender="security@ms-alerts.example", name="Microsoft Account Team"))
    finding = rules(verdict)["COHERENCE_REQUEST_PICTURE_ONLY"]
    assert "the only thing to act on is a picture" in finding.summary and "QR code" in finding.summary
    assert verdict.action >= Action.TAG


# ---------------------------------------------------------------- what must stay quiet

def test_real_microsoft_notice_with_microsoft_links_is_not_flagged(scanner: mailguard.Scanner) -> None:
    html = ("<div style='background-color:#0078d4'><span style='color:#ffffff'>Microsoft account</span></div>"
            "<p>Your password was changed. If this was you, you can ignore this message.</p>"
            "<p><a href='https://account.live.com/activity'>Review recent activity</a></p>"
            "<img src='https://img-prod-cms-rt-microsoft-com.akamaized.net/logo.png'>")
    verdict = scanner.scan(mail(html, sender="account-security-noreply@accountprotection.microsoft.com",
                                name="Microsoft account team", subject="Your password changed"))
    assert verdict.action == Action.ACCEPT
    assert not {"LOOKALIKE_LINK_USERINFO", "LOOKALIKE_LINK_ENCODED_HOST", "COHERENCE_REQUEST_PICTURE_ONLY"} & set(rules(verdict))


def test_invoice_with_pay_now_and_logo_but_no_link_is_not_a_picture_lure(scanner: mailguard.Scanner) -> None:
    html = ("<p>Hello, attached is your invoice 2231 for March. Payment is due within 30 days.</p>"
            "<p>Thank you, Northside Labs billing</p>")
    verdict = scanner.scan(mail(html, sender="billing@northsidelabs.example", name="Northside Labs Billing",
                                subject="Invoice 2231"))
    assert "COHERENCE_REQUEST_PICTURE_ONLY" not in rules(verdict)
    assert verdict.action == Action.ACCEPT
