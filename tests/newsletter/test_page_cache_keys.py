"""Page cache keys come from parsed parameters, so no query string fills the cache."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.services.comments import THREAD_PAGE_SIZE
from publication.models import Publication
from tests.factories import CommentFactory, PublishedArticleFactory, SectionFactory, UserFactory

pytestmark = pytest.mark.django_db

HUGE = "9223372036854775807"  # the largest bigint: OFFSET (n - 1) * 50 overflowed


@pytest.fixture(autouse=True)
def _publication():
    Publication.load()


def _stored_pages() -> int:
    return sum(1 for key in cache._cache if ":pages:" in key and "generation" not in key)  # type: ignore[attr-defined]


_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=_values)
def test_made_up_order_values_share_the_page_s_copy(client, order):
    article = PublishedArticleFactory(slug="the-article") if not _stored_pages() else None
    url = "/p/the-article/"
    if article is not None:
        client.get(url)
    before = _stored_pages()
    assert before >= 1
    response = client.get(url, {"order": order})
    assert response.status_code == 200
    if order not in ("newest",):
        assert response["X-Page-Cache"] == "hit"
    assert _stored_pages() <= before + (order == "newest")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cpage=_values, page=_values)
def test_made_up_page_numbers_make_no_copies_of_their_own(client, cpage, page):
    if not _stored_pages():
        PublishedArticleFactory(slug="the-article")
        client.get("/p/the-article/")
        client.get("/")
    stored = _stored_pages()
    assert client.get("/p/the-article/", {"cpage": cpage}).status_code in (200, 404)
    assert client.get("/", {"page": page}).status_code in (200, 404)
    # One extra copy at most: a value that does not parse as a number is one key
    # ("invalid") per page, whatever its text.
    assert _stored_pages() <= max(stored, 4)


@pytest.mark.parametrize("value", [HUGE, "99999999999999999999999999", "2", "1" * 5000])
def test_a_discussion_page_past_the_last_is_a_404_and_not_stored(client, value):
    article = PublishedArticleFactory()
    client.get(article.get_absolute_url())
    stored = _stored_pages()

    response = client.get(article.get_absolute_url(), {"cpage": value})

    assert response.status_code == (200 if len(value) > 4300 else 404)
    assert _stored_pages() <= stored + (response.status_code == 200)


@pytest.mark.parametrize("value", [HUGE, "2", "0", "-1"])
def test_a_list_page_past_the_last_is_a_404(client, value):
    SectionFactory(slug="world")
    assert client.get("/", {"page": value}).status_code == 404
    assert client.get("/s/world/", {"page": value}).status_code == 404


def test_the_last_discussion_page_and_spellings_of_a_page_number_are_served(client):
    article = PublishedArticleFactory()
    reader = UserFactory()
    CommentFactory.create_batch(THREAD_PAGE_SIZE + 1, article=article, user=reader)
    url = article.get_absolute_url()

    assert client.get(url, {"cpage": "2"}).status_code == 200
    assert client.get(url, {"cpage": "02"})["X-Page-Cache"] == "hit"
    assert client.get(url, {"cpage": "3"}).status_code == 404
    assert client.get(url, {"cpage": "1"})["X-Page-Cache"] == "miss"
    assert client.get(url)["X-Page-Cache"] == "hit"


def test_page_numbers_an_article_does_not_read_share_its_copy(client):
    article = PublishedArticleFactory()
    url = article.get_absolute_url()
    assert client.get(url)["X-Page-Cache"] == "miss"
    stored = _stored_pages()

    for n in range(300):
        value = [str(n + 2), f"junk-{n}", str(-n)][n % 3]
        response = client.get(url, {"page": value})
        assert response.status_code == 200, value
        assert response["X-Page-Cache"] == "hit", value
    assert _stored_pages() == stored


@pytest.mark.parametrize("value", ["0", "-1", "-2", "-99999999999999999999", "abc", "", " 1"])
def test_a_discussion_page_below_one_or_no_number_is_the_first_page_s_copy(client, value):
    article = PublishedArticleFactory()
    url = article.get_absolute_url()
    first = client.get(url)
    assert first["X-Page-Cache"] == "miss"

    response = client.get(url, {"cpage": value})

    assert response.status_code == 200
    assert response["X-Page-Cache"] == "hit"
    assert response.content == first.content


@pytest.mark.parametrize("path", ["/", "/s/world/"])
def test_a_list_page_shares_its_copy_whatever_cpage_says(client, path):
    SectionFactory(slug="world")
    PublishedArticleFactory()
    assert client.get(path)["X-Page-Cache"] == "miss"
    stored = _stored_pages()
    for value in ("2", "3", "99999999999999999999", "-1", "x"):
        response = client.get(path, {"cpage": value, "order": "newest"})
        assert response["X-Page-Cache"] == "hit", value
    assert _stored_pages() == stored
