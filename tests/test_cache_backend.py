"""The Redis cache backend of production (config/cache.py): Django's, with one client
per connection pool instead of one per call."""

from __future__ import annotations

import threading

import pytest
from django.core.cache import caches

from tests import processes


@pytest.fixture
def redis_cache(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.SharedClientRedisCache",
            "LOCATION": processes.redis_database_url(4),
            "KEY_PREFIX": "test-cache-backend",
        }
    }
    cache = caches["default"]
    cache.clear()
    yield cache
    cache.clear()


def test_every_call_of_one_cache_uses_the_same_client(redis_cache):
    client = redis_cache._cache.get_client()
    assert redis_cache._cache.get_client(write=True) is client
    redis_cache.set("a", 1)
    assert redis_cache._cache.get_client("a") is client


def test_the_cache_operations_behave_as_djangos_backend(redis_cache):
    assert redis_cache.add("lock", 1, 10) is True
    assert redis_cache.add("lock", 1, 10) is False
    redis_cache.set_many({"x": {"nested": [1, 2]}, "y": "text"}, 60)
    assert redis_cache.get_many(["x", "y", "missing"]) == {"x": {"nested": [1, 2]}, "y": "text"}
    redis_cache.set("n", 1, None)
    assert redis_cache.incr("n") == 2
    assert redis_cache.get_or_set("built", lambda: "once", 60) == "once"
    assert redis_cache.get_or_set("built", lambda: "twice", 60) == "once"
    redis_cache.delete("lock")
    assert redis_cache.get("lock") is None
    assert redis_cache.touch("x", 5) is True


def test_threads_sharing_the_client_each_read_their_own_values(redis_cache):
    shared = redis_cache._cache  # one backend object, as threads of a worker may share
    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(50):
            key = redis_cache.make_key(f"t{n}:{i}")
            shared.set(key, (n, i), 60)
            if shared.get(key, None) != (n, i):
                errors.append(f"thread {n} read another value for {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
