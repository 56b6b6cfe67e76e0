"""Counting the round trips a request makes to the cache, at the cache's client.

For Redis, each command the client sends (a pipeline is one trip); for the other
backends (locmem, file), each call of the backend's public methods, as a stand-in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.client


@contextmanager
def counted_redis_trips() -> Iterator[list[str]]:
    """Every Redis command sent meanwhile, by name, in order (a pipeline as one)."""
    trips: list[str] = []
    send = redis.Redis.execute_command
    execute = redis.client.Pipeline.execute

    def counted_send(self, *args, **options):
        trips.append(str(args[0]))
        return send(self, *args, **options)

    def counted_execute(self, *args, **kwargs):
        trips.append("PIPELINE")
        return execute(self, *args, **kwargs)

    redis.Redis.execute_command = counted_send  # type: ignore[method-assign]
    redis.client.Pipeline.execute = counted_execute  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        redis.Redis.execute_command = send  # type: ignore[method-assign]
        redis.client.Pipeline.execute = execute  # type: ignore[method-assign]
