"""What the page cache holds survives a deploy: a value stored by other code (the code
before a deploy, or beside it during a rolling one) that cannot be read back is a miss
and is stored again, never a 500; and fragments are keyed by their format, so the new
code does not read the old code's fragments at all."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator

import pytest
from django.core.cache import caches
from django.db.models.base import model_unpickle
from django.test import Client

from config import generations
from newsletter.models import Article
from newsletter.services import page_cache
from newsletter.services.content import PAYWALL_MARKER
from newsletter.views.reader_shell import Shell
from publication.models import Publication
from tests import processes
from tests.factories import (
    MembershipFactory,
    PublishedArticleFactory,
    SubscriberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


class Unreadable:
    """Pickles to what another version of the code could have stored: unpickling it
    runs `loader(*args)`, which fails the way that version's value would."""

    def __init__(self, loader, *args) -> None:
        self.loader = loader
        self.args = args

    def __reduce__(self):
        return (self.loader, self.args)


UNREADABLE = {
    # What the code before Publication's move stored: a model of an app without it.
    "a model that moved apps": Unreadable(model_unpickle, ("newsletter", "Publication")),
    "a class that is gone": Unreadable(pickle.loads, b"cpublication.models\nOldPublication\n."),
    "a module that is gone": Unreadable(pickle.loads, b"cnewsletter.gone_module\nThing\n."),
    "a dataclass with other fields": Unreadable(Shell, "<html>only the html</html>"),
    "a truncated pickle": Unreadable(pickle.loads, b"\x80\x05\x95\x10"),
}


@pytest.fixture(params=["locmem", "filebased", "redis"])
def any_cache(request, settings, tmp_path) -> Iterator:
    """Tests' cache, `make run`'s file cache and production's Redis backend."""
    if request.param == "filebased":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(tmp_path / "cache"),
            }
        }
    elif request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "config.cache.SharedClientRedisCache",
                "LOCATION": processes.redis_database_url(6),
                "KEY_PREFIX": "test-page-cache-deploys",
            }
        }
    cache = caches["default"]
    cache.clear()
    yield cache
    cache.clear()


@pytest.fixture
def article() -> Article:
    Publication.objects.create(pk=1, name="The Meridian Letter")
    return PublishedArticleFactory(
        slug="long-read",
        visibility=Article.Visibility.PAID,
        body=f"<p>Free opening.</p>{PAYWALL_MARKER}<p>The members' conclusion.</p>",
    )


def paid_reader() -> Client:
    user = UserFactory(first_name="Pat")
    MembershipFactory(subscriber=SubscriberFactory(user=user, email=user.email))
    client = Client()
    client.force_login(user)
    return client


def keys_stored_by(cache, monkeypatch, visit) -> set[str]:
    """The page cache's keys (fragments, shells, pages) that `visit` stores, without the
    generation (a number, read back by every version of the code)."""
    stored: set[str] = set()
    real_set = cache.set

    def recording_set(key, *args, **kwargs):
        stored.add(key)
        return real_set(key, *args, **kwargs)

    monkeypatch.setattr(cache, "set", recording_set)
    visit()
    monkeypatch.undo()
    pages = {key for key in stored if key.startswith(("fragments", "pages:"))}
    return pages - {page_cache._GENERATION_KEY}


@pytest.mark.parametrize("unreadable", UNREADABLE.values(), ids=UNREADABLE.keys())
@pytest.mark.parametrize("reader", ["signed-in", "anonymous"])
@pytest.mark.parametrize("url", ["/p/long-read/", "/"])
def test_a_stored_value_that_cannot_be_read_back_is_a_miss_and_is_stored_again(
    article, any_cache, monkeypatch, unreadable, reader, url
):
    client = paid_reader() if reader == "signed-in" else Client()
    keys = keys_stored_by(any_cache, monkeypatch, lambda: client.get(url))
    assert any(key.startswith("fragments") for key in keys), keys
    assert reader == "signed-in" or any(key.startswith("pages:") for key in keys), keys
    for key in keys:
        any_cache.set(key, unreadable, page_cache.PAGE_CACHE_SECONDS)
        with pytest.raises(Exception):  # noqa: B017 - each kind fails in its own way
            any_cache.get(key)
    generations.memo.clear()  # the new code runs in new processes, keeping nothing yet

    response = client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert "The Meridian Letter" in html
    if url == "/p/long-read/":
        assert "Free opening." in html
        assert ("The members' conclusion." in html) == (reader == "signed-in")
    for key in keys:  # stored again, readable by this code
        assert any_cache.get(key) is not None, key
    assert client.get(url).status_code == 200


def test_the_fragments_of_the_code_before_publication_moved_apps_are_never_read(article, any_cache):
    # The code before the move kept its fragments under "fragments:<generation>:<name>".
    generation = page_cache._current_generation()
    stale = Publication(pk=1, name="The Name Before The Deploy")
    any_cache.set(f"fragments:{generation}:publication", stale, page_cache.PAGE_CACHE_SECONDS)

    for client in (paid_reader(), Client()):
        html = client.get("/p/long-read/").content.decode()

        assert "The Meridian Letter" in html
        assert "The Name Before The Deploy" not in html


def test_a_value_that_cannot_be_read_back_is_logged_and_removed(caplog):
    key = page_cache.fragment_key("navigation")
    caches["default"].set(key, UNREADABLE["a truncated pickle"], page_cache.PAGE_CACHE_SECONDS)
    generations.memo.clear()

    with caplog.at_level("WARNING", logger="newsletter.services.page_cache"):
        assert page_cache.read(key) is None

    [logged] = caplog.records
    assert logged.levelname == "WARNING"
    assert logged.getMessage().startswith(f"Cached {key} cannot be read back (")
    assert logged.getMessage().endswith("): treated as a miss")
    assert repr(logged.args[1]) in logged.getMessage() and logged.args[1] is not None
    assert caches["default"].get(key) is None  # removed: the next read is a plain miss


def test_a_shared_fragment_is_built_again_once_its_time_in_the_cache_is_up(monkeypatch):
    monkeypatch.setattr(page_cache, "PAGE_CACHE_SECONDS", 1)
    built = []

    def build():
        built.append(len(built))
        return f"navigation {len(built)}"

    assert page_cache.shared_fragment("navigation", build) == "navigation 1"
    generations.memo.clear()
    assert page_cache.shared_fragment("navigation", build) == "navigation 1"
    time.sleep(1.2)
    generations.memo.clear()

    assert page_cache.shared_fragment("navigation", build) == "navigation 2"
