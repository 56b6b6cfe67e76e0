"""The anonymous page cache: shared copies for anonymous readers, never paid text."""

from __future__ import annotations

import re
import types

import pytest
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import path

from config import urls as config_urls
from newsletter.models import Article
from newsletter.services.comments import hide_comments
from newsletter.services.content import PAYWALL_MARKER
from newsletter.services.page_cache import cache_anonymous_page
from newsletter.services.publishing import publish_article
from publication.models import Publication
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
    # `p` keys the sitemap's copies; an article does not read it.
    assert client.get(f"{url}?p=2")["X-Page-Cache"] == "hit"
    assert client.get(f"{url}?order=newest")["X-Page-Cache"] == "miss"
    assert client.get(f"{url}?order=newest&utm_source=x")["X-Page-Cache"] == "hit"


# --- What the key is made of, and what is never stored -----------------------------------


def card_titles(response) -> list[str]:
    from tests.html import elements

    return [
        re.sub(r"<[^>]+>", "", title).strip()
        for title in elements(response.content, css_class="card__title")
    ]


def test_each_page_of_the_article_list_is_stored_apart_and_shows_its_own_articles(client):
    from datetime import timedelta

    from django.utils import timezone

    start = timezone.now() - timedelta(days=30)
    for n in range(12):
        PublishedArticleFactory(title=f"Dispatch {n:02}", published_at=start + timedelta(days=n))

    first = client.get("/")
    second = client.get("/?page=2")
    assert second["X-Page-Cache"] == "miss"
    assert card_titles(first) == [f"Dispatch {n:02}" for n in range(11, 1, -1)]
    assert card_titles(second) == ["Dispatch 01", "Dispatch 00"]
    again = client.get("/?page=2")
    assert again["X-Page-Cache"] == "hit"
    assert card_titles(again) == ["Dispatch 01", "Dispatch 00"]
    assert card_titles(client.get("/?page=1")) == card_titles(first)


def test_each_page_of_a_long_discussion_is_stored_apart_and_shows_its_own_comments(client):
    from newsletter.services.comments import THREAD_PAGE_SIZE

    article = PublishedArticleFactory()
    for n in range(THREAD_PAGE_SIZE + 2):
        CommentFactory(article=article, body=f"Remark number {n:03}.")
    url = article.get_absolute_url()

    first = client.get(url).content.decode()
    second = client.get(f"{url}?cpage=2")
    assert second["X-Page-Cache"] == "miss"
    last = f"Remark number {THREAD_PAGE_SIZE + 1:03}."
    assert "Remark number 000." in first
    assert last not in first
    assert last in second.content.decode()
    assert "Remark number 000." not in second.content.decode()
    assert client.get(f"{url}?cpage=2")["X-Page-Cache"] == "hit"


def test_a_page_asked_for_on_another_host_or_over_https_is_stored_apart(client, settings):
    settings.ALLOWED_HOSTS = ["testserver", "mirror.example.org"]
    url = PublishedArticleFactory().get_absolute_url()
    assert client.get(url)["X-Page-Cache"] == "miss"
    assert client.get(url, secure=True)["X-Page-Cache"] == "miss"
    assert client.get(url, HTTP_HOST="mirror.example.org")["X-Page-Cache"] == "miss"
    assert client.get(url, secure=True)["X-Page-Cache"] == "hit"
    assert client.get(url, HTTP_HOST="mirror.example.org")["X-Page-Cache"] == "hit"
    assert client.get(url)["X-Page-Cache"] == "hit"


def decorated_view(answer):
    """A page-cached view that counts its calls and gives `answer(request)`."""
    from newsletter.services.page_cache import cache_anonymous_page

    calls = []

    @cache_anonymous_page()
    def view(request):
        calls.append(request.method)
        return answer(request)

    return view, calls


