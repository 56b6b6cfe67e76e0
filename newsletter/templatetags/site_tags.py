"""Template tags of the reader site's layout."""

from __future__ import annotations

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
