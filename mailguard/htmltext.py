"""HTML to the text a person actually sees, plus the links with the text shown for them.

Phishing hides words from people and shows them to filters (and the other way round):
``display:none`` spans, zero-size fonts, text in <style> or <title>. Only visible text is
what the language analyzer should read; the hidden text is kept apart as its own signal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# Content a mail client never renders as text: dropped, not counted as hidden text.
_NEVER_SHOWN_TAGS = {"script", "style", "head", "title", "template", "svg", "object", "iframe"}
# Content shown or not depending on the client: kept apart as hidden text.
_MAYBE_HIDDEN_TAGS = {"noscript"}
_VOID_TAGS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr",
}
_BLOCK_TAGS = {
    "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
    "section", "article", "header", "footer", "td", "th", "hr", "pre", "center", "form",
}
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.0+)?(?:px|pt|em|rem|%)?\s*(?:;|$|!)"
    r"|opacity\s*:\s*0(?:\.0+)?\s*(?:;|$|!)|max-height\s*:\s*0(?:px)?\s*(?:;|$|!)",
    re.I,
)
MAX_STACK = 512
MAX_IMAGES = 500  # <img src> addresses kept per HTML part


@dataclass
class RenderedHTML:
    visible: str
    hidden: str
    links: list[tuple[str, str]] = field(default_factory=list)  # (href, visible text)
    forms: list[str] = field(default_factory=list)  # form actions
    images: list[str] = field(default_factory=list)  # <img src> addresses, in order


class _Renderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, int]] = []  # (tag, 0 shown / 1 hidden by style / 2 never shown)
        self.hidden_depth = 0
        self.never_depth = 0
        self.visible: list[str] = []
        self.hidden: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.forms: list[str] = []
        self.images: list[str] = []
        self.anchor: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        amap = {k.lower(): (v or "") for k, v in attrs}
        if tag in _BLOCK_TAGS:
            self._emit("\n")
        if tag == "img" and amap.get("alt") and self.anchor is not None:
            self.anchor[1].append(amap["alt"])
        if tag == "img" and amap.get("src", "").strip() and len(self.images) < MAX_IMAGES:
            self.images.append(amap["src"].strip())
        if tag == "form" and amap.get("action"):
            self.forms.append(amap["action"].strip())
        if tag == "a" and "href" in amap:
            self._close_anchor()
            self.anchor = (amap["href"].strip(), [])
        if tag in _VOID_TAGS:
            return
        if tag in _NEVER_SHOWN_TAGS:
            hides = 2
        elif tag in _MAYBE_HIDDEN_TAGS or "hidden" in amap or _HIDDEN_STYLE.search(amap.get("style", "")):
            hides = 1
        else:
            hides = 0
        if len(self.stack) < MAX_STACK:
            self.stack.append((tag, hides))
            self._count(hides, +1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag.lower() not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
        if tag == "a":
            self._close_anchor()
        if tag in _BLOCK_TAGS:
            self._emit("\n")
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                for _, hides in self.stack[index:]:
                    self._count(hides, -1)
                del self.stack[index:]
                break

    def _count(self, hides: int, step: int) -> None:
        if hides == 2:
            self.never_depth += step
        elif hides == 1:
            self.hidden_depth += step

    def handle_data(self, data: str) -> None:
        self._emit(data)

    def _emit(self, text: str) -> None:
        if self.never_depth > 0:
            return
        if self.hidden_depth > 0:
            if text.strip():
                self.hidden.append(text)
            return
        self.visible.append(text)
        if self.anchor is not None:
            self.anchor[1].append(text)

    def _close_anchor(self) -> None:
        if self.anchor is not None:
            href, parts = self.anchor
            self.links.append((href, " ".join("".join(parts).split())))
            self.anchor = None


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*(?:\n[ \t\r\f\v]*)+")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


def _tidy(text: str) -> str:
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def html_to_text(html: str) -> RenderedHTML:
    renderer = _Renderer()
    try:
        renderer.feed(html)
        renderer.close()
    except (AssertionError, ValueError, IndexError):  # very old HTMLParser quirks on garbage
        pass
    renderer._close_anchor()
    return RenderedHTML(
        _tidy("".join(renderer.visible)), _tidy(" ".join(renderer.hidden)), renderer.links, renderer.forms, renderer.images
    )
