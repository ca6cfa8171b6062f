"""Messages built to make the scanner slow get a verdict after work that grows with their
size, not faster. No test here is timed (the machines are shared): each counts the work
done, or checks that the slow stdlib path is not taken, or that the linear replacement
gives what the slow one gives.

- The parameters of Content-Type and Content-Disposition (charset, name, filename,
  boundary): the stdlib's ``email.message._parseparam`` is quadratic (a 64 KB header of
  ``a="`` then ";" took 2.3 s a read, several reads a part); mailguard.message splits them
  in one pass, once per header value.
- The tags ``mailguard.htmltext._flatten`` reads in an HTML part with many "<": its regex
  backtracked over every "<" that no ">" closes ("<a" 5,000 times held a scanner for
  minutes); ``_tags`` finds the same tags in linear time.
"""
from __future__ import annotations

import email.message
import random
import re

import pytest

import mailguard
from mailguard import Action
from mailguard import htmltext, message as message_module
from mailguard.htmltext import _TAG, _tags, html_to_text
from mailguard.message import _split_params

pytestmark = pytest.mark.timeout(120)  # a hang guard, as in test_malformed, not a speed assertion


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner()


def rules(verdict: mailguard.Verdict) -> set[str]:
    return {f.rule for f in verdict.findings}


# ----------------------------------------------------------------- MIME parameters


def test_parameters_are_split_as_the_stdlib_splits_them() -> None:
    rng = random.Random(2047)
    samples = ['text/plain; charset="utf-8"', 'attachment; filename="a;b.pdf"; size=3', 'x; a="\\";"; b=c',
               "", ";", ";;", 'a="', "multipart/mixed; boundary=\"=_b;1\"; type=text/html"]
    samples += ["".join(rng.choice(';"\\= a\tB*\'%') for _ in range(rng.randint(0, 30))) for _ in range(20_000)]
    for value in samples:
        assert _split_params(value) == email.message._parseparam(value), value


