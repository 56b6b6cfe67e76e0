"""The anonymous page cache: shared copies for anonymous readers, never paid text."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from newsletter.models import Article, Publication
from newsletter.services.comments import hide_comments
from newsletter.services.content import PAYWALL_MARKER
from newsletter.services.publishing import publish_article
from tests.factories import (
    ArticleFactory,
    CommentFactory,
    PublishedArticleFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _publication():
    Publication.load()  # the first page view would create it, starting a new generation


PAID_TEXT = "The paid conclusion only members may read."


@pytest.fixture
def paid_article():
    return PublishedArticleFactory(
        slug="paid-piece",
        visibility=Article.Visibility.PAID,
        body=f"<p>The free opening.</p>{PAYWALL_MARKER}<p>{PAID_TEXT}</p>",
    )


def test_an_anonymous_reader_gets_the_stored_copy_without_touching_the_database(client):
    article = PublishedArticleFactory()
    first = client.get(article.get_absolute_url())
    assert first["X-Page-Cache"] == "miss"
    with CaptureQueriesContext(connection) as queries:
        second = client.get(article.get_absolute_url())
    assert second["X-Page-Cache"] == "hit"
    assert second.content == first.content
    assert len(queries) == 0


def test_a_signed_in_paid_reader_is_never_served_or_stored_in_the_shared_cache(
    client, paid_reader_client, paid_article
):
    from django.test import Client

    anonymous = Client()
    assert PAID_TEXT not in anonymous.get("/p/paid-piece/").content.decode()  # stored

    paid = paid_reader_client.get("/p/paid-piece/")
    assert "X-Page-Cache" not in paid
    assert PAID_TEXT in paid.content.decode()
    assert "private" in paid["Cache-Control"]

    again = anonymous.get("/p/paid-piece/")
    assert again["X-Page-Cache"] == "hit"
    assert PAID_TEXT not in again.content.decode()


def test_a_paid_readers_page_is_not_stored_for_the_anonymous_readers_after_them(
    paid_reader_client, paid_article
):
    from django.test import Client

    assert PAID_TEXT in paid_reader_client.get("/p/paid-piece/").content.decode()
    anonymous = Client().get("/p/paid-piece/")
    assert anonymous["X-Page-Cache"] == "miss"
    assert PAID_TEXT not in anonymous.content.decode()


def test_publishing_an_article_shows_it_on_the_cached_home_page_at_once(client):
    PublishedArticleFactory(title="Yesterday's dispatch")
    assert client.get("/")["X-Page-Cache"] == "miss"
    assert client.get("/")["X-Page-Cache"] == "hit"

    publish_article(article=ArticleFactory(title="Fresh from the desk"), send_email=False)

    home = client.get("/")
    assert home["X-Page-Cache"] == "miss"
    assert "Fresh from the desk" in home.content.decode()


def test_a_page_stored_before_an_article_turned_paid_was_committed_is_not_served_after(
    client, django_capture_on_commit_callbacks
):
    article = PublishedArticleFactory(body=f"<p>The free opening.</p><p>{PAID_TEXT}</p>")
    url = article.get_absolute_url()
    with django_capture_on_commit_callbacks(execute=True):
        article.visibility = Article.Visibility.PAID
        article.save()
        # Until the commit, other processes still render the public article from the old
        # row; this stands for one of them storing its copy under the new generation.
        assert client.get(url)["X-Page-Cache"] == "miss"
        assert client.get(url)["X-Page-Cache"] == "hit"

    after = client.get(url)
    assert after["X-Page-Cache"] == "miss"
    assert PAID_TEXT not in after.content.decode()


def test_hiding_a_comment_takes_it_off_the_cached_article_page_at_once(client):
    comment = CommentFactory(body="A remark the editors will hide.")
    url = comment.article.get_absolute_url()
    assert "A remark the editors will hide." in client.get(url).content.decode()

    hide_comments(comments=type(comment).objects.filter(pk=comment.pk))

    assert "A remark the editors will hide." not in client.get(url).content.decode()


def test_a_request_with_a_session_or_messages_is_not_cached(client):
    article = PublishedArticleFactory()
    client.cookies["messages"] = "something"
    assert "X-Page-Cache" not in client.get(article.get_absolute_url())
    del client.cookies["messages"]
    client.cookies["sessionid"] = "whatever"
    assert "X-Page-Cache" not in client.get(article.get_absolute_url())


@pytest.mark.parametrize("keeps", ["session", "message"])
def test_a_page_whose_view_kept_something_for_the_visitor_is_not_stored(rf, keeps):
    from django.contrib import messages
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.contrib.sessions.backends.db import SessionStore
    from django.http import HttpResponse

    from newsletter.services.page_cache import cache_anonymous_page

    @cache_anonymous_page()
    def view(request):
        if keeps == "session":
            request.session["seen"] = True
        else:
            messages.info(request, "Welcome back")
        return HttpResponse("A page for this visitor alone")

    def visit():
        request = rf.get(f"/kept-{keeps}/")
        request.user = AnonymousUser()
        request.session = SessionStore()
        request._messages = FallbackStorage(request)
        return view(request)

    assert "X-Page-Cache" not in visit()
    assert "X-Page-Cache" not in visit()


def test_query_parameters_the_page_does_not_read_share_its_copy_so_they_cannot_fill_the_cache(
    client,
):
    article = PublishedArticleFactory()
    url = article.get_absolute_url()
    assert client.get(url)["X-Page-Cache"] == "miss"
    assert client.get(f"{url}?utm_source=newsletter")["X-Page-Cache"] == "hit"
    assert client.get(f"{url}?made-up=1&other=2")["X-Page-Cache"] == "hit"
    assert client.get(f"{url}?order=newest")["X-Page-Cache"] == "miss"
    assert client.get(f"{url}?order=newest&utm_source=x")["X-Page-Cache"] == "hit"
