"""The short ways message.py takes around the stdlib (issue 16) give what the stdlib gives."""
from __future__ import annotations

import email
import email.utils
from email import policy

import pytest

from mailguard.message import _message_from_text, getaddresses


def _dump(msg: email.message.Message) -> list:
    state = dict(vars(msg))
    state.pop("policy", None)
    state["defects"] = [(type(d).__name__, d.args) for d in msg.defects]
    payload = state.pop("_payload")
    state["_payload"] = [_dump(p) for p in payload] if isinstance(payload, list) else payload
    return sorted(state.items())


@pytest.mark.parametrize("raw", [
    b"", b"\n", b"Subject: x", b"Subject: x\n\n", b"Subject: x\r\rbody\r", b"Subject: x\r\n\r\nbody\r\n",
    b"Subject: x\nnot a header\nbody\n", b"From a@b Mon\nSubject: x\n\nbody\n", b"Subject: x\nFrom a@b\n\nbody\n",
    b" cont\nSubject: x\n\nb\n", b":bad\nSubject: x\n\nb\n", b"Subject:\xe9\n\n\xe9 8-bit\n",
    b"Content-Type: MULTIPART/mixed; boundary=b\n\n--b\n\nx\n--b--\n", b"X-Note: multipart\n\nbody\n",
    b"Content-Type: message/rfc822\n\nSubject: in\n\nb\n", b"Subject: x\n\r\nbody", b"Subject: x\x0b\n\nb\x0c\x1c\x85\n",
])
def test_message_from_text_is_message_from_bytes(raw: bytes) -> None:
    expected = email.message_from_bytes(raw, policy=policy.compat32)
    assert _dump(_message_from_text(raw.decode("ascii", "surrogateescape"))) == _dump(expected)


@pytest.mark.parametrize("values", [
    ["a@b.example"], [" <a@b.example> "], ["Some Name <a.b@c.example>"], ['"Quoted, Name" <a@b.example>'],
    ["J. Smith<a@b.example>"], ['"" X <a@b.example>'], ["Amazon, <x@evil.example>"], ["\x0b@b.example"],
    ["a.\u00a0@b.example"], ["Name (comment) <a@b.example>"], ["group: a@b.example, c@d.example;"],
    ["a@b.example", "Other <c@d.example>"], [""], [], ["<a@b@c.example>"], ["a@b.example."],
])
def test_getaddresses_is_the_stdlib_one(values: list[str]) -> None:
    assert getaddresses(values) == email.utils.getaddresses(values)
