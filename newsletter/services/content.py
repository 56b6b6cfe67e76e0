"""Article bodies: sanitising, and splitting at the paywall marker.

The paywall marker is a horizontal rule with the class `paywall`
(`<hr class="paywall">`): everything after it is for paid readers only.

Footnotes are links between two ids: a reference `<sup><a id="fnref-1"
href="#fn-1">1</a></sup>` in the text and the note `<p id="fn-1">` it points to (with a
link back to `#fnref-1`). Those are the only ids a body keeps: an arbitrary id could
collide with the page's own (a form's, a skip link's target) or clobber a script global
(https://html.spec.whatwg.org/#named-access-on-the-window-object).

Notes written in the editor are stored where they are referenced, as `<sup
data-note="…">`, and numbered only when shown (newsletter/services/footnotes.py).

Videos: an `<iframe>` is kept only as a privacy-enhanced YouTube or Vimeo player
(`EMBED_SRC_RE`; the Content-Security-Policy's frame-src allows those two hosts and no
other); any other iframe is removed. Mail and Telegram cannot play them:
`embeds_as_links` turns each into a link (a thumbnail for YouTube).
"""

from __future__ import annotations

import re
from html import escape, unescape
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import nh3
from django.utils.html import strip_tags
from django.utils.text import Truncator

if TYPE_CHECKING:
    from newsletter.models import Article

PAYWALL_MARKER = '<hr class="paywall">'
_PAYWALL_RE = re.compile(r"<hr\b[^>]*\bclass=\"[^\"]*\bpaywall\b[^\"]*\"[^>]*>", re.IGNORECASE)

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "em", "figcaption", "figure",
    "h2", "h3", "h4", "hr", "i", "iframe", "img", "li", "ol", "p", "pre", "s", "strong",
    "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "id"},
    "img": {"src", "alt", "title", "width", "height"},
    "hr": {"class"},
    "iframe": {"src", "width", "height", "allowfullscreen"},
    "li": {"id"},
    "p": {"id"},
    "sup": {"id", "data-note"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
# The ids footnotes use: `fn-<n>` on a note, `fnref-<n>` on the reference to it.
FOOTNOTE_ID_RE = re.compile(r"fn(?:ref)?-[0-9]{1,4}")


def footnote_id(number: int | str) -> str:
    return f"fn-{number}"


def footnote_ref_id(number: int | str) -> str:
    return f"fnref-{number}"


# The players a body may embed, by the privacy-enhanced address each offers.
EMBED_HOSTS = ("https://www.youtube-nocookie.com", "https://player.vimeo.com")
EMBED_SRC_RE = re.compile(
    r"https://www\.youtube-nocookie\.com/embed/(?P<youtube>[A-Za-z0-9_-]{6,20})"
    r"|https://player\.vimeo\.com/video/(?P<vimeo>[0-9]{1,12})(?:\?dnt=1)?"
)
# After nh3, whose iframe attributes are only src (an allowed player), digits and empty
# values (`_keep_attribute`), so no `>` can occur inside the tag. An iframe's content is
# raw text that no browser shows; it is dropped, then iframes left without a src.
_IFRAME_CONTENT_RE = re.compile(r"(<iframe\b[^>]*>).*?</iframe>", re.DOTALL)
_EMPTY_IFRAME_RE = re.compile(r"<iframe\b(?![^>]*\ssrc=)[^>]*></iframe>")


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "id":
        return value if FOOTNOTE_ID_RE.fullmatch(value) else None
    if tag == "iframe":
        if attribute == "src":
            return value if EMBED_SRC_RE.fullmatch(value) else None
        if attribute in ("width", "height"):
            return value if value.isdigit() and len(value) <= 4 else None
        if attribute == "allowfullscreen":
            return ""  # a boolean attribute
        return None  # nh3's generic attributes (title, lang) too
    return value


def sanitize_body(*, html: str) -> str:
    """Keep the markup an article needs; drop scripts, handlers and unsafe URLs."""
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
        attribute_filter=_keep_attribute,
    )
    cleaned = _EMPTY_IFRAME_RE.sub("", _IFRAME_CONTENT_RE.sub(r"\1</iframe>", cleaned))
    # Keep only one class on <hr>: the paywall marker; normalise it to one spelling.
    cleaned = _PAYWALL_RE.sub(PAYWALL_MARKER, cleaned)
    return re.sub(r'<hr class="(?!paywall")[^"]*">', "<hr>", cleaned)