def anonymous_request(rf, method="get", path="/a-page/", **extra):
    from django.contrib.auth.models import AnonymousUser

    request = getattr(rf, method)(path, **extra)
    request.user = AnonymousUser()
    return request


@pytest.mark.parametrize("status", [201, 204, 301, 302, 400, 403, 404, 410, 500, 503])
def test_an_answer_other_than_200_is_never_stored(rf, status):
    from django.http import HttpResponse

    view, calls = decorated_view(lambda request: HttpResponse("Not a page", status=status))
    for _ in range(2):
        response = view(anonymous_request(rf))
        assert response.status_code == status
        assert "X-Page-Cache" not in response
    assert calls == ["GET", "GET"]


def test_an_answer_that_sets_a_cookie_is_never_stored(rf):
    from django.http import HttpResponse

    def answer(request):
        response = HttpResponse("A page with a cookie for this visitor alone")
        response.set_cookie("visitor", "42")
        return response

    view, calls = decorated_view(answer)
    for _ in range(2):
        response = view(anonymous_request(rf))
        assert "X-Page-Cache" not in response
        assert response.cookies["visitor"].value == "42"
    assert len(calls) == 2


def test_a_head_request_is_not_stored_and_a_post_is_neither_stored_nor_served(rf):
    from django.http import HttpResponse

    view, calls = decorated_view(lambda request: HttpResponse(f"Answer to {request.method}"))
    assert "X-Page-Cache" not in view(anonymous_request(rf, "head"))
    assert view(anonymous_request(rf))["X-Page-Cache"] == "miss"
    for _ in range(2):
        post = view(anonymous_request(rf, "post"))
        assert "X-Page-Cache" not in post
        assert post.content == b"Answer to POST"
    head = view(anonymous_request(rf, "head"))
    assert head["X-Page-Cache"] == "hit"
    assert calls == ["HEAD", "GET", "POST", "POST"]


def test_a_signed_in_request_without_a_session_cookie_is_not_stored(rf):
    from django.http import HttpResponse

    from tests.factories import UserFactory

    view, calls = decorated_view(lambda request: HttpResponse("Hello, you"))
    request = anonymous_request(rf)
    request.user = UserFactory()
    assert "X-Page-Cache" not in view(request)
    assert view(anonymous_request(rf))["X-Page-Cache"] == "miss"
    assert len(calls) == 2


def test_a_change_after_the_generation_was_evicted_still_hides_the_pages_stored_before(client):
    from django.core.cache import cache

    from newsletter.services.page_cache import invalidate_pages

    url = PublishedArticleFactory().get_absolute_url()
    assert client.get(url)["X-Page-Cache"] == "miss"
    assert client.get(url)["X-Page-Cache"] == "hit"
    cache.delete("pages:generation")  # evicted under memory pressure, pages still there
    invalidate_pages()
    assert client.get(url)["X-Page-Cache"] == "miss"
    invalidate_pages()
    assert client.get(url)["X-Page-Cache"] == "miss"


def test_one_request_reads_the_generation_once_and_sees_its_own_changes_at_once():
    from django.core.cache import cache

    from newsletter.services import page_cache

    builds = []

    def build(label):
        def make():
            builds.append(label)
            return label

        return make

    page_cache.invalidate_pages()
    with page_cache.one_generation_per_request():
        assert page_cache.shared_fragment("f", build("first")) == "first"
        # Another process starts a new generation: this request keeps the one it began
        # with, so its fragments and its page are of one generation.
        cache.incr(page_cache._GENERATION_KEY)
        assert page_cache.shared_fragment("f", build("second")) == "first"
        # A change this request makes itself is seen at once.
        page_cache.invalidate_pages()
        assert page_cache.shared_fragment("f", build("third")) == "third"
    # The next request reads the current generation.
    page_cache.invalidate_pages()
    assert page_cache.shared_fragment("f", build("fourth")) == "fourth"
    assert builds == ["first", "third", "fourth"]


