"""Fewer cache round trips for values stored under a generation: a memo in the process,
and keys read ahead with a request's first read.

A value stored under a key that names a generation (the page cache's fragments and
shells, a reader's record under their access generation and version) never changes
while that generation is current: every change that would alter it starts a new
generation, so its key is never read again. Such a value can be kept in the process
(`Memo`) and read from there, as long as the request has read the *current* generation
from the cache first: the memo is only ever asked for the key of the generation read in
this request, never trusted on its own. It keeps the value pickled, as the cache does,
so each request gets its own copy (a User, an Article) to give state to, as from the
cache. It holds at most `MEMO_ENTRIES` values and each for `MEMO_SECONDS` at most: a
value also lapses from the cache after its lifetime, and that bound stays close.

`read_many` reads some keys together with the keys another part of the request will
want (`one_request(ahead=...)`, the page cache's generation), in one round trip, and
keeps those for `read_ahead`, each used at most once.

Infrastructure: imports none of the apps; the page cache and the reader cache use it.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.core.cache import cache

MEMO_ENTRIES = 512
MEMO_SECONDS = 10.0
_MISSING = object()


class Memo:
    """A bounded, least-recently-used map of pickled values with a lifetime, shared by
    the threads of a process."""

    def __init__(self, *, entries: int = MEMO_ENTRIES, seconds: float = MEMO_SECONDS) -> None:
        self.entries = entries
        self.seconds = seconds
        self._values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """A fresh copy of the value kept under `key`, or None."""
        with self._lock:
            kept = self._values.get(key)
            if kept is None:
                return None
            if kept[0] <= time.monotonic():
                del self._values[key]
                return None
            self._values.move_to_end(key)
        return pickle.loads(kept[1])  # noqa: S301 - pickled by this process, in `put`

    def put(self, key: str, value: Any) -> None:
        if value is None:
            return
        try:
            pickled = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            return  # the cache would not keep it either
        with self._lock:
            self._values[key] = (time.monotonic() + self.seconds, pickled)
            self._values.move_to_end(key)
            while len(self._values) > self.entries:
                self._values.popitem(last=False)

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


# One memo for the process: keys carry their generation, and each user of it its own
# prefix (the page cache's `fragments<N>:`, the reader cache's `readers<N>:`).
memo = Memo()

# Keys to read along with this request's first `read_many`, then what was read of them.
_wanted: ContextVar[list[str] | None] = ContextVar("generations_wanted", default=None)
_read_ahead: ContextVar[dict[str, Any] | None] = ContextVar("generations_read_ahead", default=None)


@contextmanager
def one_request(*, ahead: Iterable[str] = ()) -> Iterator[None]:
    """Within, the first `read_many` also reads the keys `ahead` (once per request)."""
    wanted = _wanted.set(list(ahead))
    read = _read_ahead.set({})
    try:
        yield
    finally:
        _read_ahead.reset(read)
        _wanted.reset(wanted)


def read_many(keys: list[str]) -> dict[str, Any]:
    """`cache.get_many(keys)`, in the same round trip as the keys this request wants read
    ahead and has not read yet."""
    wanted = _wanted.get()
    ahead = [key for key in wanted if key not in keys] if wanted else []
    values = cache.get_many([*keys, *ahead])
    if wanted:
        wanted.clear()
        read = _read_ahead.get()
        if read is not None:
            read.update({key: values.pop(key, None) for key in ahead})
    return values


def read_ahead(key: str) -> Any:
    """The value of `key` read ahead in this request (then forgotten), or `_MISSING`."""
    read = _read_ahead.get()
    if not read or key not in read:
        return _MISSING
    return read.pop(key)


def was_read(value: Any) -> bool:
    return value is not _MISSING


def forget_read_ahead() -> None:
    """A change within the request: what was read ahead is read again."""
    read = _read_ahead.get()
    if read is not None:
        read.clear()
