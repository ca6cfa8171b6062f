"""HTML to the text a person actually sees, plus the links with the text shown for them.

Phishing hides words from people and shows them to filters (and the other way round):
``display:none`` spans, zero-size fonts, text in <style> or <title>. Only visible text is
what the language analyzer should read; the hidden text is kept apart as its own signal.

The HTML is parsed by Lexbor (selectolax, C) into the tree a browser would build, and that
tree is walked once without recursion: ``html.parser`` cost about 70 % of parsing a message
and a per-token Python callback for every tag. The tree also settles what is nested in what
the way a mail client does (an unclosed ``<p>`` ends where the next block starts).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

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
# Tags whose attributes matter beyond ``style`` and ``hidden``.
_ATTRIBUTE_TAGS = {"img", "form", "a", "area"}
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.0+)?(?:px|pt|em|rem|%)?\s*(?:;|$|!)"
    r"|opacity\s*:\s*0(?:\.0+)?\s*(?:;|$|!)|max-height\s*:\s*0(?:px)?\s*(?:;|$|!)",
    re.I,
)
MAX_STACK = 512  # nesting deeper than this no longer changes what counts as hidden
MAX_IMAGES = 500  # <img src> addresses kept per HTML part
_SHOWN, _HIDDEN, _NEVER = 0, 1, 2


@dataclass
class RenderedHTML:
    visible: str
    hidden: str
    links: list[tuple[str, str]] = field(default_factory=list)  # (href, visible text)
    forms: list[str] = field(default_factory=list)  # form actions
    areas: list[tuple[str, str]] = field(default_factory=list)  # image-map click areas: (href, alt)
    images: list[str] = field(default_factory=list)  # <img src> addresses, in order


class _Renderer:
    """Collects visible text, hidden text, links, forms and images during one tree walk."""

    def __init__(self) -> None:
        self.hidden_depth = 0
        self.never_depth = 0
        self.visible: list[str] = []
        self.hidden: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.forms: list[str] = []
        self.areas: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.anchor: tuple[str, list[str]] | None = None

    def enter(self, tag: str, node: LexborNode, depth: int) -> int:
        """Handle a start tag; returns how the element hides its content (-1: void, or
        too deep to count)."""
        if tag in _BLOCK_TAGS:
            self.emit("\n")
        attrs = node.attributes
        if tag in _ATTRIBUTE_TAGS:
            if tag == "img":
                if attrs.get("alt") and self.anchor is not None:
                    self.anchor[1].append(attrs["alt"])
                src = (attrs.get("src") or "").strip()
                if src and len(self.images) < MAX_IMAGES:
                    self.images.append(src)
            elif tag == "form":
                if attrs.get("action"):
                    self.forms.append(attrs["action"].strip())
            elif tag == "area":  # a click area of a picture (<map>): a link that shows no text
                if attrs.get("href") and len(self.areas) < MAX_IMAGES:
                    self.areas.append(((attrs["href"] or "").strip(), (attrs.get("alt") or "").strip()))
            elif "href" in attrs:
                self.close_anchor()
                self.anchor = ((attrs["href"] or "").strip(), [])
        if tag in _VOID_TAGS or depth >= MAX_STACK:
            return -1
        if tag in _NEVER_SHOWN_TAGS:
            hides = _NEVER
        elif tag in _MAYBE_HIDDEN_TAGS or "hidden" in attrs or _HIDDEN_STYLE.search(attrs.get("style") or ""):
            hides = _HIDDEN
        else:
            hides = _SHOWN
        self.count(hides, +1)
        return hides

    def leave(self, tag: str, hides: int) -> None:
        if tag == "a":
            self.close_anchor()
        if tag in _BLOCK_TAGS:
            self.emit("\n")
        self.count(hides, -1)

    def count(self, hides: int, step: int) -> None:
        if hides == _NEVER:
            self.never_depth += step
        elif hides == _HIDDEN:
            self.hidden_depth += step

    def emit(self, text: str) -> None:
        if self.never_depth > 0:
            return
        if self.hidden_depth > 0:
            if text.strip():
                self.hidden.append(text)
            return
        self.visible.append(text)
        if self.anchor is not None:
            self.anchor[1].append(text)

    def close_anchor(self) -> None:
        if self.anchor is not None:
            href, parts = self.anchor
            self.links.append((href, " ".join("".join(parts).split())))
            self.anchor = None

    def walk(self, root: LexborNode) -> None:
        """Depth first over the tree with an explicit stack, so hostile nesting cannot hit
        Python's recursion limit."""
        open_elements: list[tuple[str, int]] = []
        node: LexborNode | None = root.first_child
        while node is not None:
            if node.is_text_node:
                self.emit(node.text_content or "")
            elif node.is_element_node:
                tag = node.tag.lower()
                hides = self.enter(tag, node, len(open_elements))
                if tag not in _VOID_TAGS:
                    child = node.first_child
                    if child is not None:
                        open_elements.append((tag, hides))
                        node = child
                        continue
                    self.leave(tag, hides)
            # next sibling, or climb out of the elements this one was the last child of
            while node is not None and node.next is None:
                node = node.parent
                if not open_elements or node is None:
                    return
                tag, hides = open_elements.pop()
                self.leave(tag, hides)
            node = node.next if node is not None else None


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*(?:\n[ \t\r\f\v]*)+")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


def _tidy(text: str) -> str:
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def html_to_text(html: str) -> RenderedHTML:
    renderer = _Renderer()
    tree = LexborHTMLParser(html.replace("\x00", "\ufffd"))
    document = tree.root.parent if tree.root is not None else None
    if document is not None:
        renderer.walk(document)
    renderer.close_anchor()
    return RenderedHTML(
        _tidy("".join(renderer.visible)), _tidy(" ".join(renderer.hidden)), renderer.links, renderer.forms, renderer.areas,
        renderer.images,
    )