def test_a_signed_in_article_page_reads_the_generation_from_the_cache_once(paid_reader_client):
    """Once, never none: the fragments and the shell the process keeps are of the
    generation read in this request (it rides along with the reader's record)."""
    from unittest import mock

    from django.core.cache import cache

    from newsletter.services import page_cache

    article = PublishedArticleFactory(body=f"<p>Free.</p>{PAYWALL_MARKER}<p>Paid.</p>")
    CommentFactory(article=article)
    url = article.get_absolute_url()
    assert paid_reader_client.get(url).status_code == 200
    assert paid_reader_client.get(url).status_code == 200  # the process keeps the parts
    reads = []
    real = {name: getattr(cache, name) for name in ("get", "get_many", "get_or_set")}
    depth = [0]  # locmem's get_many and get_or_set call its get: count the outer call

    def counting(name):
        def read(key_or_keys, *args, **kwargs):
            keys = [key_or_keys] if isinstance(key_or_keys, str) else list(key_or_keys)
            if not depth[0]:
                reads.extend(key for key in keys if key == page_cache._GENERATION_KEY)
            depth[0] += 1
            try:
                return real[name](key_or_keys, *args, **kwargs)
            finally:
                depth[0] -= 1

        return read

    with (
        mock.patch.object(cache, "get", counting("get")),
        mock.patch.object(cache, "get_many", counting("get_many")),
        mock.patch.object(cache, "get_or_set", counting("get_or_set")),
    ):
        response = paid_reader_client.get(url)
    assert response.status_code == 200
    assert "Paid." in response.content.decode()
    assert len(reads) == 1


# --- A view marked cacheable --------------------------------------------------------------


def test_a_view_that_would_read_a_parameter_the_cache_cannot_key_is_refused_at_once():
    with pytest.raises(ValueError, match=re.escape("reads ['q', 'utm_source']")):
        cache_anonymous_page(reads=["page", "utm_source", "q"])


class StackBelowThePageCache:
    """Stands for every middleware after the page cache: counts the requests it sees."""

    requests: list[str] = []

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        self.requests.append(request.get_full_path())
        return self.get_response(request)


def test_a_hit_is_answered_before_the_rest_of_the_stack_and_spelled_as_the_miss(client, settings):
    """The copies of a view marked cacheable (here, marked while the test runs) are served
    by the middleware: the stack below it sees only the render, keyed by `?page=`."""

    @cache_anonymous_page(reads=["page"])
    def listing(request):
        return HttpResponse(f"Page {request.GET.get('page', '1')}")

    urls = types.ModuleType("listing_urls")
    urls.urlpatterns = [path("listing/", listing), *config_urls.urlpatterns]
    settings.ROOT_URLCONF = urls
    below = settings.MIDDLEWARE.index("newsletter.middleware.PageCacheMiddleware") + 1
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[:below],
        f"{__name__}.StackBelowThePageCache",
        *settings.MIDDLEWARE[below:],
    ]
    StackBelowThePageCache.requests = []

    miss = client.get("/listing/?page=2&utm_source=mail")
    hit = client.get("/listing/?utm_source=other&page=02")

    assert (miss["X-Page-Cache"], hit["X-Page-Cache"]) == ("miss", "hit")
    assert hit.content == miss.content == b"Page 2"
    assert StackBelowThePageCache.requests == ["/listing/?page=2&utm_source=mail"]
    # Header names are case-insensitive, yet an operator's `curl -si | grep` is not.
    assert ("X-Page-Cache", "hit") in list(hit.items())


# --- What a stored copy holds, and for how long ---------------------------------------------


