"""Article bodies: sanitising, and splitting at the paywall marker.

The paywall marker is a horizontal rule with the class `paywall`
(`<hr class="paywall">`): everything after it is for paid readers only.
"""

from __future__ import annotations

import re

import nh3

PAYWALL_MARKER = '<hr class="paywall">'
_PAYWALL_RE = re.compile(r"<hr\b[^>]*\bclass=\"[^\"]*\bpaywall\b[^\"]*\"[^>]*>", re.IGNORECASE)

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "em", "figcaption", "figure",
    "h2", "h3", "h4", "hr", "i", "img", "li", "ol", "p", "pre", "s", "strong", "sub",
    "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "hr": {"class"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}


def sanitize_body(*, html: str) -> str:
    """Keep the markup an article needs; drop scripts, handlers and unsafe URLs."""
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
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
