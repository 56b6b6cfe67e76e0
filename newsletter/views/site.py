"""Reader-facing pages of the publication."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, render
from django.template import loader
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.views.decorators.http import require_safe

from config.celery import app as celery_app
from newsletter import selectors
from newsletter.models import Article, Author, Section
from newsletter.services import comments as comment_service
from newsletter.services.access import can_read_full_article
from newsletter.services.attribution import ref_query
from newsletter.services.body_images import render_body
from newsletter.services.content import excerpt, free_body, full_body
from newsletter.services.page_cache import (
    cache_anonymous_page,
    prefetch_fragments,
    shared_fragment,
)
from newsletter.services.page_parameters import discussion_page_number
from newsletter.views import reader_shell


def _absolute(url: str) -> str:
    return url if url.startswith(("http://", "https://")) else f"{settings.SITE_URL}{url}"


def _personal(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Keep shared caches (a CDN, a proxy) away from pages rendered for a signed-in reader.

    What a page shows depends on who asks: a paid reader's copy must never be served to
    anyone else.
    """
    patch_vary_headers(response, ["Cookie"])
    if request.user.is_authenticated:
        patch_cache_control(response, private=True, no_cache=True)
    return response


def _article_list(
    request: HttpRequest, template: str, articles: QuerySet[Article], **context: Any
) -> HttpResponse:
    """One page of a list of articles (home, section, author)."""
    page = selectors.page_of(articles=articles, number=request.GET.get("page"))
    response = render(request, template, {**context, "page": page, "articles": page})
    return _personal(request, response)


@require_safe
@cache_anonymous_page(reads=("page",))
def home(request: HttpRequest) -> HttpResponse:
    return _article_list(request, "newsletter/home.html", selectors.published_articles())


@require_safe
@cache_anonymous_page(reads=("page",))
def section(request: HttpRequest, slug: str) -> HttpResponse:
    section = get_object_or_404(Section, slug=slug)
    articles = selectors.articles_in_section(section=section)
    return _article_list(request, "newsletter/section.html", articles, section=section)


@require_safe
@cache_anonymous_page(reads=("page",))
def author(request: HttpRequest, slug: str) -> HttpResponse:
    author = get_object_or_404(Author, slug=slug)
    articles = selectors.articles_by_author(author=author)
    return _article_list(request, "newsletter/author.html", articles, author=author)


@require_safe
@cache_anonymous_page(reads=("cpage", "order"))
def article(request: HttpRequest, slug: str) -> HttpResponse:
    if request.user.is_authenticated:
        # What a signed-in reader's page (its shell, `reader_shell`) needs of the shared
        # fragments, in one cache read instead of three.
        prefetch_fragments([f"article:{slug}", "publication", comment_service.BANS_FRAGMENT])
    # The same row for every reader (what each may read of it is decided below): read
    # once per generation of the page cache, which every change to an article renews.
    article = shared_fragment(f"article:{slug}", lambda: selectors.get_published_article(slug=slug))
    discussion_page = discussion_page_number(request.GET.get("cpage"))
    if discussion_page > 1 and discussion_page > comment_service.thread_page_count(
        article=article, user=request.user
    ):
        raise Http404("The discussion has no such page.")
    full = can_read_full_article(user=request.user, article=article)
    from_shell = reader_shell.article_page(
        request, article=article, full=full, render_article=render_article
    )
    if from_shell is not None:
        return _personal(request, from_shell)
    return render_article(request, article=article, full=full)


def render_article(
    request: HttpRequest,
    *,
    article: Article,
    full: bool,
    preview: str = "",
    extra_context: dict[str, Any] | None = None,
) -> HttpResponse:
    """The article page, as a reader with (`full`) or without access sees it.

    Used by the article view and by the editor's preview in the admin, so that a
    preview is exactly what readers will get. `extra_context` stands in for some of the
    reader's values when the page is rendered as a shell (`reader_shell`).
    """
    locked = not full and article.visibility != Article.Visibility.PUBLIC
    if preview:
        # The editor's unsaved text: never read from, nor stored in, the shared copies.
        body, summary = _article_text(article=article, full=full)
    else:
        body, summary = shared_fragment(
            f"article-text:{article.pk}:{article.updated_at.isoformat()}:"
            f"{'full' if full else 'free'}",
            lambda: _article_text(article=article, full=full),
        )
    context = {
        "article": article,
        "authors": list(article.authors.all()),
        "body": body,
        "locked": locked,
        "excerpt": summary,
        "canonical_url": _absolute(article.get_absolute_url()),
        "cover_url": _absolute(article.cover_image.url) if article.cover_image else "",
        "preview": preview,
        # The article's own ref, the same for every reader (so fit for the page cache):
        # a signup, upgrade or donation from this page is credited to it.
        "subscribe_ref": article.slug,
        "ref_query": ref_query(article),
        **(extra_context or {}),
    }
    response = render(request, "newsletter/article.html", context)
    return _personal(request, response)


def _article_text(*, article: Article, full: bool) -> tuple[str, str]:
    """The body as the page shows it (the whole text with `full`, else the free part)
    and the free-safe excerpt: the same for every reader of one access level, so the
    article page computes them once per version of the article and level.

    `full` is in the key of the shared copy, and the view decides it for each request:
    a copy of the whole text is only ever read by a request allowed to read it.
    """
    html = full_body(article=article) if full else free_body(article=article)
    return render_body(html=html, for_email=False), excerpt(article=article)


@require_safe
def robots_txt(request: HttpRequest) -> HttpResponse:
    return render(request, "robots.txt", {"site_url": settings.SITE_URL}, content_type="text/plain")


@require_safe
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico wherever a page names no icon (the admin's, a
    feed): to the static file, by its unhashed name, which stays the same when the icon
    is replaced (a hashed one would stay pinned in browsers by the permanent redirect).
    The site's own pages link the hashed one (`base.html`)."""
    return HttpResponsePermanentRedirect(f"{settings.STATIC_URL}favicon.ico")


def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report any failure as JSON
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {exc.__class__.__name__}"
    healthy = all(value == "ok" for value in checks.values())
    response = JsonResponse(
        {"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503
    )
    patch_cache_control(response, no_store=True)
    return response


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    # No context processors here: the database may be what failed.
    return HttpResponse(loader.get_template("500.html").render(), status=500)
