"""/sitemap.xml: published articles, sections and authors, on the public SITE_URL."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.sitemaps import Sitemap
from django.db.models import QuerySet
from django.urls import reverse

from newsletter import selectors
from newsletter.models import Article, Author, Section


class _SiteUrlSitemap(Sitemap):
    """Links on SITE_URL's host and scheme, whatever host the request came in on."""

    def get_domain(self, site=None) -> str:
        return urlsplit(settings.SITE_URL).netloc

    def get_protocol(self, protocol=None) -> str:
        return urlsplit(settings.SITE_URL).scheme


class HomeSitemap(_SiteUrlSitemap):
    changefreq = "daily"
    priority = 1.0

    def items(self) -> list[str]:
        return ["newsletter:home"]

    def location(self, item: str) -> str:
        return reverse(item)


class ArticleSitemap(_SiteUrlSitemap):
    changefreq = "weekly"
    priority = 0.8

    def items(self) -> QuerySet[Article]:
        return selectors.published_articles()

    def lastmod(self, item: Article) -> datetime:
        return item.updated_at


class SectionSitemap(_SiteUrlSitemap):
    changefreq = "daily"
    priority = 0.5

    def items(self) -> QuerySet[Section]:
        return selectors.sections_with_articles()


class AuthorSitemap(_SiteUrlSitemap):
    changefreq = "weekly"
    priority = 0.4

    def items(self) -> QuerySet[Author]:
        return selectors.authors_with_articles()


SITEMAPS = {
    "home": HomeSitemap,
    "articles": ArticleSitemap,
    "sections": SectionSitemap,
    "authors": AuthorSitemap,
}
