"""Plain text from MediaWiki XML dumps: the default corpus's cleaning (see `subnas.data._assets`)."""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

MIN_ARTICLE_CHARS = 500  # below this a page is a stub, list or disambiguation leftover


def read_wiki_articles(path: Path) -> list[tuple[str, str]]:
    """``(title, plain text)`` of the articles in a MediaWiki XML dump (``.bz2`` or plain).

    Keeps main-namespace pages that are not redirects and whose cleaned text has at least
    `MIN_ARTICLE_CHARS` characters, in dump order.
    """
    opener = bz2.open if str(path).endswith(".bz2") else open
    out: list[tuple[str, str]] = []
    with opener(path, "rb") as fh:
        for _, elem in ET.iterparse(fh):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            title = elem.findtext("{*}title") or ""
            is_article = (elem.findtext("{*}ns") or "0").strip() == "0" and elem.find("{*}redirect") is None
            raw = elem.findtext("{*}revision/{*}text") or ""
            elem.clear()  # iterparse keeps the tree otherwise; a full dump would not fit in memory
            if is_article:
                text = clean_wikitext(raw)
                if len(text) >= MIN_ARTICLE_CHARS:
                    out.append((title, text))
    return out


# Trailing sections of an article are citations and link lists, not prose.
_TAIL_SECTION = re.compile(r"^==\s*(see also|notes|references|further reading|external links|bibliography|"
                           r"sources|footnotes|citations|notes and references)\s*==\s*$", re.I | re.M)
_DROP_TAGS = {"ref", "references", "gallery", "math", "chem", "ce", "table", "timeline", "imagemap", "score",
              "syntaxhighlight", "source", "code", "pre", "nowiki", "hiero", "graph", "mapframe"}
_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|category|media)\s*:", re.I)
_INTERWIKI = re.compile(r"^\s*:?[a-z][a-z\-]{1,11}:")  # [[de:Anarchismus]], [[wikt:foo]]
_COMMENT = re.compile(r"<!--.*?(-->|$)", re.S)
_REF = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
_FILE_LINK = re.compile(r"\[\[\s*(file|image)\s*:", re.I)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*/?>")


def clean_wikitext(text: str) -> str:
    """Plain text of one article's wikitext.

    Drops templates, references, files, categories, tables, math and interlanguage links; keeps the
    visible text of ordinary links, headings as their own lines and paragraph breaks; collapses
    whitespace. Anything after the first "See also"/"References"/"External links"-style section is
    cut, since those sections are lists of citations.

    Example:
        >>> clean_wikitext("'''Foo''' is a [[bar|baz]].{{cite}}<ref>x</ref> [[Category:Q]]")
        'Foo is a baz.'
    """
    import mwparserfromhell

    tail = _TAIL_SECTION.search(text)
    if tail:
        text = text[: tail.start()]
    # Unbalanced markup makes mwparserfromhell give up on the rest of a paragraph and keep tags
    # as text, so references go before parsing and leftovers of any kind after.
    text = _drop_file_links(_drop_tables(_REF.sub("", _COMMENT.sub("", text))))
    code = mwparserfromhell.parse(text)
    _prune(code, mwparserfromhell.nodes)
    plain = code.strip_code(normalize=True, collapse=True)
    plain = _TEMPLATE.sub("", _REF.sub("", plain))
    plain = _HTML_TAG.sub("", plain)
    plain = re.sub(r"[ \t\u00a0]+", " ", plain)
    plain = re.sub(r"\(\s*[,;:]?\s*\)", "", plain)  # "( )" left by a removed template
    plain = re.sub(r" +([,.;:])", r"\1", plain)
    lines = [line.strip() for line in plain.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _drop_tables(text: str) -> str:
    """Remove ``{| ... |}`` tables (nested too) line by line: they are data, not prose."""
    out: list[str] = []
    depth = 0
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("{|"):
            depth += 1
        elif depth and stripped.startswith("|}"):
            depth -= 1
        elif not depth:
            out.append(line)
    return "\n".join(out)


def _drop_file_links(text: str) -> str:
    """Remove ``[[File:...]]`` / ``[[Image:...]]``, whose captions may hold nested links."""
    out: list[str] = []
    pos = 0
    while (m := _FILE_LINK.search(text, pos)) is not None:
        out.append(text[pos:m.start()])
        depth, j = 0, m.start()
        while j < len(text):
            if text.startswith("[[", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("]]", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    break
            else:
                j += 1
        pos = j
    out.append(text[pos:])
    return "".join(out)


def _prune(code: Any, nodes: Any) -> None:
    """Remove unwanted nodes from ``code`` in place, at any depth, in one walk.

    Walking once keeps cleaning linear; ``Wikicode.remove`` searches the whole tree per call,
    which made building the default corpus several times slower.
    """
    keep: list[Any] = []
    for node in code.nodes:
        if isinstance(node, nodes.Template):
            continue
        if isinstance(node, nodes.Tag) and str(node.tag).strip().lower() in _DROP_TAGS:
            continue
        if isinstance(node, nodes.Wikilink):
            title = str(node.title)
            # An interwiki link with text shows that text inline ([[wikt:x|x]]); without, it is a
            # language link at the page bottom.
            if _DROP_LINK.match(title) or (node.text is None and _INTERWIKI.match(title)):
                continue
        for child in node.__children__():  # the Wikicode inside tags, links, headings
            _prune(child, nodes)
        keep.append(node)
    code.nodes = keep
