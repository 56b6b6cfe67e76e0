"""A signed-in paid reader's repeat article page: a bounded number of cache round trips,
counted at the Redis client, as the query-count test counts queries; and the process's
memo of generation-keyed values (`config.generations`) it owes them to."""

from __future__ import annotations

import pytest
from django.test import Client

from config import generations
from newsletter.models import Article
from newsletter.services import page_cache
from newsletter.services.content import PAYWALL_MARKER
from publication.models import Publication
from tests import processes
from tests.cache_trips import counted_redis_trips
from tests.factories import (
    CommentFactory,
    MembershipFactory,
    PublishedArticleFactory,
    SubscriberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

PAID_SENTENCE = "The members' conclusion."


@pytest.fixture
def redis_cache(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.SharedClientRedisCache",
            "LOCATION": processes.redis_database_url(5),
            "KEY_PREFIX": "test-round-trips",
        }
    }
    from django.core.cache import cache

    cache.clear()
    yield cache
    cache.clear()


def paid_reader(name: str) -> Client:
    user = UserFactory(username=name, first_name=name.title())
    MembershipFactory(subscriber=SubscriberFactory(user=user, email=user.email))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def article() -> Article:
    Publication.objects.create(pk=1, name="The Meridian Letter")
    article = PublishedArticleFactory(
        slug="long-read",
        visibility=Article.Visibility.PAID,
        body=f"<p>Free opening.</p>{PAYWALL_MARKER}<p>{PAID_SENTENCE}</p>",
    )
    for n in range(3):
        CommentFactory(article=article, body=f"Remark {n}.")
    return article


# The session (Django's cached_db engine), then the reader's access generation and own
# version with the page cache's generation, in one MGET. The reader's record, the
# article, the publication, who is banned and the page's shell come from the process.
REPEAT_PAGE_ROUND_TRIPS = 2


def test_a_paid_reader_s_repeat_page_makes_a_bounded_number_of_cache_round_trips(
    article, redis_cache
):
    pat, sam = paid_reader("pat"), paid_reader("sam")
    for client in (pat, sam, pat):
        client.get("/p/long-read/")

    with counted_redis_trips() as trips:
        response = sam.get("/p/long-read/")

    assert PAID_SENTENCE in response.content.decode()
    assert len(trips) == REPEAT_PAGE_ROUND_TRIPS, trips


def test_the_memo_keeps_at_most_its_size_dropping_the_least_recently_used():
    memo = generations.Memo(entries=3, seconds=60)
    for n in range(3):
        memo.put(f"k{n}", n)
    assert memo.get("k0") == 0  # used: now the most recent
    memo.put("k3", 3)
    memo.put("k4", 4)

    assert len(memo) == 3
    assert [memo.get(f"k{n}") for n in range(5)] == [0, None, None, 3, 4]


def test_the_memo_gives_each_caller_a_copy_of_its_own_and_forgets_after_its_lifetime():
    memo = generations.Memo(entries=8, seconds=60)
    memo.put("readers", {"names": ["Pat"]})
    memo.get("readers")["names"].append("Sam")
    assert memo.get("readers") == {"names": ["Pat"]}

    lapsed = generations.Memo(entries=8, seconds=0)
    lapsed.put("readers", {"names": ["Pat"]})
    assert lapsed.get("readers") is None


@pytest.mark.parametrize("cache_kind", ["locmem", "redis"])
def test_a_new_generation_started_by_another_process_is_read_through_the_memo(
    article, settings, cache_kind, request
):
    if cache_kind == "redis":
        request.getfixturevalue("redis_cache")
    pat = paid_reader("pat")
    for _ in range(2):
        assert "The Meridian Letter" in pat.get("/p/long-read/").content.decode()
    # Another process renames the publication and starts a new generation; this one
    # still keeps the old name under the old generation's key.
    Publication.objects.update(name="The Renamed Dispatch")
    with page_cache.one_generation_per_request():
        page_cache._new_generation()

    html = pat.get("/p/long-read/").content.decode()

    assert "The Renamed Dispatch" in html
    assert "The Meridian Letter" not in html


@pytest.mark.parametrize("cache_kind", ["locmem", "redis"])
def test_two_readers_never_get_each_other_s_record_or_name_from_the_memo(
    article, cache_kind, request
):
    if cache_kind == "redis":
        request.getfixturevalue("redis_cache")
    paying = paid_reader("pat")
    free_user = UserFactory(username="sam", first_name="Sam")
    SubscriberFactory(user=free_user, email=free_user.email)
    free = Client()
    free.force_login(free_user)

    for _ in range(3):
        for client, name, paid in ((paying, "Pat", True), (free, "Sam", False)):
            response = client.get("/p/long-read/")
            html = response.content.decode()
            assert response.wsgi_request.user.first_name == name
            assert (PAID_SENTENCE in html) is paid
