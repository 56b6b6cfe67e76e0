"""Reads of the publication's content for the reader-facing site."""

from __future__ import annotations

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db.models import QuerySet
from django.http import Http404

from newsletter.models import Article, Author, Section
from newsletter.services.comments import with_comment_counts

ARTICLES_PER_PAGE = 10


def published_articles() -> QuerySet[Article]:
    """Articles readers may find: published ones, newest first. Never drafts or scheduled.

    Each carries `comment_count` (visible comments), counted in the same query.
    """
    return with_comment_counts(
        Article.objects.filter(status=Article.Status.PUBLISHED)
        .select_related("section")
        .prefetch_related("authors")
        .order_by("-published_at", "-pk")
    )


def get_published_article(*, slug: str) -> Article:
    try:
        return published_articles().get(slug=slug)
    except Article.DoesNotExist as exc:
        raise Http404("No such article.") from exc


def articles_in_section(*, section: Section) -> QuerySet[Article]:
    return published_articles().filter(section=section)


def articles_by_author(*, author: Author) -> QuerySet[Article]:
    return published_articles().filter(authors=author)


def sections_with_articles() -> QuerySet[Section]:
    return Section.objects.filter(articles__status=Article.Status.PUBLISHED).distinct()


def authors_with_articles() -> QuerySet[Author]:
    return Author.objects.filter(articles__status=Article.Status.PUBLISHED).distinct()


def page_of(*, articles: QuerySet[Article], number: str | None) -> Page:
    """One page of a list; a page number that does not exist is a 404, not page one."""
    paginator = Paginator(articles, ARTICLES_PER_PAGE)
    try:
        return paginator.page(number or 1)
    except (EmptyPage, PageNotAnInteger) as exc:
        raise Http404("No such page.") from exc
