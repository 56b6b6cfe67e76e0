"""Article bodies: sanitising, and splitting at the paywall marker.

The paywall marker is a horizontal rule with the class `paywall`
(`<hr class="paywall">`): everything after it is for paid readers only.

Footnotes are links between two ids: a reference `<sup><a id="fnref-1"
href="#fn-1">1</a></sup>` in the text and the note `<p id="fn-1">` it points to (with a
link back to `#fnref-1`). Those are the only ids a body keeps: an arbitrary id could
collide with the page's own (a form's, a skip link's target) or clobber a script global
(https://html.spec.whatwg.org/#named-access-on-the-window-object).
"""

from __future__ import annotations

import re
from html import unescape
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
    "h2", "h3", "h4", "hr", "i", "img", "li", "ol", "p", "pre", "s", "strong", "sub",
    "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "id"},
    "img": {"src", "alt", "title", "width", "height"},
    "hr": {"class"},
    "li": {"id"},
    "p": {"id"},
    "sup": {"id"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
# The ids footnotes use: `fn-<n>` on a note, `fnref-<n>` on the reference to it.
FOOTNOTE_ID_RE = re.compile(r"fn(?:ref)?-[0-9]{1,4}")


def footnote_id(number: int | str) -> str:
    return f"fn-{number}"


def footnote_ref_id(number: int | str) -> str:
    return f"fnref-{number}"


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "id":
        return value if FOOTNOTE_ID_RE.fullmatch(value) else None
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
    # Keep only one class on <hr>: the paywall marker; normalise it to one spelling.
    cleaned = _PAYWALL_RE.sub(PAYWALL_MARKER, cleaned)
    return re.sub(r'<hr class="(?!paywall")[^"]*">', "<hr>", cleaned)


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
