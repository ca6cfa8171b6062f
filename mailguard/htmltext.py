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
from typing import Any, Iterator
from urllib.parse import urljoin

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
# What a person cannot read either, each found by a pattern that begins with a literal (which
# the regex engine looks for first, unlike an alternation tried at every position): a font
# of at most one pixel ("font-size:1px", "0.5px"), text pushed off the screen ("left:-9999px",
# "text-indent:-5000px"), scaled or clipped to nothing, a box of no size whose overflow is cut.
_TINY_FONT = re.compile(r"font-size\s*:\s*(?:0?\.\d+|1)(?:px|pt)\s*(?:;|$|!)")
_FAR_OFF = re.compile(r":\s*-\d{3,}(?:\.\d+)?(?:px|pt|em)?\s*(?:;|$|!)")
_OFF_SCREEN_PROPERTIES = frozenset({"left", "top", "text-indent", "margin-left", "margin-top"})
_SCALED_TO_NOTHING = re.compile(r"scale\(\s*0(?:\.0+)?\s*\)")
_CLIPPED_TO_NOTHING = re.compile(r"rect\(\s*0(?:px)?[\s,]+0(?:px)?[\s,]+0(?:px)?[\s,]+0")
_ZERO_BOX = re.compile(r"(?:height|width)\s*:\s*0(?:px)?\s*(?:;|$|!)")
# Text drawn in the colour of what is behind it is as invisible as display:none.
_HEX_COLOR = re.compile(r"^#?([0-9a-f]{3}|[0-9a-f]{6})$", re.I)
_RGB_COLOR = re.compile(r"^rgba?\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*(?:,\s*[\d.]+\s*)?\)$", re.I)
_NAMED_COLORS = {"white": (255, 255, 255), "black": (0, 0, 0), "snow": (255, 250, 250), "ivory": (255, 255, 240),
                 "whitesmoke": (245, 245, 245), "ghostwhite": (248, 248, 255)}
COLOR_DISTANCE = 24  # sum of the channels' differences below which text is not seen on its background
MAX_COLOR_ANCESTORS = 64  # elements looked up for the background behind light text
# The same without re.I, for lower-cased ASCII styles: several times faster than the
# case-insensitive search (which must also match "ı", "ſ" and the Kelvin sign, hence the
# ASCII test), and inline styles are on most elements of a designed mail.
_HIDDEN_STYLE_LOWER = re.compile(_HIDDEN_STYLE.pattern)
MAX_STACK = 512  # nesting deeper than this no longer changes what counts as hidden
# Deep nesting is the one HTML shape that costs more than its size: the HTML tree builder
# (Lexbor, as the standard's algorithm) looks down the stack of open elements for every
# <div>, <ul> or other block start tag, so 50,000 nested <div> (250 KB) took 10 s and a
# megabyte would take minutes. Chrome's parser stops nesting at 512 for the same reason.
# A part with more than NESTING_CHECK_TAGS "<" is read tag by tag (``_flatten``) and start
# and end tags deeper than MAX_NESTING dropped, their text kept.
MAX_NESTING = 512
NESTING_CHECK_TAGS = 4096
MAX_IMAGES = 500  # <img src> addresses kept per HTML part


@dataclass
class RenderedHTML:
    visible: str
    hidden: str
    links: list[tuple[str, str]] = field(default_factory=list)  # (href, visible text)
    forms: list[str] = field(default_factory=list)  # form actions
    areas: list[tuple[str, str]] = field(default_factory=list)  # image-map click areas: (href, alt)
    images: list[str] = field(default_factory=list)  # <img src> addresses, in order


# What the walk does with a node, by its ``tag``: one dict lookup instead of a test per set.
_BLOCK, _VOID, _NEVER, _MAYBE_HIDDEN, _IMG, _FORM, _AREA, _A, _TEXT, _OTHER = (1 << n for n in range(10))
_KEPT_ATTRIBUTES = _IMG | _FORM | _AREA | _A  # tags whose attributes are read
_TAG_KIND: dict[str | None, int] = {"-text": _TEXT, "-comment": _OTHER, "-doctype": _OTHER, "-document": _OTHER}
for _tags, _kind in ((_BLOCK_TAGS, _BLOCK), (_VOID_TAGS, _VOID), (_NEVER_SHOWN_TAGS, _NEVER),
                     (_MAYBE_HIDDEN_TAGS, _MAYBE_HIDDEN), ({"img"}, _IMG), ({"form"}, _FORM), ({"area"}, _AREA),
                     ({"a"}, _A)):
    for _tag in _tags:
        _TAG_KIND[_tag] = _TAG_KIND.get(_tag, 0) | _kind
