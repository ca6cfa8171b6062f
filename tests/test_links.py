"""The links analyzer on messages a front desk would meet: links through shorteners, free
hosting, form builders and IPFS; links personalised with the recipient's own address;
script links; picture-only mail; hidden words. And the ordinary mail that must stay quiet."""
from __future__ import annotations

import base64
import io
import zipfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailguard import Config, Envelope
from mailguard.analyzers.base import AnalyzerContext
from mailguard.analyzers.links import LinksAnalyzer
from mailguard.config import ConfigError
from mailguard.message import parse

RECIPIENT = "frontdesk@mindwellpsychology.org"


def analyzer(config: Config | None = None, **settings: Any) -> LinksAnalyzer:
    schema = LinksAnalyzer.full_schema()
    values = {key: option.check(settings.get(key, option.default), key) for key, option in schema.items()}
    return LinksAnalyzer(values, AnalyzerContext(config or Config.default()))


@pytest.fixture(scope="module")
def links() -> LinksAnalyzer:
    return analyzer()


def message(text: str = "Hello, see you Tuesday.", html: str = "", to: str = RECIPIENT) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Billing <billing@northsidelabs.com>"
    msg["To"] = to
    msg["Subject"] = "Your statement"
    msg["Message-ID"] = "<t1@northsidelabs.com>"
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def rules(analyzer: LinksAnalyzer, raw: bytes, envelope: Envelope | None = None) -> dict[str, Any]:
    return {f.rule: f for f in analyzer.analyze(parse(raw, envelope))}


def test_shortener_link_is_named_in_plain_words(links: LinksAnalyzer) -> None:
    found = rules(links, message("Your invoice is ready: https://bit.ly/3xYz9Qa"))
    finding = found["LINKS_SHORTENER"]
    assert "bit.ly" in finding.summary and "hides where it really leads" in finding.summary
    assert 0 < finding.score < 5


def test_x_link_wrapper_counts_but_vendors_own_short_links_do_not(links: LinksAnalyzer) -> None:
    assert "LINKS_SHORTENER" in rules(links, message("Claim your reward: https://t.co/Ab12Cd34Ef"))
    quiet = message("Set up sign-in: https://aka.ms/mfasetup\nDirections: https://maps.app.goo.gl/xyz123")
    assert "LINKS_SHORTENER" not in rules(links, quiet)


def test_free_hosting_subdomain_and_form_builder_path(links: LinksAnalyzer) -> None:
    html = (
        '<p>Review the document <a href="https://secure-docs-review.weebly.com/">here</a> and '
        '<a href="https://docs.google.com/forms/d/e/1FAIpQLSd/viewform">confirm your account</a></p>'
    )
    found = rules(links, message(html=html))
    assert "LINKS_FREE_HOSTING" in found and "secure-docs-review.weebly.com" in found["LINKS_FREE_HOSTING"].summary
    assert "LINKS_FORM_BUILDER" in found


def test_google_docs_document_is_not_a_form(links: LinksAnalyzer) -> None:
    found = rules(links, message("Agenda: https://docs.google.com/document/d/1abc/edit"))
    assert "LINKS_FORM_BUILDER" not in found


def test_ipfs_gateway_and_risky_tld(links: LinksAnalyzer) -> None:
    text = "Sign in: https://ipfs.io/ipfs/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi/index.html\n" \
           "Or https://account-check.top/login"
    found = rules(links, message(text))
    assert "LINKS_IPFS" in found
    assert "LINKS_RISKY_TLD" in found and ".top" in found["LINKS_RISKY_TLD"].summary
    found = rules(links, message("Deals: https://offers4u.sa.com/x"))
    assert ".sa.com" in found["LINKS_RISKY_TLD"].summary
    assert "LINKS_RISKY_TLD" not in rules(links, message("https://www.salon.com/ and https://example.com.au/"))


def test_ordinary_links_stay_quiet(links: LinksAnalyzer) -> None:
    html = (
        '<p>Your appointment with Dr. Roe is confirmed. Directions: '
        '<a href="https://www.google.com/maps/place/Clinic">map</a>. Forms: '
        '<a href="https://www.mindwellpsychology.org/intake">intake</a>. '
        '<a href="https://northsidelabs.com/unsubscribe?email=frontdesk%40mindwellpsychology.org">Unsubscribe</a></p>'
    )
    assert rules(links, message(html=html)) == {}


def test_allow_hosts_silences_a_service_the_practice_uses() -> None:
    quiet = analyzer(allow_hosts=["jotform.com"])
    assert "LINKS_FORM_BUILDER" not in rules(quiet, message("Intake form: https://form.jotform.com/2301/intake"))