def hostile_parameters_message() -> bytes:
    """An attachment whose Content-Type holds 60,000 ";" inside an unclosed quote: each
    read by the stdlib counted the quotes again from the start for every ";"."""
    return (b'From: billing@example.com\nTo: frontdesk@practice.example\nSubject: statement\nMIME-Version: 1.0\n'
            b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nSee attached.\n'
            b'--b\nContent-Disposition: attachment\n'
            b'Content-Type: application/octet-stream; name="statement.exe"; junk="' + b";" * 60_000 + b'\n\n'
            b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\n--b--\n")


def test_a_scan_never_uses_the_quadratic_stdlib_splitter(scanner: mailguard.Scanner,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(value: str) -> list[str]:
        raise AssertionError("email.message._parseparam was called")

    monkeypatch.setattr(email.message, "_parseparam", refuse)
    verdict = scanner.scan(hostile_parameters_message())
    assert not verdict.errors
    parsed = scanner.parse(hostile_parameters_message())
    assert [a.filename for a in parsed.attachments] == ["statement.exe"]
    assert verdict.action >= Action.QUARANTINE  # an executable attachment, as without the junk


def test_each_header_value_is_split_once(scanner: mailguard.Scanner, monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[int] = []

    def counted(value: object) -> list[str]:
        lengths.append(len(str(value)))
        return _split_params(value)

    monkeypatch.setattr(message_module, "_split_params", counted)
    raw = (b"From: billing@example.com\nSubject: notes\nMIME-Version: 1.0\n"
           b'Content-Type: text/plain; charset=utf-8; name="notes.txt"; junk="' + b";" * 60_000 + b"\n\nhello\n")
    parsed = scanner.parse(raw)
    # the long Content-Type is read for a file name and for the charset, but split once
    assert sum(1 for n in lengths if n > 60_000) == 1
    assert [a.filename for a in parsed.attachments] == ["notes.txt"]


# ----------------------------------------------------------------- HTML tags


def test_tags_are_the_ones_the_regex_finds() -> None:
    rng = random.Random(512)
    samples = ['<IMGsrc="http://a.example/x.gif" alt="PayPal"border=0>', "<img src=a width=1 height=8</td>",
               '<a href="x>y">t</a>', "</font\n<p>", "<a<b>", '<a "x <b>', "<div title='<b>'>x</div>"]
    for alphabet in ('<a"\'> /', '<a"\'> /b\n', "<</a>\"", "<a'b >\"/\t", 'ab<>"\' /x'):
        samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(6_000)]
    for html in samples:
        expected = [(m.start(), m.end(), bool(m.group(1)), m.group(2)) for m in _TAG.finditer(html)]
        assert list(_tags(html)) == expected, html


class _CountingPattern:
    """Stands in for a compiled pattern and adds up how many characters its searches read."""

    def __init__(self, pattern: re.Pattern[str], tally: list[int]) -> None:
        self.pattern, self.tally = pattern, tally

    def search(self, text: str, pos: int = 0) -> re.Match[str] | None:
        found = self.pattern.search(text, pos)
        self.tally[0] += (found.start() if found is not None else len(text)) - pos + 1
        return found


def characters_searched(html: str, monkeypatch: pytest.MonkeyPatch) -> int:
    tally = [0]
    with monkeypatch.context() as patch:
        for name in ("_TAG_START", "_NAME_END", "_SPECIAL"):
            patch.setattr(htmltext, name, _CountingPattern(getattr(htmltext, name), tally))
        list(_tags(html))
    return tally[0]


@pytest.mark.parametrize("unit", ["<a", "<a ", '<a"', "<a '", '<a "<b '])
def test_unclosed_tags_cost_linear_work(unit: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ">" closes these tags: every "<" starts a tag that the old regex read to the end
    of the part, over every way of splitting it. Four times the HTML is at most about four
    times the characters searched."""
    small = characters_searched(unit * 2_000, monkeypatch)
    large = characters_searched(unit * 8_000, monkeypatch)
    assert large <= 4 * small + 64


def test_a_part_of_unclosed_tags_gets_a_verdict(scanner: mailguard.Scanner) -> None:
    """Past NESTING_CHECK_TAGS "<" a part's tags are read by ``_tags``: 5,000 "<a" (10 KB)
    held the old regex for minutes."""
    html = b"<p>Your statement is ready.</p>" + b"<a" * 5_000
    raw = (b"From: billing@example.com\nTo: frontdesk@practice.example\nSubject: statement\nMIME-Version: 1.0\n"
           b"Content-Type: text/html; charset=utf-8\n\n" + html + b"\n")
    verdict = scanner.scan(raw)
    assert isinstance(verdict.action, Action) and not verdict.errors
    assert "Your statement is ready." in html_to_text(html.decode()).visible


def test_deep_nesting_is_still_flattened_after_unclosed_tags() -> None:
    """Unclosed tags before 100,000 nested <div> do not stop the nesting limit."""
    html = '<a "' + "<a " * 2_000 + "<div>" * 100_000 + "x" + "</div>" * 100_000
    flat = htmltext._flatten(html)
    assert flat.count("<div>") <= htmltext.MAX_NESTING + 1


# ----------------------------------------------------------------- script links


def test_script_links_are_found_as_the_regex_finds_them() -> None:
    from mailguard.analyzers.links import _SCRIPT_HREF, script_href

    rng = random.Random(6376)
    pieces = ["<a", "<A ", " href=", "HREF =", "'", '"', "javascript:", "data:", "vbscript :", ">", " ", "x",
              "data:application/", "<b>", "\n", "ahref=", "<abbr href=javascript:", " " * 260]
    samples = ['<a href="javascript:alert(1)">x</a>', "<a title=x\nhref = ' data:text/html,hi'>", "<ahref=javascript:x>"]
    samples += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(30_000)]
    for html in samples:
        found = _SCRIPT_HREF.search(html)
        assert script_href(html) == (found.group(1).lower() if found else ""), html


def test_a_part_of_unclosed_anchors_still_has_its_script_link_found(scanner: mailguard.Scanner,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """200,000 "<a" (400 KB) before a javascript: link: the reference regex tried 500
    characters after each of them (about 3 s); the analyzer no longer runs it at all."""
    from mailguard.analyzers import links

    class Refuse:
        def search(self, *args: object) -> None:
            raise AssertionError("the 500-character regex was run")

    monkeypatch.setattr(links, "_SCRIPT_HREF", Refuse())
    html = b"<p>Your statement is ready.</p>" + b"<a" * 200_000 + b'<a href="javascript:steal()">Open</a>'
    raw = (b"From: billing@example.com\nTo: frontdesk@practice.example\nSubject: statement\nMIME-Version: 1.0\n"
           b"Content-Type: text/html; charset=utf-8\n\n" + html + b"\n")
    verdict = scanner.scan(raw)
    assert not verdict.errors and "LINKS_SCRIPT_URL" in rules(verdict)