assert set(_TAG_KIND) >= _ATTRIBUTE_TAGS
# Common tags that need nothing, so they are found without lower-casing the name.
_TAG_KIND.update(dict.fromkeys(
    ("html", "body", "span", "font", "b", "i", "u", "strong", "em", "tbody", "thead", "small", "sup", "sub", "o:p",
     "label", "big", "strike", "s", "code", "map", "colgroup", "caption", "abbr", "nobr", "dl", "dt", "dd"), 0))
del _tags, _kind, _tag
_HIDING = _NEVER | _MAYBE_HIDDEN
# What leaving an open element does, settled when it is entered: the hidden and never-shown
# depths are the same then as when it is left, since everything inside it is balanced.
_CLOSES_LINK, _ENDS_LINE, _ENDS_NEVER, _ENDS_HIDDEN = _A, 1 << 10, 1 << 11, 1 << 12


def _kind_of(tag: str | None) -> int:
    """The kind of a tag not in ``_TAG_KIND`` as Lexbor names it (an unknown element, an
    SVG name in camel case, a node that is neither element nor text)."""
    if tag is None or tag[:1] == "-":
        return _OTHER
    return _TAG_KIND.get(tag.lower(), 0)


def _hidden_elements(tree: LexborHTMLParser) -> set[int]:
    """The elements (``mem_id``) whose own attributes hide them: ``hidden`` or a hiding
    ``style``. Found by one CSS query in C, so the walk reads no attributes of the many
    elements that have neither, and none at all when nothing is hidden this way."""
    found: set[int] = set()
    coloured: list[tuple[LexborNode, tuple[int, int, int], tuple[int, int, int] | str | None]] = []
    painted: list[tuple[int, int, int]] = []  # the background colours the page sets
    read: dict[tuple[str, str | None, str | None, str | None], tuple[Any, Any]] = {}
    for node in tree.css("[style], [hidden], font[color], [bgcolor]"):
        attrs = node.attributes
        style = attrs.get("style") or ""
        if "hidden" in attrs or _hiding_style(style):
            found.add(node.mem_id)
            continue
        font = node.tag == "font"
        key = (style, attrs.get("color") if font else None, attrs.get("bgcolor"), attrs.get("background"))
        known = read.get(key)
        if known is None:  # newsletters repeat one inline style on many cells: each is read once
            color = _text_color(style, key[1]) if "olor" in style or "OLOR" in style or font else None
            background = _own_background(style, attrs) if "ackground" in style or "ACKGROUND" in style or \
                "bgcolor" in attrs or "background" in attrs else None
            known = read[key] = (color, background)
        color, background = known
        if isinstance(background, tuple):
            painted.append(background)
        if color is not None:
            coloured.append((node, color, background))
    # only text of a colour some background of the page has can vanish into one: most text
    # colours (#333 on #fff) are none of them, and need no look at their ancestors
    if painted:  # distinct colours and backgrounds compared once each (a page repeats a few many times)
        backdrops = set(painted)
        near: dict[tuple[int, int, int], bool] = {}
        for color in {c[1] for c in coloured}:
            near[color] = any(_same_color(color, p) for p in backdrops)
        coloured = [c for c in coloured if near[c[1]]]
    else:
        coloured = []
    if coloured:
        backgrounds: dict[int, tuple[int, int, int] | str | None] = {}
        sheet: bool | None = None  # whether a style sheet sets backgrounds, asked once if needed
        for node, color, background in coloured:
            if background is None:
                if sheet is None:
                    sheet = _sheet_sets_background(tree)
                if sheet:
                    continue  # a class may paint what is behind the text: the ancestors' colours do not say
                background = _background_behind(node, backgrounds)
            if isinstance(background, tuple) and _same_color(color, background) and \
                    all(inner.mem_id == node.mem_id for inner in node.css(_RECOLOURING)):
                found.add(node.mem_id)
    return found


def _sheet_sets_background(tree: LexborHTMLParser) -> bool:
    """Whether a style sheet (<style>) sets a background anywhere."""
    return any("background" in (node.text() or "").lower() for node in tree.css("style"))


