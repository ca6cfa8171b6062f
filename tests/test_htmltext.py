"""HTML to text on hostile markup: deep nesting, unclosed tags, hidden styles, never-shown
content. The walk was rewritten for speed (issue 16); these pin what it must keep doing."""
from __future__ import annotations

import pytest

from mailguard.htmltext import MAX_STACK, html_to_text


def test_ten_thousand_nested_elements_neither_recurse_nor_lose_the_text() -> None:
    rendered = html_to_text("<div>" * 10_000 + "deep" + "</div>" * 10_000 + "after")
    assert rendered.visible == "deep\n\nafter"


def test_hiding_counts_up_to_the_nesting_limit_and_no_further() -> None:
    within = html_to_text("<div>" * (MAX_STACK - 5) + '<span style="display:none">within</span>')
    assert (within.visible, within.hidden) == ("", "within")
    beyond = html_to_text("<div>" * (MAX_STACK + 5) + '<span style="display:none">beyond</span> <script>s</script>')
    assert (beyond.visible, beyond.hidden) == ("beyond s", "")


def test_unclosed_tags_end_where_a_browser_ends_them() -> None:
    assert html_to_text("<p>one<p>two<div>three").visible == "one\n\ntwo\n\nthree"
    assert html_to_text("<table><tr><td>a<td>b<tr><td>c</table>").visible == "a\n\nb\n\nc"
    assert html_to_text("<ul><li>one<li>two</ul><br>tail<hr>end").visible == "one\n\ntwo\n\ntail\nend"
    link = html_to_text('<a href="https://a.example/">click <b>here')
    assert link.links == [("https://a.example/", "click here")]
    # an unclosed hiding element hides everything after it
    hidden = html_to_text('x<span style="display:none">gone<p>still gone')
    assert (hidden.visible, hidden.hidden) == ("x", "gone still gone")


def test_a_link_opened_inside_a_link_ends_the_first() -> None:
    rendered = html_to_text('<a href="https://1.example/">one<a href="https://2.example/">two</a>')
    assert rendered.links == [("https://1.example/", "one"), ("https://2.example/", "two")]
    assert rendered.visible == "onetwo"


@pytest.mark.parametrize("opening", [
    '<p style="display:none">', '<p STYLE="Visibility : Hidden">', '<p style="font-size:0px">',
    '<p style="font-size:0pt!important">', '<p style="opacity:0.0;">', '<p style="max-height:0px">',
    "<p hidden>", "<noscript>", '<font style="font-size:0">', '<p style="color:red;DISPLAY:NONE">',
    '<p style="v\u0131s\u0131b\u0131l\u0131ty:h\u0131dden">',  # a case-insensitive match, as before the ASCII fast path
])
def test_hiding_styles_and_attributes(opening: str) -> None:
    closing = "</" + opening[1:].split()[0].rstrip(">") + ">"
    rendered = html_to_text(f"seen {opening}stuffed words{closing} seen")
    assert rendered.hidden == "stuffed words"
    assert "stuffed" not in rendered.visible


@pytest.mark.parametrize("style", ["font-size:0.5em", "opacity:0.5", "display:block", "margin:0", ""])
def test_styles_that_do_not_hide(style: str) -> None:
    rendered = html_to_text(f'<p style="{style}">plain words</p>')
    assert (rendered.visible, rendered.hidden) == ("plain words", "")


def test_a_hidden_block_ends_no_line_when_it_closes() -> None:
    """Its opening line break is shown, its closing one is inside what it hides."""
    assert html_to_text('a<div style="display:none"></div>b').visible == "a\nb"
    assert html_to_text("a<div></div>b").visible == "a\n\nb"


def test_never_shown_content_is_neither_text_nor_hidden_text_but_its_links_count() -> None:
    rendered = html_to_text(
        "<!DOCTYPE html><!-- note --><head><title>T</title><style>p{}</style></head>"
        "<script>alert(1)</script><iframe>if</iframe><object>obj</object>"
        '<template><a href="https://t.example/">tt</a></template>'
        '<svg><a href="https://x.example/">t</a></svg>shown'
    )
    assert (rendered.visible, rendered.hidden) == ("shown", "")
    assert rendered.links == [("https://x.example/", "")]  # template content is not part of the page


def test_images_forms_and_areas() -> None:
    rendered = html_to_text(
        '<a href="https://i.example/"><img alt="Sign in" src=" https://img.example/x.png "></a>'
        '<form action=" https://f.example/post "><input></form>'
        '<map><area href=" https://m.example/ " alt=" Map "></map><img alt="no source">'
    )
    # a form's action is where what is typed into it goes: a destination like a link's, after the links
    assert rendered.links == [("https://i.example/", "Sign in"), ("https://f.example/post", "")]
    assert rendered.forms == ["https://f.example/post"]
    assert rendered.areas == [("https://m.example/", "Map")]
    assert rendered.images == ["https://img.example/x.png"]


def test_white_space_and_nul_characters() -> None:
    assert html_to_text("x\t\u00a0 y\r\n\n \n\nz").visible == "x y\n\nz"
    assert html_to_text("a\x00b").visible == "a\ufffdb"
    assert html_to_text("").visible == ""


def test_nesting_deeper_than_the_limit_is_left_out_and_its_text_kept() -> None:
    """50,000 nested <div> (the tree builder's slowest shape: 10 s before) keep every word;
    HTML that nests less is read unchanged."""
    from mailguard.htmltext import MAX_NESTING, NESTING_CHECK_TAGS, _flatten

    deep = "<div>word " * 50_000 + "<a href='https://x.example/'>click</a>"
    rendered = html_to_text(deep)
    assert rendered.visible.count("word") == 50_000
    assert rendered.links == [("https://x.example/", "click")]
    lists = html_to_text("<ul><li>item " * 20_000)
    assert lists.visible.count("item") == 20_000
    shallow = ("<div>" * (MAX_NESTING - 1) + "x" + "</div>" * (MAX_NESTING - 1)) * (NESTING_CHECK_TAGS // MAX_NESTING)
    assert _flatten(shallow) == shallow
