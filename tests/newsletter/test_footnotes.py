"""Footnotes: the only ids an article body keeps, and links that reach them."""

from __future__ import annotations

import html
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from newsletter.services.content import FOOTNOTE_ID_RE, sanitize_body


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.ids += [value or "" for name, value in attrs if name == "id"]


def ids_in(markup: str) -> list[str]:
    parser = _Ids()
    parser.feed(markup)
    parser.close()
    return parser.ids


def test_footnote_ids_are_kept_on_references_and_notes():
    cleaned = sanitize_body(
        html='<p>Text<sup id="fnref-7"><a id="fnref-1" href="#fn-1">1</a></sup></p>'
        '<ol><li id="fn-12">A note</li></ol><p id="fn-1">Another</p>'
    )
    assert ids_in(cleaned) == ["fnref-7", "fnref-1", "fn-12", "fn-1"]
    assert 'href="#fn-1"' in cleaned


def test_any_other_id_is_stripped():
    cleaned = sanitize_body(
        html='<p id="main">a</p><p id="fn-1x">b</p><p id="fnref-">c</p>'
        '<p id="fn-12345">d</p><h2 id="fn-1">e</h2><a id="csrf" href="#x">f</a>'
    )
    assert ids_in(cleaned) == []
    assert "<p>a</p><p>b</p><p>c</p><p>d</p><h2>e</h2>" in cleaned


@given(value=st.text(max_size=30))
def test_an_id_survives_only_as_a_footnote_id(value):
    cleaned = sanitize_body(html=f'<p id="{html.escape(value)}">x</p>')
    kept = ids_in(cleaned)
    assert kept in ([], [value])
    assert (kept == [value]) == bool(FOOTNOTE_ID_RE.fullmatch(value))
