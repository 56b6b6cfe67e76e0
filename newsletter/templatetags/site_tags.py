"""Template tags of the reader site's layout."""

from __future__ import annotations

from django import template
from django.db.models import QuerySet

from newsletter import selectors
from newsletter.models import Article, Section
from newsletter.services.content import excerpt

register = template.Library()


@register.simple_tag
def nav_sections() -> QuerySet[Section]:
    """Sections with at least one published article, for the site navigation."""
    return selectors.sections_with_articles()


@register.simple_tag
def article_excerpt(article: Article) -> str:
    """Text safe to show anyone in a list: never anything after the paywall."""
    return excerpt(article=article)