def test_recipient_address_in_fragment_or_base64_is_flagged(links: LinksAnalyzer) -> None:
    found = rules(links, message(f"Review the shared file: https://files-portal.example.net/view#{RECIPIENT}"))
    assert "LINKS_RECIPIENT_IN_URL" in found
    assert RECIPIENT in found["LINKS_RECIPIENT_IN_URL"].summary
    token = base64.b64encode(RECIPIENT.encode()).decode()
    found = rules(links, message(f"Open: https://files-portal.example.net/s?u={token}"))
    assert found["LINKS_RECIPIENT_IN_URL"].details["encoded"] is True


def test_recipient_from_envelope_counts_when_to_is_hidden(links: LinksAnalyzer) -> None:
    raw = message(f"Open: https://doc-view.example.net/#{RECIPIENT}", to="undisclosed-recipients:;")
    assert "LINKS_RECIPIENT_IN_URL" not in rules(links, raw)
    envelope = Envelope("x@sender.example", (RECIPIENT,))
    assert "LINKS_RECIPIENT_IN_URL" in rules(links, raw, envelope)


def test_plain_email_parameter_in_query_is_newsletter_practice(links: LinksAnalyzer) -> None:
    found = rules(links, message(f"Manage preferences: https://news.example.org/prefs?email={RECIPIENT}"))
    assert "LINKS_RECIPIENT_IN_URL" not in found


def test_javascript_and_data_links(links: LinksAnalyzer) -> None:
    html = '<p>Your voicemail: <a href="javascript:window.location=atob(\'aHR0cA==\')">play</a></p>'
    assert "LINKS_SCRIPT_URL" in rules(links, message(html=html))
    html = '<p>Invoice: <a href="data:text/html;base64,PGgxPkxvZ2luPC9oMT4=">open</a></p>'
    assert rules(links, message(html=html))["LINKS_SCRIPT_URL"].details["scheme"] == "data"
    # A file hidden in a data: link is the signatures analyzer's finding, not counted twice.
    html = '<p><a href="data:application/zip;base64,UEsDBAo=" download="invoice.zip">invoice</a></p>'
    assert "LINKS_SCRIPT_URL" not in rules(links, message(html=html))


def test_picture_with_one_link_and_no_words(links: LinksAnalyzer) -> None:
    html = '<a href="https://promo.example.net/claim"><img src="https://promo.example.net/offer.png"></a>'
    found = rules(links, message(text=" ", html=html))
    assert "LINKS_IMAGE_ONLY" in found and "promo.example.net" in found["LINKS_IMAGE_ONLY"].summary


def test_newsletter_with_pictures_and_text_is_not_picture_only(links: LinksAnalyzer) -> None:
    html = (
        '<img src="https://clinic.example.org/logo.png"><p>This month at the clinic: new group therapy '
        'sessions on Thursdays, parking changes, and a reminder about our holiday hours.</p>'
        '<a href="https://clinic.example.org/news">Read more</a>'
    )
    assert "LINKS_IMAGE_ONLY" not in rules(links, message(text="This month at the clinic", html=html))


def test_hidden_word_stuffing_but_not_a_preheader_or_style_sheet(links: LinksAnalyzer) -> None:
    stuffing = " ".join(["meeting agenda quarterly report lunch schedule"] * 10)
    html = f'<p>Click to verify</p><div style="display:none">{stuffing}</div>'
    assert "LINKS_HIDDEN_TEXT" in rules(links, message(html=html))
    style = "<style>" + " ".join(f".c{i} {{ color: red; font-family: Arial, sans-serif; }}" for i in range(50)) + "</style>"
    html = f'<html><head>{style}</head><body><span style="display:none">Your March newsletter is here</span>' \
           "<p>Hello</p></body></html>"
    assert "LINKS_HIDDEN_TEXT" not in rules(links, message(html=html))