# Inside an element whose text is drawn in its background's colour, an element that sets a
# colour of its own may well be readable: then the element is not taken for hidden.
_RECOLOURING = "[style*=color], [style*=COLOR], [style*=Color], font[color], [bgcolor], [background]"


def _background_behind(node: LexborNode, known: dict[int, tuple[int, int, int] | str | None]) -> \
        tuple[int, int, int] | str | None:
    """The background the nearest ancestor sets explicitly (a colour, or "image"), None when
    none does: the page's own colour is not assumed (a style sheet or the mail program may
    set it), so light text with no background of its own is never taken for hidden."""
    parent = node.parent
    path: list[int] = []
    background: tuple[int, int, int] | str | None = None
    for _ in range(MAX_COLOR_ANCESTORS):
        if parent is None or parent.tag in (None, "-document"):
            break
        if parent.mem_id in known:
            background = known[parent.mem_id]
            break
        path.append(parent.mem_id)
        attrs = parent.attributes
        background = _own_background(attrs.get("style") or "", attrs)
        if background is not None:
            break
        parent = parent.parent
    else:
        background = "image"  # too deep to tell
    for mem_id in path:
        known[mem_id] = background
    return background


def _hiding_style(style: str) -> bool:
    """Whether an inline style hides its element (see ``_HIDDEN_STYLE`` and the patterns after it)."""
    if not style:
        return False
    if style.isascii():
        lower = style.lower()
        if _HIDDEN_STYLE_LOWER.search(lower) is not None:
            return True
    elif _HIDDEN_STYLE.search(style) is not None:
        return True
    else:
        lower = style.lower()
    if "font-size" in lower and _TINY_FONT.search(lower) is not None:
        return True
    if ":-" in lower or ": -" in lower:
        for found in _FAR_OFF.finditer(lower):
            name = lower[:found.start()].rpartition(";")[2].strip()
            if name in _OFF_SCREEN_PROPERTIES:
                return True
    if "scale(" in lower and _SCALED_TO_NOTHING.search(lower) is not None:
        return True
    if "rect(" in lower and "clip" in lower and _CLIPPED_TO_NOTHING.search(lower) is not None:
        return True
    return "overflow" in lower and "hidden" in lower and _ZERO_BOX.search(lower) is not None and \
        re.search(r"overflow\s*:\s*hidden", lower) is not None


def _last_value(lower: str, name: str) -> tuple[int, str] | None:
    """(position, value) of the last declaration of property ``name`` in a lower-cased inline
    style, found with str.rfind ("color" inside "background-color" is not it); None if none."""
    position = lower.rfind(name)
    while position >= 0:
        before = lower[position - 1] if position else ";"
        rest = lower[position + len(name):position + len(name) + 200].lstrip()
        if before in "; \t\r\n\"'" and rest[:1] == ":":
            return position, rest[1:].partition(";")[0].partition("!")[0].strip()
        position = lower.rfind(name, 0, position)
    return None


def _parse_color(value: str | None) -> tuple[int, int, int] | None:
    """An (r, g, b) colour from a CSS or attribute value; None for what is not read here."""
    if not value:
        return None
    value = value.strip().lower().removesuffix("important").strip()
    if value in _NAMED_COLORS:
        return _NAMED_COLORS[value]
    hexed = _HEX_COLOR.match(value)
    if hexed is not None:
        digits = hexed.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    rgb = _RGB_COLOR.match(value)
    if rgb is not None:
        return tuple(min(int(c), 255) for c in rgb.groups())  # type: ignore[return-value]
    return None


def _text_color(style: str, font_color: str | None) -> tuple[int, int, int] | None:
    if style and "color" in style:
        found = _last_value(style.lower(), "color")
        if found is not None:
            return _parse_color(found[1])
    elif style and "COLOR" in style.upper():
        found = _last_value(style.lower(), "color")
        if found is not None:
            return _parse_color(found[1])
    return _parse_color(font_color)


def _own_background(style: str, attrs: dict) -> tuple[int, int, int] | str | None:
    """An element's own background: a colour, "image" (a picture or a colour not read here:
    anything may be behind the text), or None when it sets none."""
    if attrs.get("background"):
        return "image"
    if style:
        lower = style.lower()
        if "background" in lower:
            found = max((f for f in (_last_value(lower, "background"), _last_value(lower, "background-color"))
                         if f is not None), default=None)
            if found is not None:
                value = found[1]
                color = _parse_color(value)
                if color is not None:
                    return color
                if value not in ("none", "transparent", "inherit", "initial", ""):
                    return "image"
    if attrs.get("bgcolor"):
        return _parse_color(attrs.get("bgcolor")) or "image"
    return None


