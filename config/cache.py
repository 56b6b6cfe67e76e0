"""The Redis cache backend, with one Redis client per connection pool.

Django's own backend makes a new `redis.Redis` for every cache call, and redis-py
builds its table of response callbacks (a few hundred entries) in each: about a tenth
of a signed-in article page's CPU time went there, and part of every cached page's.
A client is only a handle on its pool and is safe to share between threads, so one per
pool is kept; the pool still opens, checks and reuses the connections (and makes new
ones in a forked process).
"""

from __future__ import annotations

import pickle
import zlib
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


# What reading back a stored value raises when the code that stored it differs from
# the code reading it (a deploy, or the old and the new code side by side during a
# rolling one): a model that moved apps (LookupError), a class or module that moved or
# went (AttributeError, ImportError), a model rebuilt from fields it no longer has
# (TypeError), a truncated or foreign value (UnpicklingError, EOFError, ValueError,
# zlib.error from the file cache).
UNREADABLE = (
    LookupError,
    AttributeError,
    ImportError,
    TypeError,
    ValueError,
    EOFError,
    pickle.UnpicklingError,
    zlib.error,
)
