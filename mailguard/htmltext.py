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
    """Collects visible text, hidden text, links, forms and images during one tree walk.

    The walk is one loop with its state in local variables: per-node method calls were
    about two thirds of turning a message's HTML into text (issue 16)."""

    def __init__(self) -> None:
        self.visible: list[str] = []
        self.hidden: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.forms: list[str] = []
        self.areas: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.anchor: tuple[str, list[str]] | None = None

    def close_anchor(self) -> None:
        if self.anchor is not None:
            href, parts = self.anchor
            self.links.append((href, " ".join("".join(parts).split())))
            self.anchor = None

    def walk(self, root: LexborNode) -> None:  # noqa: C901 - one loop on purpose, see the class
        """Depth first over the tree with an explicit stack, so hostile nesting cannot hit
        Python's recursion limit. Text goes to ``visible`` (and the open link's text) unless
        inside a never-shown element (dropped) or a hidden one (to ``hidden`` if not blank);
        block elements add a line break when they open and close."""
        visible, hidden, images, forms = self.visible, self.hidden, self.images, self.forms
        hidden_depth = never_depth = 0
        open_elements: list[tuple[str, int]] = []
        node: LexborNode | None = root.first_child
        while node is not None:
            step_up = True
            if node.is_text_node:
                text = node.text_content or ""
                if never_depth <= 0:
                    if hidden_depth > 0:
                        if text.strip():
                            hidden.append(text)
                    else:
                        visible.append(text)
                        if self.anchor is not None:
                            self.anchor[1].append(text)
            elif node.is_element_node:
                tag = node.tag.lower()
                if tag in _BLOCK_TAGS and never_depth <= 0 and hidden_depth <= 0:
                    visible.append("\n")
                    if self.anchor is not None:
                        self.anchor[1].append("\n")
                attrs = node.attributes
                if tag in _ATTRIBUTE_TAGS:
                    if tag == "img":
                        if attrs.get("alt") and self.anchor is not None:
                            self.anchor[1].append(attrs["alt"])
                        src = (attrs.get("src") or "").strip()
                        if src and len(images) < MAX_IMAGES:
                            images.append(src)
                    elif tag == "form":
                        if attrs.get("action"):
                            forms.append(attrs["action"].strip())
                    elif tag == "area":  # a click area of a picture (<map>): a link that shows no text
                        if attrs.get("href") and len(self.areas) < MAX_IMAGES:
                            self.areas.append(((attrs["href"] or "").strip(), (attrs.get("alt") or "").strip()))
                    elif "href" in attrs:
                        self.close_anchor()
                        self.anchor = ((attrs["href"] or "").strip(), [])
                if tag not in _VOID_TAGS:
                    if len(open_elements) >= MAX_STACK:
                        hides = -1
                    elif tag in _NEVER_SHOWN_TAGS:
                        hides = _NEVER
                        never_depth += 1
                    elif (
                        tag in _MAYBE_HIDDEN_TAGS
                        or (attrs and ("hidden" in attrs or _HIDDEN_STYLE.search(attrs.get("style") or "")))
                    ):
                        hides = _HIDDEN
                        hidden_depth += 1
                    else:
                        hides = _SHOWN
                    open_elements.append((tag, hides))
                    child = node.first_child
                    if child is not None:
                        node = child
                        continue
                    step_up = False  # a childless element is left at once, before climbing
            # leave the elements this node was the last child of, then on to the next sibling
            following = node.next if step_up else None
            while following is None:
                if step_up:
                    node = node.parent
                    if node is None:
                        return
                step_up = True
                if not open_elements:
                    return
                tag, hides = open_elements.pop()
                if tag == "a":
                    self.close_anchor()
                if tag in _BLOCK_TAGS and never_depth <= 0 and hidden_depth <= 0:
                    visible.append("\n")
                    if self.anchor is not None:
                        self.anchor[1].append("\n")
                if hides == _NEVER:
                    never_depth -= 1
                elif hides == _HIDDEN:
                    hidden_depth -= 1
                following = node.next
            node = following


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