def test_a_copy_gets_the_body_s_etag_and_a_last_modified_spelled_as_browsers_read_them(rf):
    import hashlib

    view, calls = decorated_view(lambda request: HttpResponse("The same page for everyone"))
    miss = view(anonymous_request(rf))
    hit = view(anonymous_request(rf))

    body_hash = f'"{hashlib.md5(b"The same page for everyone", usedforsecurity=False).hexdigest()}"'
    assert (miss["X-Page-Cache"], hit["X-Page-Cache"]) == ("miss", "hit")
    assert miss["ETag"] == hit["ETag"] == body_hash
    assert miss["Last-Modified"] == hit["Last-Modified"]
    for response in (miss, hit):
        assert {"ETag", "Last-Modified", "X-Page-Cache"} <= {name for name, _ in response.items()}
    assert calls == ["GET"]


def test_a_copy_keeps_the_validators_its_view_set(rf):
    def answer(request):
        response = HttpResponse("A feed that knows when it last changed")
        response["ETag"] = '"edition-7"'
        response["Last-Modified"] = "Wed, 01 Jan 2020 08:00:00 GMT"
        return response

    view, _ = decorated_view(answer)
    for response in (view(anonymous_request(rf)), view(anonymous_request(rf))):
        assert response["ETag"] == '"edition-7"'
        assert response["Last-Modified"] == "Wed, 01 Jan 2020 08:00:00 GMT"


def test_a_stored_copy_holds_no_hit_or_miss_of_its_own_and_lives_page_cache_seconds(rf):
    import time

    from django.core.cache import cache

    from newsletter.services.page_cache import PAGE_CACHE_SECONDS, lookup

    view, _ = decorated_view(lambda request: HttpResponse("Kept a minute"))
    view(anonymous_request(rf))
    slot, page = lookup(anonymous_request(rf), frozenset())

    assert page is not None
    assert "x-page-cache" not in {name.lower() for name, _ in page.headers}
    expires_in = cache._expire_info[cache.make_key(slot.key)] - time.time()  # type: ignore[attr-defined]
    assert PAGE_CACHE_SECONDS - 5 < expires_in <= PAGE_CACHE_SECONDS


def test_each_list_page_number_is_a_copy_of_its_own(rf):
    from newsletter.services.page_cache import cache_anonymous_page

    @cache_anonymous_page(reads=["page"])
    def listing(request):
        return HttpResponse(f"Page {request.GET.get('page', '1')}")

    for number in ("2", "3", "2", "3"):
        response = listing(anonymous_request(rf, path=f"/listing/?page={number}"))
        assert response.content == f"Page {number}".encode()
    assert response["X-Page-Cache"] == "hit"


def test_each_sitemap_page_number_is_a_copy_of_its_own(rf):
    from newsletter.services.page_cache import cache_anonymous_page

    @cache_anonymous_page(reads=["p"])
    def sitemap_page(request):
        return HttpResponse(f"Sitemap page {request.GET.get('p', '1')}")

    for number in ("2", "3", "2", "3"):
        response = sitemap_page(anonymous_request(rf, path=f"/sitemap.xml?p={number}"))
        assert response.content == f"Sitemap page {number}".encode()
    assert response["X-Page-Cache"] == "hit"


def test_a_view_called_without_the_authentication_middleware_stores_its_copy(rf):
    view, calls = decorated_view(lambda request: HttpResponse("No user on this request"))

    assert view(rf.get("/a-page/"))["X-Page-Cache"] == "miss"
    assert view(rf.get("/a-page/"))["X-Page-Cache"] == "hit"
    assert calls == ["GET"]


def test_the_feed_s_copy_says_when_its_articles_last_changed_not_when_it_was_stored(client):
    from datetime import UTC, datetime

    from django.utils.http import http_date

    changed = datetime(2020, 1, 1, 8, 0, tzinfo=UTC)
    PublishedArticleFactory(published_at=changed)
    Article.objects.update(updated_at=changed)

    miss = client.get("/feed/")
    hit = client.get("/feed/")

    assert (miss["X-Page-Cache"], hit["X-Page-Cache"]) == ("miss", "hit")
    assert miss["Last-Modified"] == hit["Last-Modified"] == http_date(changed.timestamp())
