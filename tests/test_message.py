"""The message model: every kind of real-world breakage parses into something usable."""
from __future__ import annotations

import base64
import io
import zipfile
from email.message import EmailMessage

import mailguard
from mailguard.message import parse


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_crlf_and_lf_give_the_same_model() -> None:
    lf = b"From: Ann <ann@example.org>\nTo: b@example.net\nSubject: Hello\n\nLine one\nLine two\n"
    crlf = lf.replace(b"\n", b"\r\n")
    a, b = parse(lf), parse(crlf)
    assert a.subject == b.subject == "Hello"
    assert a.from_address and a.from_address.address == "ann@example.org"
    assert a.text.split() == b.text.split() == ["Line", "one", "Line", "two"]


def test_rfc2047_subject_and_display_name() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\n"
        b"Subject: =?iso-8859-1?q?Rechnung_f=FCr_Sie?=\n\nbody\n"
    )
    msg = parse(raw)
    assert msg.subject == "Rechnung für Sie"
    assert msg.from_address.display_name == "Jürgen Müller"


def test_8bit_headers_and_unknown_charset_do_not_break_parsing() -> None:
    raw = (
        "From: José <jose@example.com>\nSubject: Año nuevo\n"
        "Content-Type: text/plain; charset=x-unknown-charset\n\ncañón\n"
    ).encode("utf-8")
    msg = parse(raw)
    assert msg.subject == "Año nuevo"
    assert "ca" in msg.text


def test_bad_base64_is_tolerated() -> None:
    raw = (
        b"From: a@example.com\nSubject: x\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
        b"SGVsbG8gd29ybGQ!!!not*base64===\n"
    )
    verdict = mailguard.Scanner().scan(raw)
    assert verdict.action in tuple(mailguard.Action)


def test_rfc2231_attachment_name() -> None:
    raw = (
        b"From: a@example.com\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n--b\n'
        b"Content-Type: application/pdf\n"
        b"Content-Disposition: attachment; filename*=UTF-8''Factura%20n%C2%BA%201.pdf\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.b64encode(b"%PDF-1.4 test") + b"\n--b--\n"
    )
    msg = parse(raw)
    assert [a.filename for a in msg.attachments] == ["Factura nº 1.pdf"]
    assert msg.attachments[0].data == b"%PDF-1.4 test"


def test_html_visible_text_hidden_text_and_links() -> None:
    html = (
        '<html><head><title>t</title><style>p{}</style></head><body>'
        '<p>Your invoice is <span style="display:none">harmless newsletter words</span>ready.</p>'
        '<a href="https://evil.example/login?x=1">https://www.paypal.com/</a>'
        '<div style="font-size:0px">more hidden</div></body></html>'
    )
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = "x"
    msg.set_content(html, subtype="html")
    parsed = parse(msg.as_bytes())
    assert "Your invoice is ready." in parsed.html_text
    assert "harmless newsletter words" not in parsed.html_text
    assert "harmless newsletter words" in parsed.html_hidden_text
    assert "more hidden" in parsed.html_hidden_text
    [link] = parsed.links
    assert link.host == "evil.example" and link.text == "https://www.paypal.com/"


def test_plain_text_urls_are_links() -> None:
    msg = parse(b"From: a@example.com\nSubject: x\n\nGo to https://xn--pypal-4ve.com/login, or www.example.org.\n")
    hosts = [link.host for link in msg.links]
    assert hosts == ["xn--pypal-4ve.com", "www.example.org"]
    assert msg.links[0].unicode_host == "pаypal.com"


def test_address_written_in_html_without_any_link_is_a_link() -> None:
    bare = parse(b"From: a@example.com\nSubject: x\nContent-Type: text/html\n\n"
                 b"<meta charset=us-ascii>Click for date<br>http://lovamuch.space/sexxys\n")
    assert [(link.host, link.source) for link in bare.links] == [("lovamuch.space", "text")]
    # with real links, an address shown as text is usually the same link's caption: not added twice
    linked = parse(b"From: a@example.com\nSubject: x\nContent-Type: text/html\n\n"
                   b'<a href="https://example.org/a">Open</a> or paste https://example.org/a/long\n')
    assert [link.url for link in linked.links] == ["https://example.org/a"]


def test_image_map_click_areas_are_links_of_their_own() -> None:
    msg = parse(b"From: a@example.com\nSubject: x\nContent-Type: text/html\n\n"
                b'<a href="https://signin.ebay.com/ws"><map name="m"><area shape="rect" coords="0,0,9,9" '
                b'href="http://219.235.0.9/imp/" alt="Sign in"></map><img src="cid:x" usemap="#m"></a>\n')
    assert [(link.host, link.text, link.source) for link in msg.links] == [
        ("signin.ebay.com", "", "html"), ("219.235.0.9", "Sign in", "area")]


