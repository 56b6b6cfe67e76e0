"""Footnotes (the only ids an article body keeps) and video players (the only iframes)."""

from __future__ import annotations

import html
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from newsletter.services.content import EMBED_SRC_RE, FOOTNOTE_ID_RE, sanitize_body


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


# --- Video players ----------------------------------------------------------------------


class _Frames(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "iframe":
            self.frames.append({name: value or "" for name, value in attrs})


def frames_in(markup: str) -> list[dict[str, str]]:
    parser = _Frames()
    parser.feed(markup)
    parser.close()
    return parser.frames


def test_a_privacy_enhanced_player_is_kept_with_its_size_and_nothing_else():
    cleaned = sanitize_body(
        html='<iframe src="https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ" width="728" '
        'height="409" allowfullscreen title="x>y" onload="steal()" srcdoc="<b>" '
        'style="position:fixed">raw <script>text</script></iframe>'
        '<iframe src="https://player.vimeo.com/video/76979871?dnt=1" width="100%"></iframe>'
    )
    assert frames_in(cleaned) == [
        {
            "src": "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
            "width": "728",
            "height": "409",
            "allowfullscreen": "",
        },
        {"src": "https://player.vimeo.com/video/76979871?dnt=1"},
    ]
    assert "script" not in cleaned and "raw" not in cleaned


def test_iframes_from_other_hosts_leave_no_trace():
    cleaned = sanitize_body(
        html='<p>a</p><iframe src="https://www.youtube.com/embed/dQw4w9WgXcQ" width="1">'
        'x</iframe><iframe srcdoc="<script>alert(1)</script>"></iframe><p>b</p>'
    )
    assert cleaned == "<p>a</p><p>b</p>"


@given(src=st.one_of(st.text(max_size=60), st.from_regex(EMBED_SRC_RE, fullmatch=True)))
def test_an_iframe_survives_only_with_an_allowed_players_address(src):
    cleaned = sanitize_body(html=f'<p>x</p><iframe src="{html.escape(src)}"></iframe>')
    frames = frames_in(cleaned)
    assert frames in ([], [{"src": src}])
    assert bool(frames) == bool(EMBED_SRC_RE.fullmatch(src))
    assert cleaned.startswith("<p>x</p>")