def _same_color(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return abs(a[0] - b[0]) + abs(a[1] - b[1]) + abs(a[2] - b[2]) <= COLOR_DISTANCE


def _render(root: LexborNode, hidden_ids: set[int]) -> RenderedHTML:  # noqa: C901 - one loop on purpose
    """Depth first over the tree with an explicit stack, so hostile nesting cannot hit
    Python's recursion limit. Text goes to the visible text (and the open link's text)
    unless inside a never-shown element (dropped) or a hidden one (to the hidden text if
    not blank); block elements add a line break when they open and when they close.

    One loop with its state in local variables, reading of each node only what decides
    something (its ``tag``; the text of text nodes outside never-shown elements; the
    attributes of the few tags whose attributes are kept): each read from Lexbor makes a
    Python object, and per-node reads and method calls were most of turning a message's
    HTML into text (issue 16)."""
    visible: list[str] = []
    hidden: list[str] = []
    links: list[tuple[str, str]] = []
    forms: list[str] = []
    areas: list[tuple[str, str]] = []
    images: list[str] = []
    anchor_href = ""
    anchor_parts: list[str] | None = None  # the text of the open link, None when none is open
    hidden_depth = never_depth = 0
    shown = True  # neither hidden nor never shown: hidden_depth == never_depth == 0
    open_elements: list[tuple[LexborNode, int]] = []  # entered elements and what leaving each does
    kinds = _TAG_KIND
    node: LexborNode | None = root.first_child
    while node is not None:
        leaving = 0  # what leaving this node does: set for a childless element that closes something
        kind = kinds.get(node.tag)
        if kind is None:
            kind = _kind_of(node.tag)
        if kind == _TEXT:
            if shown:
                text = node.text_content
                if text:
                    visible.append(text)
                    if anchor_parts is not None:
                        anchor_parts.append(text)
            elif not never_depth:
                text = node.text_content
                if text and text.strip():
                    hidden.append(text)
        elif kind != _OTHER:  # an element
            if kind & _BLOCK and shown:
                visible.append("\n")
                if anchor_parts is not None:
                    anchor_parts.append("\n")
            if kind & _KEPT_ATTRIBUTES:
                attrs = node.attributes
                if kind & _IMG:
                    if attrs.get("alt") and anchor_parts is not None:
                        anchor_parts.append(attrs["alt"])
                    src = (attrs.get("src") or "").strip()
                    if src and len(images) < MAX_IMAGES:
                        images.append(src)
                elif kind & _FORM:
                    if attrs.get("action"):
                        forms.append(attrs["action"].strip())
                elif kind & _AREA:  # a click area of a picture (<map>): a link that shows no text
                    if attrs.get("href") and len(areas) < MAX_IMAGES:
                        areas.append(((attrs["href"] or "").strip(), (attrs.get("alt") or "").strip()))
                elif "href" in attrs:
                    if anchor_parts is not None:
                        links.append((anchor_href, " ".join("".join(anchor_parts).split())))
                    anchor_href, anchor_parts = (attrs["href"] or "").strip(), []
            if not kind & _VOID:  # void elements are left at once, and what a parser hung under one is skipped
                closes = kind & _CLOSES_LINK
                # nesting deeper than MAX_STACK no longer changes what counts as hidden
                if (kind & _HIDING or hidden_ids) and len(open_elements) < MAX_STACK:
                    if kind & _NEVER:
                        closes |= _ENDS_NEVER
                        never_depth += 1
                        shown = False
                    elif kind & _MAYBE_HIDDEN or node.mem_id in hidden_ids:
                        closes |= _ENDS_HIDDEN
                        hidden_depth += 1
                        shown = False
                if kind & _BLOCK and shown:
                    closes |= _ENDS_LINE
                child = node.first_child
                if child is not None:
                    open_elements.append((node, closes))
                    node = child
                    continue
                leaving = closes  # a childless element: left at once, below
        # leave this node (when that does something), then the elements it was the last
        # child of, then on to the next sibling
        following = node.next
        while True:
            if leaving:
                if leaving & _CLOSES_LINK and anchor_parts is not None:
                    links.append((anchor_href, " ".join("".join(anchor_parts).split())))
                    anchor_parts = None
                if leaving & _ENDS_LINE:
                    visible.append("\n")
                    if anchor_parts is not None:
                        anchor_parts.append("\n")
                if leaving & _ENDS_NEVER:
                    never_depth -= 1
                    shown = not never_depth and not hidden_depth
                elif leaving & _ENDS_HIDDEN:
                    hidden_depth -= 1
                    shown = not never_depth and not hidden_depth
            if following is not None or not open_elements:
                break
            node, leaving = open_elements.pop()
            following = node.next
        node = following
    if anchor_parts is not None:
        links.append((anchor_href, " ".join("".join(anchor_parts).split())))
    # A form sends what is typed into it to its action: that is where the reader's
    # password goes, as much a destination as a link's (after the links, so their order stays).
    links.extend((action, "") for action in forms if _ABSOLUTE.match(action))
    return RenderedHTML(_tidy("".join(visible)), _tidy(" ".join(hidden)), links, forms, areas, images)


# An address with a scheme ("https:", "mailto:", "javascript:") or starting "//": not
# relative to the page, so a <base href> does not change it.
_ABSOLUTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:|//)", re.I)
_BASE_TAG = re.compile(r"<base[\s/>]", re.I)


def _rebase(rendered: RenderedHTML, base: str) -> RenderedHTML:
    """Relative links, click areas, form actions and pictures read against <base href>,
    as a mail client resolves them: "<base href=https://x.example/>" makes "<a href=login>"
    a link to x.example, which a reading of the href alone would not see at all."""
    def resolve(href: str) -> str:
        if not href or _ABSOLUTE.match(href):
            return href
        try:
            return urljoin(base, href)
        except ValueError:
            return href
    rendered.links = [(resolve(h), t) for h, t in rendered.links]
    rendered.areas = [(resolve(h), t) for h, t in rendered.areas]
    forms = [resolve(a) for a in rendered.forms]
    known = {h for h, _ in rendered.links}
    rendered.links.extend((a, "") for a in forms if a not in known and a not in rendered.forms and _ABSOLUTE.match(a))
    rendered.forms = forms
    rendered.images = [resolve(i) for i in rendered.images]
    return rendered


# After the other white space became single spaces, a run of line breaks (with a space
# before each) is a blank line; both found by searching for a literal, which is fast.
_SPACE_RUN = re.compile(r"  +")
_BLANK_LINES = re.compile(r"\n ?(?:\n ?)+")


def _tidy(text: str) -> str:
    """Runs of spaces, tabs and no-break spaces as one space; two or more line breaks, with
    nothing but that white space between them, as one blank line. The odd white-space
    characters are replaced first by ``str.replace`` (when there at all), as a character
    class regex replacing every single space by a space cost three times as much."""
    for char in "\t\r\f\v\u00a0":
        if char in text:
            text = text.replace(char, " ")
    if "  " in text:
        text = _SPACE_RUN.sub(" ", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


# A start or end tag as the tokenizer reads most of them (comments, doctypes and text with
# a lone "<" do not match; an end tag never holds a quoted ">"). The reference for
# ``_tags``, which finds the same tags: this regex, run by ``finditer``, backtracks over
# every length of the name and the attributes from every "<" that no ">" closes, so that
# "<a" 5,000 times (10 KB) held a scanner for minutes.
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)(?:[^>\"']|\"[^\"]*\"|'[^']*')*>")
_TAG_START = re.compile(r"<(/?)[A-Za-z]")
_NAME_END = re.compile(r"[\s/>]")
_SPECIAL = re.compile(r"[>\"']")
# A tag name with quotes in it ('<IMGsrc="a.gif">' lacks a space) can end before any of
# them, as the regex tries; only its last MAX_NAME_QUOTES are tried as that end here.
MAX_NAME_QUOTES = 32


def _tags(html: str) -> Iterator[tuple[int, int, bool, str]]:  # noqa: C901 - one scan on purpose
    """(start, end, is an end tag, name) of the tags ``_TAG.finditer(html)`` finds, the same
    ones, in time linear in the HTML: how far the attributes read from a ">" or quote reach
    is worked out once (``ends``), and once for every name that shares the same run of
    characters (in "<a<a<a" every "<" starts a name that runs to the same end)."""
    size = len(html)
    ends: dict[int, int] = {}  # a ">" or quote's position -> end of the tag read from it, -1 for none
    searched_from = special_at = -1  # the last search for a ">" or quote from a name's end

    def tag_end(q: int) -> int:
        """Where a tag whose attributes start at ``q`` ends (after its ">"), -1 if never."""
        nonlocal searched_from, special_at
        if searched_from <= q <= special_at:  # names' ends only grow: each stretch is searched once
            found = _SPECIAL.search(html, special_at)
        else:
            found = _SPECIAL.search(html, q)
            searched_from, special_at = q, found.start() if found is not None else size
        chain = []
        result = -1
        while found is not None:
            at = found.start()
            if at in ends:
                result = ends[at]
                break
            chain.append(at)
            if html[at] == ">":
                result = at + 1
                break
            closing = html.find(html[at], at + 1)  # a quote: its string ends at the next one
            if closing < 0:
                break
            found = _SPECIAL.search(html, closing + 1)
        for at in chain:
            ends[at] = result
        return result

    run_from = run_end = -1  # the run of name characters last read: [run_from, run_end)
    run_tag_end = -1  # where a tag whose name is that whole run ends
    run_quote = -1  # else the last quote in the run at which a name can end, -1 if none
    pos = 0
    while True:
        start = _TAG_START.search(html, pos)
        if start is None:
            return
        letter = start.end() - 1
        if not run_from <= letter + 1 <= run_end:
            found = _NAME_END.search(html, letter + 1)
            run_from, run_end = letter + 1, found.start() if found is not None else size
            run_tag_end = tag_end(run_end)
            run_quote = -1
            if run_tag_end < 0:  # the name ends before one of its quotes, the last first
                double, single = html.rfind('"', run_from, run_end), html.rfind("'", run_from, run_end)
                for _ in range(MAX_NAME_QUOTES):
                    if double < 0 and single < 0:
                        break
                    q = max(double, single)
                    if tag_end(q) >= 0:
                        run_quote = q
                        break
                    if q == double:
                        double = html.rfind('"', run_from, q)
                    else:
                        single = html.rfind("'", run_from, q)
        if run_tag_end >= 0:
            name_end, end = run_end, run_tag_end
        elif run_quote > letter:
            name_end, end = run_quote, ends[run_quote]
        else:  # no ">" ends this tag: on to the next "<", as finditer goes on
            pos = start.start() + 1
            continue
        yield start.start(), end, bool(start.group(1)), html[letter:name_end]
        pos = end


# Elements that never nest in themselves: void, or closed by the next one of their kind or
# their parent's end (their end tags are optional), so they add nothing to the depth.
_FLAT_TAGS = _VOID_TAGS | {"p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "thead", "tbody",
                           "tfoot", "colgroup", "caption", "rb", "rt", "rp", "rtc", "html", "head", "body"}
# Never left out, however deep: links, images, forms and what hides text (a link nested
# 600 deep must still be a link, a deep <style> must not become visible text).
_FLAT_TAGS |= _ATTRIBUTE_TAGS | _NEVER_SHOWN_TAGS | _MAYBE_HIDDEN_TAGS


def _flatten(html: str) -> str:
    """The HTML with start and end tags nested deeper than MAX_NESTING left out (the
    depth counted from the tags as written, the text kept), so the tree builder never
    holds a deep stack; the same HTML when it nests less (see MAX_NESTING)."""
    out: list[str] = []
    last = 0
    depth = 0
    for start, end, closing, name in _tags(html):
        if name.lower() in _FLAT_TAGS:
            continue
        if not closing:
            depth += 1
        if depth > MAX_NESTING:
            out.append(html[last:start])
            last = end
        if closing:
            depth = max(depth - 1, 0)
    if not out:
        return html
    out.append(html[last:])
    return "".join(out)


def html_to_text(html: str) -> RenderedHTML:
    if html.count("<") > NESTING_CHECK_TAGS:
        html = _flatten(html)
    tree = LexborHTMLParser(html.replace("\x00", "\ufffd"))
    document = tree.root.parent if tree.root is not None else None
    if document is None:
        return RenderedHTML("", "")
    rendered = _render(document, _hidden_elements(tree))
    if _BASE_TAG.search(html):
        base = tree.css_first("base[href]")
        href = (base.attributes.get("href") or "").strip() if base is not None else ""
        if href and _ABSOLUTE.match(href) and href.lower().startswith(("http:", "https:", "//")):
            rendered = _rebase(rendered, href)
    return rendered
