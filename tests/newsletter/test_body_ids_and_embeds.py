"""Footnotes (the only ids an article body keeps) and video players (the only iframes)."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import html5lib
from hypothesis import given
from hypothesis import strategies as st

from newsletter.services.content import (
    EMBED_SRC_RE,
    FOOTNOTE_ID_RE,
    embeds_as_links,
    sanitize_body,
)


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


# --- Players in mail (embeds_as_links) --------------------------------------------------

XHTML = "{http://www.w3.org/1999/xhtml}"
YOUTUBE = "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ"
WATCH = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


def body_of(markup: str):
    """The <body> element html5lib builds from this markup, as a mail client's parser would."""
    return html5lib.parse(f"<!doctype html><body>{markup}").find(f"{XHTML}body")


def test_in_mail_a_youtube_player_becomes_its_thumbnail_and_a_link_to_the_video():
    mailed = embeds_as_links(html=sanitize_body(html=f'<iframe src="{YOUTUBE}"></iframe>'))
    assert "<iframe" not in mailed
    [paragraph] = list(body_of(mailed))
    thumbnail_link, line_break, text_link = list(paragraph)
    assert (thumbnail_link.tag, thumbnail_link.attrib) == (f"{XHTML}a", {"href": WATCH})
    [thumbnail] = list(thumbnail_link)
    assert thumbnail.tag == f"{XHTML}img"
    assert thumbnail.attrib == {
        "src": "https://i.ytimg.com/vi/dQw4w9WgXcQ/hqdefault.jpg",
        "alt": "Watch the video on YouTube",
        "width": "480",
        "height": "360",
    }
    assert (line_break.tag, line_break.tail) == (f"{XHTML}br", None)
    assert (text_link.tag, text_link.attrib) == (f"{XHTML}a", {"href": WATCH})
    assert text_link.text == "Watch the video on YouTube"


def test_in_mail_the_markup_around_a_player_is_kept_as_it_came():
    """Character references stay references, escaped text stays text (never markup), and
    self-closing tags stay: only the iframe is replaced."""
    around = (
        "<p>It&#39;s here &#x2014; &lt;script&gt;alert(1)&lt;/script&gt; &amp; more<br/>"
        '<img src="https://example.com/a.png" alt="A" /></p>'
    )
    mailed = embeds_as_links(html=f'{around}<iframe src="{YOUTUBE}"></iframe><p>After</p>')
    parsed = body_of(mailed)
    assert parsed.find(f".//{XHTML}script") is None
    first, _player, after = list(parsed)
    assert "".join(first.itertext()) == "It's here \u2014 <script>alert(1)</script> & more"
    assert [child.tag for child in first] == [f"{XHTML}br", f"{XHTML}img"]
    assert first[1].attrib == {"src": "https://example.com/a.png", "alt": "A"}
    assert "".join(after.itertext()) == "After"
    assert mailed.startswith(around)
    assert mailed.endswith("</p><p>After</p>")


def test_in_mail_whatever_an_iframe_holds_goes_with_it():
    """A player's own content (a fallback text) is no part of the link, and an iframe
    without an allowed player's address (none at all, or another host's) leaves no trace."""
    mailed = embeds_as_links(
        html=f'<p>Before</p><iframe src="{YOUTUBE}"><p>Your mail cannot play this.</p></iframe>'
        '<iframe width="300"></iframe><iframe src="https://example.com/x">Elsewhere</iframe>'
        "<p>After</p>"
    )
    before, player, after = list(body_of(mailed))
    assert "".join(before.itertext()) == "Before"
    assert "".join(player.itertext()) == "Watch the video on YouTube"
    assert "".join(after.itertext()) == "After"
    assert "cannot play" not in mailed and "Elsewhere" not in mailed


def test_in_mail_a_vimeo_player_becomes_a_link_to_the_video():
    mailed = embeds_as_links(
        html='<iframe src="https://player.vimeo.com/video/76979871?dnt=1"></iframe>'
    )
    [paragraph] = list(body_of(mailed))
    [link] = list(paragraph)
    assert link.attrib == {"href": "https://vimeo.com/76979871"}
    assert link.text == "Watch the video on Vimeo"


def test_a_player_s_size_is_kept_up_to_four_digits_and_dropped_past():
    cleaned = sanitize_body(
        html='<iframe src="https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ" width="1920" '
        'height="10800"></iframe>'
    )
    assert frames_in(cleaned) == [
        {"src": "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ", "width": "1920"}
    ]