def embed_watch_url(src: str) -> str | None:
    """Where a reader watches an allowed player's video, or None for any other src."""
    match = EMBED_SRC_RE.fullmatch(src)
    if match is None:
        return None
    if match["youtube"]:
        return f"https://www.youtube.com/watch?v={match['youtube']}"
    return f"https://vimeo.com/{match['vimeo']}"


class MarkupRewriter(HTMLParser):
    """Writes HTML back token by token as it came; subclasses change what they must.

    One pass through Python's HTML tokenizer, so the time grows with the length of the
    markup whatever it holds. Every piece goes out through `_emit` (into `out`), which a
    subclass may override to hold or drop text.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []

    def _emit(self, text: str) -> None:
        self.out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._emit(self.get_starttag_text() or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._emit(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        self._emit(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self._emit(data)

    def handle_entityref(self, name: str) -> None:
        self._emit(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._emit(f"&#{name};")


class _EmbedsAsLinks(MarkupRewriter):
    """Re-emits a sanitised body with each player iframe replaced by a link to the video."""

    def __init__(self) -> None:
        super().__init__()
        self.in_iframe = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.in_iframe:
            return
        if tag != "iframe":
            self._emit(self.get_starttag_text() or "")
            return
        self.in_iframe = True
        src = next((value or "" for name, value in attrs if name == "src"), "")
        match = EMBED_SRC_RE.fullmatch(src)
        watch = embed_watch_url(src)
        if match is None or watch is None:
            return
        if match["youtube"]:
            thumbnail = f"https://i.ytimg.com/vi/{match['youtube']}/hqdefault.jpg"
            self.out.append(
                f'<p><a href="{escape(watch)}"><img src="{escape(thumbnail)}" '
                'alt="Watch the video on YouTube" width="480" height="360"></a><br>'
                f'<a href="{escape(watch)}">Watch the video on YouTube</a></p>'
            )
        else:
            self.out.append(f'<p><a href="{escape(watch)}">Watch the video on Vimeo</a></p>')

    def _emit(self, text: str) -> None:
        if not self.in_iframe:
            self.out.append(text)

    def handle_endtag(self, tag: str) -> None:
        if tag == "iframe":
            self.in_iframe = False
            return
        self._emit(f"</{tag}>")


def embeds_as_links(*, html: str) -> str:
    """The body for mail and Telegram, which play no video: each player becomes a link."""
    if "<iframe" not in html:
        return html
    parser = _EmbedsAsLinks()
    parser.feed(html)
    parser.close()
    return "".join(parser.out)


def split_at_paywall(*, html: str) -> tuple[str, str]:
    """Return (free part, paid part). Without a marker, everything is in the free part."""
    match = _PAYWALL_RE.search(html)
    if match is None:
        return html, ""
    return html[: match.start()], html[match.end() :]


def has_paywall(*, html: str) -> bool:
    return _PAYWALL_RE.search(html) is not None


def free_body(*, article: Article) -> str:
    """What a reader without access may read: the part before the paywall marker.

    A public article is free in full. A subscribers-only or paid article without a
    marker has no free part at all: forgetting the marker must never give it away.
    """
    if article.visibility == article.Visibility.PUBLIC:
        return full_body(article=article)
    if not has_paywall(html=article.body):
        return ""
    free, _paid = split_at_paywall(html=article.body)
    # Re-parsing closes any element the marker was nested in.
    return sanitize_body(html=free)


def full_body(*, article: Article) -> str:
    """The whole article for readers with access, without the marker itself."""
    free, paid = split_at_paywall(html=article.body)
    return free + paid


def excerpt(*, article: Article, words: int = 40) -> str:
    """Plain text safe to show anyone: the subtitle, or the start of the free part."""
    if article.subtitle.strip():
        return article.subtitle.strip()
    text = " ".join(unescape(strip_tags(free_body(article=article))).split())
    return Truncator(text).words(words, truncate="…")
