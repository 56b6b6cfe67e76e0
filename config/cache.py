"""The Redis cache backend, with one Redis client per connection pool.

Django's own backend makes a new `redis.Redis` for every cache call, and redis-py
builds its table of response callbacks (a few hundred entries) in each: about a tenth
of a signed-in article page's CPU time went there, and part of every cached page's.
A client is only a handle on its pool and is safe to share between threads, so one per
pool is kept; the pool still opens, checks and reuses the connections (and makes new
ones in a forked process).
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class SharedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        base: Any = self  # Django's private helpers, which the type stubs leave out
        index = base._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            pool = base._get_connection_pool(write)
            client = self._clients.setdefault(index, base._client(connection_pool=pool))
        return client


class SharedClientRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
