"""Template tags of the reader site's layout."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template

from newsletter import selectors
from newsletter.models import Article, Section
from newsletter.services.content import excerpt
from newsletter.services.page_cache import shared_fragment

register = template.Library()


@register.simple_tag
def nav_sections() -> list[Section]:
    """Sections with at least one published article, for the site navigation (the same
    for every reader: built once per page-cache generation)."""
    return shared_fragment("nav-sections", lambda: list(selectors.sections_with_articles()))


@register.simple_tag
def article_excerpt(article: Article) -> str:
    """Text safe to show anyone in a list: never anything after the paywall."""
    return excerpt(article=article)


@register.filter
def html_datetime(value: datetime | None) -> str:
    """A `<time datetime>` value: ISO 8601 in UTC to the second (HTML's "valid global
    date and time string" allows at most three fraction digits; Python's has six)."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