def test_bad_hosts_file_names_file_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "links.toml"
    bad.write_text('[shortener]\nrule = "SHORT"\nsummary = "x"\nhosts = ["bit.ly"]\n', encoding="utf-8")
    config = Config.default()
    with pytest.raises(ConfigError, match=r"links\.toml.*\[shortener\].*LINKS_"):
        analyzer(config, hosts_file=str(bad))
    bad.write_text('[x]\nrule = "LINKS_X"\nsummary = "s"\nhosts = ["https://bit.ly"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a host"):
        analyzer(config, hosts_file=str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        analyzer(config, hosts_file=str(tmp_path / "missing.toml"))


def test_operator_hosts_file_replaces_built_in_lists(tmp_path: Path) -> None:
    own = tmp_path / "links.toml"
    own.write_text(
        '[tracker]\nrule = "LINKS_TRACKER"\nsummary = "A link goes to {host}"\nhosts = ["evil-redirect.example"]\n',
        encoding="utf-8",
    )
    custom = analyzer(hosts_file=str(own))
    found = rules(custom, message("https://go.evil-redirect.example/x and https://bit.ly/abc"))
    assert set(found) == {"LINKS_TRACKER"}


def test_cloud_functions_and_storage_buckets_count_as_free_hosting(links: LinksAnalyzer) -> None:
    text = (
        "Verify here: https://us-central1-pelagic-cat-364619.cloudfunctions.net/verify\n"
        "Statement: https://recheck-portal.s3.us-east-1.amazonaws.com/index.html"
    )
    finding = rules(links, message(text))["LINKS_FREE_HOSTING"]
    assert finding.details["hosts"] == [
        "us-central1-pelagic-cat-364619.cloudfunctions.net", "recheck-portal.s3.us-east-1.amazonaws.com",
    ]
    assert "more such links" in finding.summary
    assert "LINKS_FREE_HOSTING" not in rules(links, message("Docs: https://aws.amazon.com/s3/"))


def test_link_to_a_rented_servers_automatic_name(links: LinksAnalyzer) -> None:
    found = rules(links, message("Claim: http://74.148.167.72.host.secureserver.net/claim"))
    assert "74.148.167.72" in found["LINKS_SERVER_HOSTNAME"].summary
    assert "LINKS_SERVER_HOSTNAME" in rules(links, message("http://103-52-115-55.cloud.leaseweb.net/x"))
    # A bare IP is the lookalike analyzer's finding, not counted twice; version numbers are not IPs.
    assert "LINKS_SERVER_HOSTNAME" not in rules(links, message("http://74.148.167.72/claim"))
    assert "LINKS_SERVER_HOSTNAME" not in rules(links, message("https://v1.2.3.example.com/release"))


def test_one_analyzer_serves_many_threads(links: LinksAnalyzer) -> None:
    """A Scanner shares its analyzers between the relay's threads: same answers in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    raws = [
        message("https://bit.ly/abc"),
        message(f"https://files-portal.example.net/view#{RECIPIENT}"),
        message("Nothing to see here, lunch at noon."),
    ] * 20
    expected = [sorted(rules(links, raw)) for raw in raws]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda raw: sorted(rules(links, raw)), raws)) == expected


def test_a_vendors_newsletter_stays_quiet(links: LinksAnalyzer) -> None:
    """Logo, preheader hidden for the inbox preview, click-tracked links, a style sheet:
    the ordinary newsletter a practice gets from its EHR vendor."""
    style = "<style>@media (max-width:600px){.col{width:100%!important}} .btn{color:#fff}</style>"
    html = (
        f"<html><head><title>March update</title>{style}</head><body>"
        '<span style="display:none;max-height:0">New telehealth features and billing tips for March</span>'
        '<img src="https://cdn.ehr-vendor.example/logo.png" alt="EHR Vendor">'
        "<p>This month: group-session scheduling, faster claim status checks, and a webinar on "
        "documentation for the new CPT codes.</p>"
        '<a href="https://click.ehr-vendor.example/ls/click?upn=abc123">Read the release notes</a> '
        f'<a href="https://click.ehr-vendor.example/unsub?e={RECIPIENT}">Unsubscribe</a>'
        "</body></html>"
    )
    assert rules(links, message(text="March update from your EHR vendor", html=html)) == {}


def test_pictures_loaded_from_a_bare_internet_address(links: LinksAnalyzer) -> None:
    """A promo whose pictures and tracking pixel come from a nameless server; a newsletter
    whose pictures (and pixel) come from its named CDN or ESP stays quiet, and a link to a
    bare address is left to the lookalike analyzer."""
    html = (
        '<p>Your parcel is waiting, confirm delivery today.</p>'
        '<a href="https://parcel-notice.example.net/c"><img src="http://104.219.248.205/img/banner.jpg"></a>'
        '<img src="http://104.219.248.205/track/o.gif?id=77" width="1" height="1">'
    )
    found = rules(links, message(html=html))
    assert "104.219.248.205" in found["LINKS_IMAGE_IP"].summary and 0 < found["LINKS_IMAGE_IP"].score <= 3
    newsletter = (
        '<p>Spring schedule and new group sessions.</p><img src="https://cdn.ehr-vendor.example/logo.png">'
        '<img src="https://open.mailer-esp.example/o/Xy12.gif" width="1" height="1">'
        '<a href="https://click.mailer-esp.example/l/abc">Read more</a>'
    )
    assert "LINKS_IMAGE_IP" not in rules(links, message(html=newsletter))
    ip_link = '<a href="http://104.219.248.205/login"><img src="http://104.219.248.205/logo.png"></a>'
    assert "LINKS_IMAGE_IP" not in rules(links, message(html=ip_link))


def test_image_map_that_clicks_through_to_another_site(links: LinksAnalyzer) -> None:
    """The 'eBay' picture wrapped in a link to signin.ebay.com, its image map sending the
    click to a bare server; a retailer's image map that points to its own shop is fine."""
    html = (
        '<a href="https://signin.ebay.com/ws/eBayISAPI.dll?SignIn"><img src="cid:banner" usemap="#m"></a>'
        '<map name="m"><area coords="0,0,646,569" shape="rect" href="http://219.235.0.9/mytocc/imp/"></map>'
    )
    found = rules(links, message(html=html))
    assert "219.235.0.9" in found["LINKS_IMAGE_MAP_ELSEWHERE"].summary
    shop = (
        '<p>Spring sale on office chairs.</p><img src="https://img.shop.example.com/sale.png" usemap="#s">'
        '<map name="s"><area shape="rect" coords="0,0,300,200" href="https://www.shop.example.com/chairs">'
        '<area shape="rect" coords="300,0,600,200" href="https://click.shop.example.com/desks"></map>'
        '<a href="https://www.shop.example.com/">Visit the shop</a>'
    )
    assert "LINKS_IMAGE_MAP_ELSEWHERE" not in rules(links, message(html=shop))


def test_picture_cut_into_slices_with_several_links(links: LinksAnalyzer) -> None:
    """A promo picture sliced into five clickable parts and no words; a retailer's picture
    mail with the same links but a written footer is not picture-only."""
    slices = "".join(
        f'<a href="https://promo.example.net/p{i}"><img src="https://promo.example.net/s{i}.jpg"></a>' for i in range(5)
    )
    assert "LINKS_IMAGE_ONLY" in rules(links, message(text=" ", html=slices))
    footer = (
        "<p>You are receiving this because you shop with Example Outfitters, 12 Main Street, Springfield. "
        "Update your preferences or unsubscribe at any time.</p>"
    )
    assert "LINKS_IMAGE_ONLY" not in rules(links, message(text=" ", html=slices + footer))


def test_pictures_hotlinked_from_an_anonymous_image_sharing_site(links: LinksAnalyzer) -> None:
    """A promo whose pictures sit on imgur and zupimages; a newsletter with pictures on its
    own CDN, a plain link to an imgur page, and an X notification (pbs.twimg.com) are quiet."""
    promo = (
        '<p>Your reward is waiting</p><a href="https://rewards-now.example.net/c">'
        '<img src="https://i.imgur.com/Ab12Cd3.png"></a><img src="https://www.zupimages.net/up/24/10/x.jpg">'
    )
    found = rules(links, message(html=promo))
    assert "i.imgur.com" in found["LINKS_IMAGE_SHARING"].summary and 0 < found["LINKS_IMAGE_SHARING"].score <= 3
    quiet = (
        '<p>New group sessions this spring.</p><img src="https://cdn.ehr-vendor.example/logo.png">'
        '<a href="https://imgur.com/gallery/abc">the whiteboard photo</a>'
        '<img src="https://pbs.twimg.com/profile_images/1/a.jpg"><a href="https://x.com/clinic">@clinic</a>'
    )
    assert "LINKS_IMAGE_SHARING" not in rules(links, message(html=quiet))


def test_host_group_applies_to_must_be_links_or_images(tmp_path: Path) -> None:
    bad = tmp_path / "hosts.toml"
    bad.write_text('[pics]\nrule = "LINKS_PICS"\nsummary = "x {host}"\napplies_to = "headers"\nhosts = ["a.example"]\n')
    with pytest.raises(ConfigError, match="applies_to"):
        analyzer(hosts_file=str(bad))


def test_pictures_borrowed_from_x_without_a_link_to_x(links: LinksAnalyzer) -> None:
    """A promo whose picture is a post's image on pbs.twimg.com counts; X's own
    notification (or a newsletter quoting a post) links to x.com and stays quiet."""
    borrowed = '<p>Ergonomic pillow, 70% off</p><a href="https://t.co/Zx9"><img src="https://pbs.twimg.com/media/F1.jpg"></a>'
    assert "LINKS_IMAGE_SHARING" in rules(links, message(html=borrowed))
    notification = (
        '<p>New post from @clinic</p><img src="https://pbs.twimg.com/profile_images/1/a.jpg">'
        '<a href="https://x.com/clinic/status/1">View post</a>'
    )
    assert "LINKS_IMAGE_SHARING" not in rules(links, message(html=notification))


def test_two_image_groups_under_one_rule_count_once(links: LinksAnalyzer) -> None:
    html = '<img src="https://i.imgur.com/a.png"><img src="https://pbs.twimg.com/media/b.jpg"><p>Offer</p>'
    found = [f for f in links.analyze(parse(message(html=html))) if f.rule == "LINKS_IMAGE_SHARING"]
    assert len(found) == 1


def pdf_with_link(url: str, password: bool = False) -> bytes:
    """A one-page PDF whose only content is a clickable area opening ``url`` (made with
    pypdf; ``password`` encrypts it with an empty user password, so it opens unasked)."""
    from io import BytesIO

    from pypdf import PdfWriter
    from pypdf.annotations import Link as LinkAnnotation
    writer = PdfWriter()
    writer.add_blank_page(width=300, height=200)
    annotation = LinkAnnotation(rect=(20, 20, 280, 180), url=url)
    writer.add_annotation(0, annotation)
    if password:
        writer.encrypt(user_password="", owner_password="owner-secret", algorithm="AES-128")
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def message_with_pdf(text: str, pdf: bytes, name: str = "Statement.pdf") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Billing <billing@northsidelabs.com>"
    msg["To"] = RECIPIENT
    msg["Subject"] = "Your statement"
    msg.set_content(text)
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()


def test_pdf_that_only_carries_a_link_elsewhere(links: LinksAnalyzer) -> None:
    raw = message_with_pdf("See attached.", pdf_with_link("https://okaosk.z13.web.core.windows.net/"))
    found = rules(links, raw)
    finding = found["LINKS_DOCUMENT_ONLY_LINK"]
    assert "Statement.pdf" in finding.summary and "okaosk.z13.web.core.windows.net" in finding.summary
    # the host behind the document's button is judged like a link in the body
    assert "LINKS_FREE_HOSTING" in found


def test_encrypted_pdf_without_password_still_shows_its_link(links: LinksAnalyzer) -> None:
    raw = message_with_pdf("", pdf_with_link("https://bit.ly/3V8v9ku", password=True))
    found = rules(links, raw)
    assert "LINKS_DOCUMENT_ONLY_LINK" in found and "LINKS_SHORTENER" in found


def test_pdf_with_a_covering_letter_or_own_site_link_stays_quiet(links: LinksAnalyzer) -> None:
    letter = " ".join(["Dear Ms Roe, please find your statement for March attached as agreed."] * 8)
    assert "LINKS_DOCUMENT_ONLY_LINK" not in rules(
        links, message_with_pdf(letter, pdf_with_link("https://pay.example-processor.com/x"))
    )
    own = message_with_pdf("See attached.", pdf_with_link("https://www.northsidelabs.com/contact"))
    assert "LINKS_DOCUMENT_ONLY_LINK" not in rules(links, own)


def test_redirect_target_is_judged_like_the_link(links: LinksAnalyzer) -> None:
    found = rules(links, message("Open: https://www.google.com/url?q=https://platform3355.top/1wq4W8&sa=D"))
    assert "platform3355.top" in found["LINKS_RISKY_TLD"].summary


def test_office_document_whose_only_content_is_a_link(links: LinksAnalyzer) -> None:
    rels = (b'<?xml version="1.0"?><Relationships><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/'
            b'officeDocument/2006/relationships/hyperlink" Target="https://giftether.space/" TargetMode="External"/>'
            b"</Relationships>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("ppt/slides/_rels/slide1.xml.rels", rels)
    msg = EmailMessage()
    msg["From"] = "someone@icloud.com"
    msg["To"] = RECIPIENT
    msg.set_content("")
    msg.add_attachment(buffer.getvalue(), maintype="application",
                       subtype="vnd.openxmlformats-officedocument.presentationml.presentation", filename="o5314p.pptx")
    finding = rules(links, msg.as_bytes())["LINKS_DOCUMENT_ONLY_LINK"]
    assert "o5314p.pptx" in finding.summary and "giftether.space" in finding.summary