def test_nested_message_and_zip_members_are_attachments() -> None:
    inner = EmailMessage()
    inner["From"] = "x@example.com"
    inner["Subject"] = "inner"
    inner.set_content("inner body")
    inner.add_attachment(
        _zip({"docs/a.txt": b"hello", "nested.zip": _zip({"deep.js": b"WScript.Shell"})}),
        maintype="application", subtype="zip", filename="files.zip",
    )
    outer = EmailMessage()
    outer["From"] = "y@example.com"
    outer["Subject"] = "fwd"
    outer.set_content("see forwarded")
    outer.add_attachment(inner)
    parsed = parse(outer.as_bytes())
    assert len(parsed.attached_messages) == 1
    assert parsed.attached_messages[0].subject == "inner"
    names = {a.location[-1]: a for a in parsed.attachments}
    assert names["deep.js"].data == b"WScript.Shell"
    assert names["deep.js"].archive_depth == 2
    assert names["docs/a.txt"].location[-2] == "files.zip"


def test_addresses_are_parsed_without_dns() -> None:
    msg = parse(
        "From: \"Billing\" <billing@xn--exmple-cua.com>\nReply-To: pay@gmail.com\n"
        "Sender: bad address\nSubject: x\n\nhi\n".encode()
    )
    sender = msg.from_address
    assert sender.domain == "exämple.com" and sender.ascii_domain == "xn--exmple-cua.com"
    assert msg.reply_to[0].domain == "gmail.com"
    assert msg.sender and not msg.sender[0].valid


def test_base64_encoded_attached_message_is_unpacked() -> None:
    """RFC 2046 forbids encoding message/rfc822, but mail programs (and Python's own
    add_attachment) do it; an attacker must not hide attachments that way."""
    inner = EmailMessage()
    inner["From"] = "x@example.com"
    inner["Subject"] = "inner"
    inner.set_content("hello inner")
    inner.add_attachment(b"MZ payload", maintype="application", subtype="octet-stream", filename="a.exe")
    outer = EmailMessage()
    outer["From"] = "y@example.com"
    outer["Subject"] = "outer"
    outer.set_content("see attached")
    outer.add_attachment(inner.as_bytes(), maintype="message", subtype="rfc822")
    raw = outer.as_bytes()
    assert b"Content-Transfer-Encoding: base64" in raw
    parsed = parse(raw)
    assert [m.subject for m in parsed.attached_messages] == ["inner"]
    assert [a.filename for a in parsed.attachments] == ["a.exe"]
    assert parsed.attachments[0].data == b"MZ payload"


def test_style_sheets_are_neither_visible_nor_hidden_text() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content(
        "<html><head><style>.x{color:red}</style></head><body><p>Hello</p>"
        "<script>var secret = 1;</script><div style='display:none'>stuffed words</div></body></html>",
        subtype="html",
    )
    parsed = parse(msg.as_bytes())
    assert parsed.html_text == "Hello"
    assert parsed.html_hidden_text == "stuffed words"


def test_from_address_skips_the_junk_half_of_an_unquoted_comma() -> None:
    parsed = parse(b"From: Amazon, <service@evil.example>\nSubject: x\n\nhi\n")
    assert len(parsed.from_) == 2
    assert parsed.from_address.address == "service@evil.example"


def test_image_addresses_of_html_bodies_are_collected() -> None:
    """Remote pictures and tracking pixels are where a message loads content from: kept in
    order, an <img> without src left out, and plain-text mail has none."""
    html = (
        '<html><body><img src="https://cdn.example.com/logo.png" alt="Logo"><p>Hello</p>'
        '<a href="https://example.com/"><img src=" http://203.0.113.7/t.gif " width="1" height="1"></a>'
        "<img alt=\"no source\"></body></html>"
    )
    raw = (
        "From: a@example.com\nTo: b@example.net\nSubject: s\nMIME-Version: 1.0\n"
        f"Content-Type: text/html; charset=utf-8\n\n{html}\n"
    ).encode()
    msg = parse(raw)
    assert msg.image_urls == ("https://cdn.example.com/logo.png", "http://203.0.113.7/t.gif")
    assert parse(b"From: a@example.com\nSubject: s\n\n<img src=x>\n").image_urls == ()


def test_link_hosts_and_queries_are_read_as_urlsplit_reads_them() -> None:
    """url_host and url_query skip urlsplit for plain addresses: same answers on the odd ones."""
    from urllib.parse import urlsplit

    from mailguard.message import url_host, url_query

    for url in ("https://Portal.Example.COM./a?u=https%3A%2F%2Fx.example#f", "HTTP://user:pw@host.example:8080/?q",
                "www.example.org/path", "https://ex\tample.com/", "\x01https://a.example", "//host.example/x",
                "mailto:someone@example.com", "https://[::1]/x", "https://[bad/x", "http://h\u00e9.example/?a=1",
                "https://host.example#frag?notquery", "ftp://files.example", "https://", "javascript:alert(1)"):
        candidate = url.strip()
        if candidate.lower().startswith("www."):
            candidate = "http://" + candidate
        try:
            host = (urlsplit(candidate).hostname or "").lower().rstrip(".")
        except ValueError:
            host = ""
        try:
            query = urlsplit(url).query
        except ValueError:
            query = ""
        assert (url_host(url), url_query(url)) == (host, query), url
