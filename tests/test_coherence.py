"""The coherence stage: the claim, the request and the destination, judged together."""
from __future__ import annotations

import dataclasses
from email.message import EmailMessage
from email.utils import formataddr

import pytest

import mailguard
from mailguard import Action, Config
from mailguard.model import AuthResults


def mail(sender: str, name: str = "", text: str = "", html: str = "", subject: str = "Notice",
         reply_to: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr((name, sender)) if name else sender
    msg["To"] = "frontdesk@practice.test"
    msg["Subject"] = subject
    msg["Message-ID"] = "<c-1@test>"
    if reply_to:
        msg["Reply-To"] = reply_to
    msg.set_content(text or "See below.")
    if html:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner()


def coherence(verdict: mailguard.Verdict) -> dict[str, mailguard.Finding]:
    return {f.rule: f for f in verdict.findings if f.analyzer == "coherence"}


SIGN_IN = "Unusual sign-in activity was detected. Your account will be suspended. Verify your account now."


def test_brand_claim_sign_in_link_elsewhere(scanner: mailguard.Scanner) -> None:
    html = f'<p>{SIGN_IN}</p><p><a href="https://ms-login.account-check.net/x">Sign in</a></p>'
    verdict = scanner.scan(mail("alerts@account-check.net", "Microsoft Account Team", html=html))
    finding = coherence(verdict)["COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE"]
    assert finding.summary == (
        "Claims to be Microsoft, asks you to sign in or confirm your details, and the sign-in link goes to a "
        "site that is not Microsoft's (ms-login.account-check.net)"
    )
    assert finding.details["claim"] == "Microsoft" and finding.details["requests"][0] == "credential"
    assert verdict.summary == finding.summary
    assert verdict.action >= Action.TAG
    # the brand named only in the subject is the weaker claim, with the rule of its own
    named = scanner.scan(mail("alerts@account-check.net", "Account Team", html=html, subject="Your Microsoft account"))
    assert "COHERENCE_CLAIM_REQUEST_ELSEWHERE" in coherence(named)
    assert "COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE" not in coherence(named)


def test_company_outside_the_brand_table_is_a_claim(scanner: mailguard.Scanner) -> None:
    html = f'<p>{SIGN_IN}</p><p><a href="https://portal.random-host.example/x">Verify now</a></p>'
    verdict = scanner.scan(mail("no-reply@random-host.example", "Twilio/SendGrid", html=html))
    finding = coherence(verdict)["COHERENCE_CLAIM_REQUEST_ELSEWHERE"]
    assert finding.summary.startswith("Claims to be Twilio/SendGrid, asks you to sign in")
    assert "portal.random-host.example" in finding.summary


def test_acronym_display_name_on_an_unrelated_domain_is_a_claim(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(mail("info@cheap-deals.example", "ANA", text="Your booking is confirmed."))
    assert verdict.summary.startswith("Claims to be ANA but writes from cheap-deals.example")


def test_company_named_with_the_request_on_a_third_site(scanner: mailguard.Scanner) -> None:
    html = (f'<p>{SIGN_IN}</p><p><a href="https://wallet-check.example/verify">Verify now</a></p>'
            '<p><a href="https://support.zephyrex.example/">Help</a></p>')
    verdict = scanner.scan(mail("daniela@shop-supplies.example", "Zephyrex", html=html,
                                subject="[Zephyrex] Review the latest terms"))
    finding = coherence(verdict)["COHERENCE_NAME_REQUEST_ELSEWHERE"]
    assert finding.summary == (
        "Claims to be Zephyrex but writes from shop-supplies.example, asks you to sign in or confirm your details, "
        "and the sign-in link goes to a site that is neither Zephyrex's nor the sender's (wallet-check.example)"
    )
    assert verdict.summary == finding.summary


@pytest.mark.parametrize("name", ["Uni-Airdrop", "Tether Cashback", "TotalEnergies-Invest"])
def test_a_crypto_or_investment_lure_name_is_a_company_claim(scanner: mailguard.Scanner, name: str) -> None:
    """Airdrop, token, cashback, invest ...: words of an organisation's name, not a person's."""
    html = ('<p>Claim your tokens before the airdrop ends: connect your wallet to claim.</p>'
            '<p><a href="https://claim-uni.example/x">Claim now</a></p>')
    verdict = scanner.scan(mail("rdrop@kr14rs.onmicrosoft.example", name, html=html, subject="Claim 26000 UNI"))
    finding = coherence(verdict)["COHERENCE_NAME_REQUEST_ELSEWHERE"]
    assert finding.summary.startswith(f"Claims to be {name} but writes from onmicrosoft.example")
    assert finding.summary.endswith(f"neither {name}'s nor the sender's (claim-uni.example)")


def test_a_title_display_name_on_free_mail_asking_to_pay(scanner: mailguard.Scanner) -> None:
    text = "Your invoice is overdue. Please pay the outstanding balance today to avoid suspension of your card."
    verdict = scanner.scan(mail("fatura7731@gmail.com", "Cartao Facil - Fatura 2291", text=text))
    finding = coherence(verdict)["COHERENCE_NAME_REQUEST_FREEMAIL"]
    assert finding.summary.startswith("Claims to be Cartao Facil - Fatura 2291 but writes from a free-mail account "
                                      "(fatura7731@gmail.com), asks you to pay")


def test_a_brand_claimed_by_free_mail_asking_to_pay(scanner: mailguard.Scanner) -> None:
    """The brand named in the subject, a free-mail sender, a payment asked and no site of
    the brand's: "Paid Customer <x@gmail.com>" about your PayPal order."""
    text = "Your order has been processed. Please pay the outstanding invoice amount today to avoid a late fee."
    verdict = scanner.scan(mail("orders7731@gmail.com", "Paid Customer", text=text,
                                subject="Your PayPal order 611901 is processed"))
    finding = coherence(verdict)["COHERENCE_BRAND_REQUEST_FREEMAIL"]
    assert finding.summary == (
        "Claims to be PayPal but writes from a free-mail account (orders7731@gmail.com), asks you to pay or change "
        "payment details, and gives no site of PayPal's: PayPal does not write from free mail")
    # the same words from the brand's own domain, or asking nothing, are no such case
    own = scanner.scan(mail("service@paypal.com", "PayPal", text=text, subject="Your PayPal order 611901"))
    assert "COHERENCE_BRAND_REQUEST_FREEMAIL" not in coherence(own)
    chat = scanner.scan(mail("jo.roe@gmail.com", "Jo Roe", text="Lunch on Friday?", subject="My PayPal order"))
    assert "COHERENCE_BRAND_REQUEST_FREEMAIL" not in coherence(chat)


def test_a_person_with_an_affiliation_is_no_title_claim(scanner: mailguard.Scanner) -> None:
    """A person's name with a bracketed tag or an unrelated address stays the sender's own claim."""
    html = f'<p>{SIGN_IN}</p><p><a href="https://wallet-check.example/verify">Verify now</a></p>'
    for name in ("Peng Fan (OSS)", "Claudiu", "Duje Mihanovic via B4 Relay", "Craig R.Hughes"):
        verdict = scanner.scan(mail("someone@shop-supplies.example", name, html=html, subject="Re: patch v2"))
        found = coherence(verdict)
        assert "COHERENCE_NAME_REQUEST_ELSEWHERE" not in found and "COHERENCE_CLAIM_REQUEST_ELSEWHERE" not in found
        assert verdict.summary.startswith("Comes from shop-supplies.example"), name


def test_a_title_display_name_linking_to_its_sender_is_no_claim(scanner: mailguard.Scanner) -> None:
    html = f'<p>{SIGN_IN}</p><p><a href="https://vault.oakridge.example/login">Sign in</a></p>'
    verdict = scanner.scan(mail("vault@vault.oakridge.example", "Vaultwarden", html=html,
                                subject="Vaultwarden: new sign-in"))
    found = coherence(verdict)
    assert "COHERENCE_REQUEST_OWNED" in found and not {"COHERENCE_NAME_REQUEST_ELSEWHERE",
                                                       "COHERENCE_CLAIM_REQUEST_ELSEWHERE"} & set(found)


def test_company_name_matching_its_domain_is_no_foreign_claim(scanner: mailguard.Scanner) -> None:
    html = f'<p>{SIGN_IN}</p><p><a href="https://portal.oakridge-counseling.com/login">Sign in</a></p>'
    verdict = scanner.scan(mail("billing@oakridge-counseling.com", "Oakridge Counseling Billing", html=html))
    found = coherence(verdict)
    assert "COHERENCE_REQUEST_OWNED" in found
    assert found["COHERENCE_REQUEST_OWNED"].summary.startswith("Comes from oakridge-counseling.com")


def test_every_destination_owned_lowers_the_score(scanner: mailguard.Scanner) -> None:
    own = f'<p>{SIGN_IN}</p><p><a href="https://app.clinic-portal.com/login">Sign in</a></p>'
    away = f'<p>{SIGN_IN}</p><p><a href="https://clinic-portal.login-check.net/login">Sign in</a></p>'
    owned = scanner.scan(mail("alerts@clinic-portal.com", html=own))
    elsewhere = scanner.scan(mail("alerts@clinic-portal.com", html=away))
    assert coherence(owned)["COHERENCE_REQUEST_OWNED"].score < 0
    assert "COHERENCE_REQUEST_ELSEWHERE" in coherence(elsewhere)
    assert owned.score < elsewhere.score


def test_proven_sender_is_said_and_weighs_for_the_message() -> None:
    scanner = mailguard.Scanner()
    html = f'<p>{SIGN_IN}</p><p><a href="https://app.clinic-portal.com/login">Sign in</a></p>'
    parsed = scanner.parse(mail("alerts@clinic-portal.com", html=html))
    proven = dataclasses.replace(parsed, auth=AuthResults(
        source="computed", from_domain="clinic-portal.com", dmarc="pass", proven_domain="clinic-portal.com"))
    verdict = scanner.scan_parsed(proven)
    finding = coherence(verdict)["COHERENCE_REQUEST_PROVEN"]
    assert "proven" in finding.summary


def test_click_tracking_redirect_counts_as_its_target(scanner: mailguard.Scanner) -> None:
    target = "https%3A%2F%2Fmicrosoft-verify.bad-site.example%2Flogin"
    html = (f'<p>{SIGN_IN}</p><p><a href="https://click.tracker.example/r?id=1&url={target}">Sign in</a></p>')
    verdict = scanner.scan(mail("alerts@tracker.example", "Microsoft", html=html))
    finding = coherence(verdict)["COHERENCE_BRAND_NAME_REQUEST_ELSEWHERE"]
    assert "microsoft-verify.bad-site.example" in finding.summary
    assert "click.tracker.example" not in finding.summary


@pytest.mark.parametrize("url, target", [
    ("https://t.example/r?u=https%3A%2F%2FEvil.Example.%2Flogin", "evil.example"),
    ("https://t.example/r?u=https://evil.example?x=1", "evil.example"),
    ("https://t.example/r?u=http%3a%2f%2fevil.example&m=1", "evil.example"),
    ("https://t.example/r?u=https%3A%2F%2Fuser%40evil.example%2F", "evil.example"),  # a user before the host
    ("https://t.example/r?u=https%3A%2F%2Fevil.example%3A8443%2F", "evil.example"),  # a port after it
    ("https://t.example/r?u=https%3A%2F%2Fevil%2Eexample%2F", "evil.example"),  # an escape inside it
    ("https://t.example/r?id=7&u=https%253A%252F%252Fevil.example%252F", "evil.example"),  # a later field, escaped twice
    ("https://t.example/r#?u=https://evil.example", ""),  # in the fragment: no query
    ("https://t.example/r?u=%2Flocal%2Fpage", ""),
])
def test_a_redirect_target_is_read_however_it_is_written(scanner: mailguard.Scanner, url: str, target: str) -> None:
    assert scanner.coherence is not None
    assert scanner.coherence._target_host(url) == target


def test_the_quick_reading_of_a_redirect_target_agrees_with_the_general_one(scanner: mailguard.Scanner) -> None:
    """Every combination of the ways a first field's target is written: the one-expression
    reading (``_FIRST_FIELD_TARGET``) must find what decoding the query field by field finds."""
    assert scanner.coherence is not None
    review = scanner.coherence
    forms = 0
    for scheme in ("https", "HTTP", "http"):
        for colon in (":", "%3A", "%3a", "%253A"):
            for slashes in ("//", "%2F%2F", "/%2f", "%252F%252F"):
                for host in ("evil.example", "Evil.Example.", "a", "x-y.example", "ev%2Eil.example", "u%40evil.example", "."):
                    for after in ("", "/p", "%2Fp", "%3Fq%3D1", "?q=1", "%23f", "#f", "&m=1", "%3A80%2F", "+x", "%252F",
                                  "\t/p", "%2Bx", ":80/"):
                        for name in ("u", "", "url"):
                            url = f"https://t.example/r?{name}={scheme}{colon}{slashes}{host}{after}"
                            assert review._target_host(url) == review._target_host_read(url), url
                            forms += 1
    assert forms > 10_000


def test_reply_to_elsewhere_is_the_destination_of_a_reply_request(scanner: mailguard.Scanner) -> None:
    text = "Please reply with your full name, date of birth and bank account number to confirm the refund."
    verdict = scanner.scan(mail("refunds@irs-refund.example", "IRS Refunds", text=text,
                                reply_to="claims.agent@freemail.example"))
    assert "claims.agent@freemail.example" in verdict.summary


def test_call_request_names_the_number(scanner: mailguard.Scanner) -> None:
    text = ("Your PayPal account was charged $499.99 for a Norton subscription. If you did not authorise "
            "this, call our billing department at +1 (808) 555-0147 to cancel.")
    verdict = scanner.scan(mail("billing@norton-renewals.example", "PayPal", text=text))
    assert "call" in verdict.summary and "555-0147" in verdict.summary


def test_a_payment_request_beside_a_number_to_call_is_a_call_request(scanner: mailguard.Scanner) -> None:
    """A renewal invoice that names no site but a number: the number is where it leads."""
    text = ("Your Norton 360 subscription was renewed. Your invoice is overdue: please pay the outstanding balance "
            "of $399.99 today. To cancel, call our billing department at +1 (805) 555-0199.")
    verdict = scanner.scan(mail("receipt@golfclub.example", "E-Receipt Notice", text=text,
                                subject="Your Norton Order Confirmation"))
    finding = coherence(verdict)["COHERENCE_CALL_NUMBER"]
    assert finding.summary == (
        "Claims to be Norton but writes from golfclub.example, asks you to call a number (+1 (805) 555-0199) "
        "instead of linking to Norton's site")
    assert finding.details["requests"] == ["payment", "callback"]  # the payment is asked first


def test_a_brand_name_over_a_stranger_whose_links_all_leave_the_brand(scanner: mailguard.Scanner) -> None:
    """Nothing asked, but only the name is the brand's: not its address, not one link."""
    html = ('<p>Lumen staking is now live for every holder, with yields of up to 25 percent.</p>'
            '<p><a href="https://mail2-stellar.example/stake">Learn more</a></p>')
    verdict = scanner.scan(mail("no-reply@rfc.example", "Stellar", html=html, subject="Lumen Staking activated"))
    finding = coherence(verdict)["COHERENCE_BRAND_NAME_LINKS_ELSEWHERE"]
    assert finding.summary == (
        "Claims to be Stellar but writes from rfc.example, asks for nothing specific, and its links go to "
        "mail2-stellar.example, none of them Stellar's")
    # a link to the brand's own site, the brand's own address or a person's name: no such case
    own_link = html.replace("https://mail2-stellar.example/stake", "https://www.stellar.org/stake")
    for sender, name, body in (("no-reply@rfc.example", "Stellar", own_link), ("news@stellar.org", "Stellar", html),
                               ("no-reply@rfc.example", "Jo Roe", html)):
        found = coherence(scanner.scan(mail(sender, name, html=body)))
        assert "COHERENCE_BRAND_NAME_LINKS_ELSEWHERE" not in found, (sender, name)


def test_a_brand_name_with_a_link_to_a_bare_address(scanner: mailguard.Scanner) -> None:
    """From the brand's own (forged) domain, nothing asked, but a link to a bare address."""
    html = ('<p>Important information about your eBay account.</p>'
            '<p><a href="http://signin.ebay.com/ws/">eBay</a> <a href="http://203.0.113.9/ebay/">Details</a></p>')
    verdict = scanner.scan(mail("support_num_576@ebay.com", "eBay Inc", html=html, subject="Important information"))
    finding = coherence(verdict)["COHERENCE_BRAND_SUSPECT_LINK"]
    assert finding.summary == ("It calls itself eBay, and a link goes to 203.0.113.9, a bare internet address instead "
                               "of a named site, not to a site of eBay's")
    # the same links under a person's name, or only the brand's own link: no such case
    person = scanner.scan(mail("jo@mail.example", "Jo Roe", html=html))
    own = scanner.scan(mail("support@ebay.com", "eBay Inc", html=html.replace("http://203.0.113.9/ebay/",
                                                                               "https://www.ebay.com/help")))
    assert "COHERENCE_BRAND_SUSPECT_LINK" not in coherence(person)
    assert "COHERENCE_BRAND_SUSPECT_LINK" not in coherence(own)


def test_no_request_no_finding_but_a_summary(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(mail("jane@clinic.example", "Jane Roe", text="Lunch on Friday?"))
    assert not coherence(verdict)
    assert verdict.summary == "Comes from clinic.example, asks for nothing specific, and it has no links"
    assert verdict.to_dict()["summary"] == verdict.summary


def test_turned_off_it_adds_nothing() -> None:
    scanner = mailguard.Scanner(Config.from_dict({"coherence": {"enabled": False}}))
    verdict = scanner.scan(mail("alerts@account-check.net", "Microsoft", text=SIGN_IN))
    assert not coherence(verdict) and verdict.summary == ""


def test_hostile_inputs_stay_bounded(scanner: mailguard.Scanner) -> None:
    links = "".join(f'<a href="https://h{i}.example/?u=https%3A%2F%2Fx{i}.example">Sign in</a>' for i in range(3000))
    verdict = scanner.scan(mail("a@b.example", "A" * 100_000, html=f"<p>{SIGN_IN}</p>{links}"))
    assert verdict.errors == ()
    assert len(verdict.summary) < 1000


def test_claim_disproved_by_dmarc_with_a_request_elsewhere() -> None:
    scanner = mailguard.Scanner()
    html = f'<p>{SIGN_IN}</p><p><a href="https://bank-verify.example/login">Sign in</a></p>'
    parsed = scanner.parse(mail("security@bank.example", "Bank Security", html=html))
    forged = dataclasses.replace(parsed, auth=AuthResults(
        source="computed", from_domain="bank.example", dmarc="fail", dmarc_policy="reject"))
    verdict = scanner.scan_parsed(forged)
    finding = coherence(verdict)["COHERENCE_FORGED_REQUEST_ELSEWHERE"]
    assert finding.summary.startswith("Claims to be bank.example (its own DMARC says it is not), asks you to sign in")
    assert "bank-verify.example" in finding.summary


def test_brand_writing_from_its_own_domain_with_a_request_elsewhere(scanner: mailguard.Scanner) -> None:
    """A forged From of the brand's own domain: the sign-in link is the tell."""
    html = f'<p>{SIGN_IN}</p><p><a href="http://203.0.113.7/paypal/login">Sign in</a></p>'
    verdict = scanner.scan(mail("service@paypal.com", "PayPal", html=html))
    found = coherence(verdict)
    assert found["COHERENCE_BRAND_REQUEST_ELSEWHERE"].summary.startswith(
        "Claims to be PayPal, asks you to sign in or confirm your details, and the sign-in link goes to a site "
        "that is not PayPal's (203.0.113.7)")
    suspect = found["COHERENCE_REQUEST_SUSPECT_LINK"]
    assert suspect.summary == ("It asks you to sign in or confirm your details, and the sign-in link goes to "
                               "203.0.113.7, a bare internet address instead of a named site")
    assert "COHERENCE_FOCUSED_REQUEST_ELSEWHERE" in found
    assert verdict.summary == found["COHERENCE_BRAND_REQUEST_ELSEWHERE"].summary


def test_a_site_carrying_the_brands_name_is_not_the_brands(scanner: mailguard.Scanner) -> None:
    """Only the brand table says what a brand owns: a look-alike carrying its name is not
    its site, whichever of the brand's domains would be compared first (that choice used
    to follow hash randomisation, so the verdict changed from run to run)."""
    html = f'<p>{SIGN_IN}</p><p><a href="https://www.paypal-account-verify.net/login">Sign in</a></p>'
    found = coherence(scanner.scan(mail("service@paypal.com", "PayPal", html=html)))
    assert "COHERENCE_REQUEST_OWNED" not in found
    assert found["COHERENCE_BRAND_REQUEST_ELSEWHERE"].summary.endswith(
        "the sign-in link goes to a site that is not PayPal's (www.paypal-account-verify.net)")


def test_brand_mail_linking_to_its_own_sites_is_no_brand_case(scanner: mailguard.Scanner) -> None:
    html = f'<p>{SIGN_IN}</p><p><a href="https://www.paypal.com/signin">Sign in</a></p>'
    found = coherence(scanner.scan(mail("service@paypal.com", "PayPal", html=html)))
    assert not {"COHERENCE_BRAND_REQUEST_ELSEWHERE", "COHERENCE_REQUEST_SUSPECT_LINK",
                "COHERENCE_FOCUSED_REQUEST_ELSEWHERE"} & set(found)


def test_request_through_a_shortener_is_a_suspect_link(scanner: mailguard.Scanner) -> None:
    html = f'<p>{SIGN_IN}</p><p><a href="https://bit.ly/3xYz">Verify now</a></p>'
    found = coherence(scanner.scan(mail("alerts@clinic-portal.com", html=html)))
    assert "bit.ly, a link-shortening service" in found["COHERENCE_REQUEST_SUSPECT_LINK"].summary


def test_a_long_message_is_not_focused_on_its_request(scanner: mailguard.Scanner) -> None:
    filler = " ".join(["This week's articles cover servers, kernels and tools for administrators."] * 40)
    html = f'<p>{SIGN_IN}</p><p>{filler}</p><p><a href="https://other-site.example/x">Sign in</a></p>'
    found = coherence(scanner.scan(mail("news@weekly-digest.example", html=html)))
    assert "COHERENCE_REQUEST_ELSEWHERE" in found
    assert "COHERENCE_FOCUSED_REQUEST_ELSEWHERE" not in found


def test_picture_only_message_linking_away_from_its_sender(scanner: mailguard.Scanner) -> None:
    away = '<a href="https://promo.deal-site.example/c?id=1"><img src="https://cdn.deal-site.example/a.png"></a>'
    own = '<a href="https://www.shop.example/sale"><img src="https://cdn.shop.example/a.png"></a>'
    found = coherence(scanner.scan(mail("news@shop.example", html=away, text=" ")))
    assert found["COHERENCE_PICTURE_LINK_ELSEWHERE"].summary == (
        "The message is a picture with almost no text, and clicking it leads to promo.deal-site.example, "
        "not to the sender's site (shop.example)")
    assert "COHERENCE_PICTURE_LINK_ELSEWHERE" not in coherence(scanner.scan(mail("news@shop.example", html=own,
                                                                                  text=" ")))


def test_picture_whose_click_areas_lead_away_despite_a_link_to_the_sender(scanner: mailguard.Scanner) -> None:
    # The picture's image map covers it and opens an IP address; the <a> around it shows the sender's site.
    html = ('<a href="https://signin.shop.example/account"><map name="m"><area shape="rect" coords="0,0,640,480" '
            'href="http://203.0.113.9/shop/login"></map><img src="https://cdn.shop.example/notice.gif" usemap="#m"></a>')
    found = coherence(scanner.scan(mail("support@shop.example", html=html, text=" ")))
    assert "clicking it leads to 203.0.113.9" in found["COHERENCE_PICTURE_LINK_ELSEWHERE"].summary
    own = ('<a href="https://www.shop.example/sale"><map name="m"><area shape="rect" coords="0,0,640,480" '
           'href="https://www.shop.example/sale/shoes"></map><img src="https://cdn.shop.example/a.png" usemap="#m"></a>')
    assert "COHERENCE_PICTURE_LINK_ELSEWHERE" not in coherence(scanner.scan(mail("news@shop.example", html=own,
                                                                                  text=" ")))


def test_a_few_words_and_a_link_elsewhere(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(mail("yagu@realestate.example", "Dating", text="Click for date http://foret.example/s"))
    finding = coherence(verdict)["COHERENCE_BARE_URL_ELSEWHERE"]  # the address is written out
    assert finding.summary == ("The message is a few words and a web address at foret.example, a site that is "
                               "not the sender's (realestate.example)")
    own = scanner.scan(mail("jane@clinic.example", text="Minutes: https://wiki.clinic.example/minutes"))
    assert not {"COHERENCE_BARE_LINK_ELSEWHERE", "COHERENCE_BARE_URL_ELSEWHERE"} & set(coherence(own))


def test_a_few_words_and_a_hidden_link_elsewhere(scanner: mailguard.Scanner) -> None:
    html = '<p>Your photos are ready.</p><p><a href="https://foret.example/s">Open</a></p>'
    verdict = scanner.scan(mail("yagu@realestate.example", "Dating", html=html))
    finding = coherence(verdict)["COHERENCE_BARE_LINK_ELSEWHERE"]
    assert finding.summary == ("The message is a few words and a link to foret.example, a site that is not the "
                               "sender's (realestate.example), behind words or a picture that do not show where "
                               "it leads")
    shown = '<p>Your photos are ready.</p><p><a href="https://foret.example/s">foret.example/s</a></p>'
    verdict = scanner.scan(mail("yagu@realestate.example", "Dating", html=shown))
    assert "COHERENCE_BARE_LINK_ELSEWHERE" not in coherence(verdict)  # the reader sees where it leads


def test_a_credit_link_naming_its_site_is_no_destination(scanner: mailguard.Scanner) -> None:
    """"Powered by Crater" -> craterapp.com says where it goes and asks nothing; the
    request's own link is judged instead."""
    text = "You have received a new invoice. Please pay it using the button below."
    html = (f'<p>{text}</p><p><a href="https://billing.northgate-billing.example/i/1">View invoice</a></p>'
            '<p>Powered by <a href="https://craterapp.example">Crater</a></p>')
    found = coherence(scanner.scan(mail("invoices@northgate-billing.example", "Northgate Billing", html=html)))
    assert "COHERENCE_REQUEST_OWNED" in found and "COHERENCE_REQUEST_ELSEWHERE" not in found
    imitation = '<p>Verify your account now.</p><p><a href="https://paypal-help.example/x">PayPal</a></p>'
    found = coherence(scanner.scan(mail("service@paypal-help.example", "Support", html=imitation)))
    assert "paypal-help.example" in next(iter(found.values())).summary


def test_a_link_showing_the_senders_site_that_leads_elsewhere(scanner: mailguard.Scanner) -> None:
    html = ('<p>Please update your account.</p>'
            '<p><a href="https://visions-fcu.example/login">https://www.ncua.example/login</a></p>')
    verdict = scanner.scan(mail("security@ncua.example", html=html))
    finding = coherence(verdict)["COHERENCE_LINK_SHOWS_SENDER_ELSEWHERE"]
    assert finding.summary == ("A link reads www.ncua.example, the sender's own site, but leads to "
                               "visions-fcu.example, which is not the sender's (ncua.example)")
    for href in ("https://portal.ncua.example/login",  # the sender's own
                 "https://click.tracker.example/r?url=https%3A%2F%2Fwww.ncua.example%2Flogin"):  # readable target
        html = f'<p>Please update your account.</p><p><a href="{href}">www.ncua.example/login</a></p>'
        verdict = scanner.scan(mail("security@ncua.example", html=html))
        assert "COHERENCE_LINK_SHOWS_SENDER_ELSEWHERE" not in coherence(verdict), href
