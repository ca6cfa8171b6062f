"""Plain-English explanations of how a look-alike name differs from the real one.

Staff decide in seconds whether to trust a message, so each finding says what was
changed in words ("the letter l was replaced by the digit 1, which looks like l") rather
than a distance or a technique name.
"""
from __future__ import annotations

import difflib

from mailguard.analyzers.lookalike.glyphs import GlyphTable, mixed_scripts, script_of


def join_words(words: list[str]) -> str:
    """'the word "login"', 'the words "secure" and "billing"', 'the number 1'."""
    unique = list(dict.fromkeys(words))
    texts = [w if w.isdigit() else f"\"{w}\"" for w in unique]
    if all(w.isdigit() for w in unique):
        noun = "number" if len(unique) == 1 else "numbers"
    else:
        noun = "word" if len(unique) == 1 else "words"
    if len(texts) == 1:
        return f"the {noun} {texts[0]}"
    return f"the {noun} " + ", ".join(texts[:-1]) + " and " + texts[-1]


def not_theirs(owner: str) -> str:
    """Says the name is "not one of PayPal's domains", or not on the practice's own list."""
    return f"not one of {owner}'s domains" if owner else "not on the practice's list of trusted domains"


def script_note(label: str, glyphs: GlyphTable) -> str:
    scripts = mixed_scripts(label)
    if not scripts:
        return ""
    names = [glyphs.script_name(s) for s in scripts]
    return f" (the name mixes {' and '.join(names)} letters)"


def char_phrase(text: str, glyphs: GlyphTable) -> str:
    """How a person would name these characters: "the letter l", "the digit 1", "a hyphen",
    "the Cyrillic letter а"."""
    if len(text) == 1:
        ch = text
        if ch == "-":
            return "a hyphen"
        if ch == ".":
            return "a dot"
        if ch.isdigit() and ch.isascii():
            return f"the digit {ch}"
        if ch.isascii():
            return f"the letter {ch}"
        script = script_of(ch)
        if script and script != "LATIN":
            return f"the {glyphs.script_name(script)} letter {ch}"
        return f"the look-alike character {ch}"
    if all(c.isascii() and c.isalpha() for c in text):
        return f"the letters {text}"
    if text.isascii():
        return f"the characters {text}"
    return f"the look-alike characters {text}"


def _replaced(old: str, new: str, glyphs: GlyphTable) -> str:
    looks = glyphs.skeleton(old) == glyphs.skeleton(new) or glyphs.looks_similar(old, new)
    verb = "was" if len(old) == 1 else "were"
    tail = ""
    if looks:
        tail = ", which looks the same" if not new.isascii() else f", which looks like {old}"
    return f"{char_phrase(old, glyphs)} {verb} replaced by {char_phrase(new, glyphs)}{tail}"


def describe_changes(target: str, shown: str, glyphs: GlyphTable, limit: int = 3) -> str:
    """Plain English for how ``shown`` differs from ``target`` ("the letter l was replaced
    by the digit 1 and the letter y was left out")."""
    if len(target) == len(shown):
        diffs = [i for i in range(len(target)) if target[i] != shown[i]]
        if len(diffs) == 2 and diffs[1] == diffs[0] + 1:
            i = diffs[0]
            if target[i] == shown[i + 1] and target[i + 1] == shown[i]:
                return f"the letters {target[i]} and {target[i + 1]} were swapped ({shown})"
    phrases: list[str] = []
    matcher = difflib.SequenceMatcher(None, target, shown, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        old, new = target[i1:i2], shown[j1:j2]
        if op == "replace" and len(old) == len(new) > 1:
            phrases.extend(_replaced(o, n, glyphs) for o, n in zip(old, new) if o != n)
        elif op == "replace":
            phrases.append(_replaced(old, new, glyphs))
        elif op == "delete":
            phrases.append(f"{char_phrase(old, glyphs)} {'was' if len(old) == 1 else 'were'} left out")
        else:
            before = target[i1 - 1] if i1 > 0 else ""
            after = target[i1] if i1 < len(target) else ""
            if len(new) == 1 and new in (before, after):
                phrases.append(f"{char_phrase(new, glyphs)} was doubled")
            else:
                phrase = char_phrase(new, glyphs)
                extra = "an extra " + phrase[4:] if phrase.startswith("the ") else phrase
                phrases.append(f"{extra} {'was' if len(new) == 1 else 'were'} added")
    foreign = [ch for ch in shown if not ch.isascii()]
    if len(phrases) > limit and foreign and len(foreign) >= len(phrases):
        scripts = sorted({glyphs.script_name(script_of(ch)) for ch in foreign if script_of(ch)})
        kind = f"{' and '.join(scripts)} " if scripts else ""
        return f"{len(foreign)} of its letters were replaced by {kind}look-alike characters ({shown})"
    if not phrases:
        return f"it is written almost exactly like {target}"
    if len(phrases) > limit:
        phrases = phrases[:limit] + ["more"]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]
