"""The page cache in front of the stack: hits skip every other middleware, misses render
once, and revisits are answered 304."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from newsletter.models import Article
from newsletter.services.content import PAYWALL_MARKER
from publication.models import Publication
from tests.factories import PublishedArticleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _publication():
    Publication.load()


def test_a_hit_runs_no_query_and_no_session_auth_or_messages_middleware(client):
    url = PublishedArticleFactory().get_absolute_url()
    miss = client.get(url)
    assert miss["X-Page-Cache"] == "miss"
    assert hasattr(miss.wsgi_request, "session")  # the miss went through the whole stack

    with CaptureQueriesContext(connection) as queries:
        hit = client.get(url)

    assert hit["X-Page-Cache"] == "hit"
    assert len(queries) == 0
    # SessionMiddleware sets request.session, AuthenticationMiddleware request.user,
    # MessageMiddleware request._messages, CsrfViewMiddleware META["CSRF_COOKIE"]: none ran.
    request = hit.wsgi_request
    assert not hasattr(request, "session")
    assert not hasattr(request, "user")
    assert not hasattr(request, "_messages")
    assert "CSRF_COOKIE" not in request.META
    assert hit.content == miss.content
    # The headers the skipped middleware add are in the stored copy.
    for header in (
        "Content-Security-Policy",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "Referrer-Policy",
        "Vary",
        "ETag",
        "Last-Modified",
    ):
        assert hit[header] == miss[header], header
    assert not hit.cookies


def test_a_reader_with_a_session_cookie_goes_through_the_whole_stack(paid_reader_client):
    article = PublishedArticleFactory(
        visibility=Article.Visibility.PAID,
        body=f"<p>Free opening.</p>{PAYWALL_MARKER}<p>Members only ending.</p>",
    )
    Client().get(article.get_absolute_url())  # an anonymous copy is stored
    response = paid_reader_client.get(article.get_absolute_url())
    assert "X-Page-Cache" not in response
    assert response.wsgi_request.user.is_authenticated
    assert "Members only ending." in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_concurrent_misses_for_one_page_render_it_once(monkeypatch):
    """A stampede after a save renewed the keys: one render, the others wait for its copy."""
    import time

    from newsletter.views import site

    Publication.load()
    url = PublishedArticleFactory().get_absolute_url()
    renders: list[int] = []
    original = site.render_article

    def slow_render(request, **kwargs):
        renders.append(threading.get_ident())
        time.sleep(0.4)  # long enough for every other request to arrive meanwhile
        return original(request, **kwargs)

    monkeypatch.setattr(site, "render_article", slow_render)
    readers = 6
    barrier = threading.Barrier(readers)
    responses: list = []
    lock = threading.Lock()

    def read() -> None:
        try:
            barrier.wait()
            response = Client().get(url)
            with lock:
                responses.append(response)
        finally:
            connection.close()

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(renders) == 1
    assert [r.status_code for r in responses] == [200] * readers
    assert sorted(r["X-Page-Cache"] for r in responses) == ["hit"] * (readers - 1) + ["miss"]
    assert len({r.content for r in responses}) == 1


def test_a_render_that_stores_nothing_lets_the_waiting_requests_render_their_own(rf):
    """A waiter must not hang on a render that ends in a 404 or a page with a cookie."""
    from django.core.cache import cache

    from newsletter.middleware import _wait_for
    from newsletter.services.page_cache import Slot

    slot = Slot(key="pages:x", generation=1)
    cache.add(slot.lock, 1, 10)
    cache.delete(slot.lock)  # the render ended without a copy
    assert _wait_for(slot) is None


# --- Conditional requests ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/p/the-article/", "/feed/", "/sitemap.xml"])
def test_a_repeat_visit_with_the_validators_is_answered_304(client, path):
    PublishedArticleFactory(slug="the-article")
    first = client.get(path)
    assert first.status_code == 200
    etag, last_modified = first["ETag"], first["Last-Modified"]

    again = client.get(path, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag

    since = client.get(path, HTTP_IF_MODIFIED_SINCE=last_modified)
    assert since.status_code == 304

    other = client.get(path, HTTP_IF_NONE_MATCH='"not-this-one"')
    assert other.status_code == 200
    assert other.content == first.content


def test_a_304_on_a_cold_cache_still_stores_the_page_for_the_next_visitor(client):
    PublishedArticleFactory(slug="the-article")
    etag = client.get("/p/the-article/")["ETag"]
    from newsletter.services.page_cache import invalidate_pages

    invalidate_pages()
    assert client.get("/p/the-article/", HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert client.get("/p/the-article/")["X-Page-Cache"] == "hit"


def test_a_change_to_the_page_changes_its_etag(client):
    article = PublishedArticleFactory(slug="the-article", title="First title")
    etag = client.get("/p/the-article/")["ETag"]
    article.title = "Second title"
    article.save()
    response = client.get("/p/the-article/", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert "Second title" in response.content.decode()
    assert response["ETag"] != etag


def test_the_feed_says_when_its_newest_article_changed(client):
    from django.utils.http import http_date, parse_http_date

    article = PublishedArticleFactory()
    response = client.get("/feed/")
    assert parse_http_date(response["Last-Modified"]) == parse_http_date(
        http_date(article.updated_at.timestamp())
    )


@pytest.mark.parametrize("path", ["/feed/", "/sitemap.xml"])
def test_the_feed_and_sitemap_are_cached_like_pages_and_renewed_by_a_publish(client, path):
    from newsletter.services.publishing import publish_article
    from tests.factories import ArticleFactory

    PublishedArticleFactory(slug="older-piece")
    assert client.get(path)["X-Page-Cache"] == "miss"
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path)["X-Page-Cache"] == "hit"
    assert len(queries) == 0

    publish_article(article=ArticleFactory(slug="newer-piece"), send_email=False)

    fresh = client.get(path)
    assert fresh["X-Page-Cache"] == "miss"
    assert "newer-piece" in fresh.content.decode()


def test_each_sitemap_page_is_stored_apart(client):
    PublishedArticleFactory(slug="the-article")
    assert client.get("/sitemap.xml")["X-Page-Cache"] == "miss"
    assert client.get("/sitemap.xml?p=2").status_code == 404
    assert client.get("/sitemap.xml?p=1")["X-Page-Cache"] == "hit"
