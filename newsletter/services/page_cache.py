"""Whole-page caching of the pages anonymous readers see.

An anonymous reader only ever gets the free part of an article, so every anonymous
visitor gets the same copy of a page and one stored copy can serve them all. A page for
a request that carries a session (a signed-in reader, an editor, someone mid-sign-in)
is never stored and never served from here: that copy may hold paid text.

Copies live for `PAGE_CACHE_SECONDS` at most, and every change to what the pages show
(an article, a comment, the publication, an import) starts a new generation of keys at
once.

Two pieces share the work. `cache_anonymous_page` marks a view as cacheable, says which
query parameters key its copies, and judges each response it renders (anonymous, 200,
no cookie, nothing kept in the session). `newsletter.middleware.PageCacheMiddleware`,
first in the stack, answers hits before any other middleware runs (no session, auth,
messages or CSRF work, no database query, no rendering) and stores the judged pages
once every other middleware has added its headers, so a hit carries the same
Content-Security-Policy, security headers and ETag as the page it copies. A view called
without the middleware (a test's request factory) stores and serves its own copies.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import set_response_etag
from django.utils.http import http_date

from config import generations
from config.cache import UNREADABLE
from newsletter.services.page_parameters import Order, discussion_page_number, parse_page_number

logger = logging.getLogger(__name__)

PAGE_CACHE_SECONDS = 60
# In every fragment's key (shells are fragments too): a deploy that changes what a
# fragment holds reads none stored by the code before it. 2: Publication moved from
# `newsletter` to `publication`, so the fragments of before name a model that is gone.
FRAGMENT_FORMAT = 2
_GENERATION_KEY = "pages:generation"
# The query parameters a cached view may read: list pages, an article's discussion, and
# the sitemap's own page number.
KNOWN_PARAMETERS = frozenset({"page", "cpage", "order", "p"})
# Set on a request by the middleware: the view only judges its page, the middleware
# serves and stores it.
MIDDLEWARE_MARK = "_page_cache_middleware"
# Set on a response by the view: fit to be stored for every anonymous visitor.
STORABLE_MARK = "_page_cache_storable"
# Cookies that mean the page may be personal: the session (signed in, or a sign-in or
# checkout under way) and one-time messages shown at the top of the next page.
_PERSONAL_COOKIES = {settings.SESSION_COOKIE_NAME, "messages"}
# The generation one request works with, read once (see `one_generation_per_request`).
_request_generation: ContextVar[list[int] | None] = ContextVar(
    "page_cache_request_generation", default=None
)
# Fragments read ahead in this request (`prefetch_fragments`), by key, each used once.
_request_fragments: ContextVar[dict[str, Any] | None] = ContextVar(
    "page_cache_request_fragments", default=None
)


def invalidate_pages() -> None:
    """Forget every cached page (they are found by generation, and this starts a new one).

    Once now, and once more when the change commits: until then other processes still
    read the old rows, and a page one of them renders meanwhile (an article's full text
    just before it turned paid) would be stored under the new generation and served for
    `PAGE_CACHE_SECONDS`.
    """
    _new_generation()
    transaction.on_commit(_new_generation)


def _new_generation() -> None:
    _forget_request_generation()
    try:
        cache.incr(_GENERATION_KEY)
    except ValueError:
        cache.set(_GENERATION_KEY, _first_generation(), timeout=None)


@contextmanager
def one_generation_per_request() -> Iterator[None]:
    """Within, the generation is read from the cache once, not once per fragment: a
    signed-in article page needs five fragments, and each read is a cache round trip.

    Every fragment and the page itself then belong to the same generation. A change
    made within (which starts a new generation here) is seen at once: the remembered
    generation is forgotten and read again.
    """
    token = _request_generation.set([])
    fragments = _request_fragments.set({})
    try:
        # The generation rides along with the request's first read of several keys
        # (a signed-in reader's record, `subscriptions.reader_cache`).
        with generations.one_request(ahead=[_GENERATION_KEY]):
            yield
    finally:
        _request_fragments.reset(fragments)
        _request_generation.reset(token)


def _current_generation() -> int:
    memo = _request_generation.get()
    if memo:
        return memo[0]
    ahead = generations.read_ahead(_GENERATION_KEY)
    if isinstance(ahead, int):
        _remember_generation(ahead)
        return ahead
    generation = int(cache.get_or_set(_GENERATION_KEY, _first_generation, timeout=None) or 0)
    _remember_generation(generation)
    return generation


def _remember_generation(generation: int) -> None:
    memo = _request_generation.get()
    if memo is not None:
        memo[:] = [generation]


def _forget_request_generation() -> None:
    generations.forget_read_ahead()
    memo = _request_generation.get()
    if memo is not None:
        memo.clear()
    fragments = _request_fragments.get()
    if fragments is not None:
        fragments.clear()


def _first_generation() -> int:
    """Where counting starts when the cache holds no generation (new, or evicted while
    pages stayed): the clock, so that it never lands on a generation whose pages are
    still stored. Restarting from a fixed number would serve them again."""
    return time.time_ns()


T = TypeVar("T")


def shared_fragment(name: str, build: Callable[[], T]) -> T:
    """Something every page needs that is the same for every reader, signed in or not
    (the publication, the navigation, an article's row, its discussion), built once per
    generation of the page cache, so every change shows at once.

    These are server-side objects, never a rendered page: what a reader is shown of
    them (the free or the whole article, their own comments' edit links) is still
    decided for each request.
    """
    key = fragment_key(name)
    fragments = _request_fragments.get()
    value = fragments.pop(key, None) if fragments else None
    if value is None:
        value = read(key)
    if value is None:
        value = build()
        cache.set(key, value, PAGE_CACHE_SECONDS)
    return value  # type: ignore[return-value]


def prefetch_fragments(names: Iterable[str]) -> None:
    """Read these shared fragments in one cache round trip, for the `shared_fragment`
    calls of this request that follow (within `one_generation_per_request`; outside,
    nothing is read ahead). A fragment read ahead is of the request's generation, and
    a change made within the request forgets it, as it forgets the generation."""
    fragments = _request_fragments.get()
    if fragments is None:
        return
    keys = [fragment_key(name) for name in names]
    fragments.update(_read_many(keys))


_FRAGMENT_PREFIX = f"fragments{FRAGMENT_FORMAT}:"


def fragment_key(name: str) -> str:
    """The cache key of the shared fragment `name` in the current generation, for a
    fragment stored only on some conditions (`newsletter.views.reader_shell`)."""
    return f"{_FRAGMENT_PREFIX}{_current_generation()}:{name}"


def _of_a_generation(key: str) -> bool:
    """A fragment's or shell's key: it names the generation this request read, so what
    it holds never changes and the process may keep it (`config.generations.memo`)."""
    return key.startswith(_FRAGMENT_PREFIX)


def read(key: str) -> object | None:
    """The value stored under `key`, or None if there is none or it cannot be read back
    (`config.cache.UNREADABLE`): a miss, so the caller builds and stores it again, never
    a 500.

    Every read of a fragment, a shell or a page goes through here or `_read_many`;
    a fragment's or a shell's is answered from the process's memo when it holds it.
    """
    kept = _of_a_generation(key)
    if kept:
        value = generations.memo.get(key)
        if value is not None:
            return value
    try:
        value = cache.get(key)
    except UNREADABLE as error:
        logger.warning("Cached %s cannot be read back (%r): treated as a miss", key, error)
        cache.delete(key)
        return None
    if kept:
        generations.memo.put(key, value)
    return value


def _read_many(keys: list[str]) -> dict[str, Any]:
    """`cache.get_many`, with a value that cannot be read back left out (as `read`), and
    the fragments the process's memo holds not asked for."""
    values: dict[str, Any] = {}
    for key in keys:
        if _of_a_generation(key):
            value = generations.memo.get(key)
            if value is not None:
                values[key] = value
    missing = [key for key in keys if key not in values]
    if not missing:
        return values
    try:
        read_now = cache.get_many(missing)
    except UNREADABLE:
        read_now = {key: read(key) for key in missing}
        read_now = {key: value for key, value in read_now.items() if value is not None}
    for key, value in read_now.items():
        if _of_a_generation(key):
            generations.memo.put(key, value)
    return {**values, **read_now}


def page_parameters(request: HttpRequest, *, reads: frozenset[str]) -> list[tuple[str, str]]:
    """The query parameters a cached page reads (`reads`), as the page reads them.

    A list page (home, section, author) reads `page`; the article page reads `cpage` and
    `order` (its discussion). Each is parsed as the view parses it, so `?page=01`,
    `?order=made-up`, `?cpage=abc` and `?cpage=-1` key the same copy as the page they
    render, and every other parameter (utm_source, made-up ones, `page` on an article)
    is left out: no query string makes a copy of its own. A list page number that is no
    number or below 1 is a 404 there, and a page number past the last page is a 404
    everywhere; a 404 is never stored.
    """
    params: list[tuple[str, str]] = []
    if "page" in reads and "page" in request.GET:
        number = parse_page_number(request.GET.get("page"))
        if number is None:
            params.append(("page", "invalid"))
        elif number != 1:
            params.append(("page", str(number)))
    if "cpage" in reads:
        discussion = discussion_page_number(request.GET.get("cpage"))
        if discussion != 1:
            params.append(("cpage", str(discussion)))
    if "order" in reads:
        order = Order.parse(request.GET.get("order"))
        if order is not Order.OLDEST:
            params.append(("order", order.value))
    if "p" in reads and "p" in request.GET:
        number = parse_page_number(request.GET.get("p"))
        if number is None:
            params.append(("p", "invalid"))
        elif number != 1:
            params.append(("p", str(number)))
    return params


@dataclass(frozen=True)
class Slot:
    """Where a request's copy lives (`key`, one per page) and the generation it is of.

    The generation is read before the page is rendered: a page rendered while a change
    commits is stored as of the generation it was rendered in, which the change has
    already left, so it is never served.
    """

    key: str
    generation: int

    @property
    def lock(self) -> str:
        return f"pagelock:{self.generation}:{self.key}"


def _page_slot_key(request: HttpRequest, reads: frozenset[str]) -> str:
    params = urlencode(page_parameters(request, reads=reads))
    page = f"{request.scheme}://{request.get_host()}{request.path}?{params}"
    return f"pages:{hashlib.sha256(page.encode()).hexdigest()}"


def lookup(request: HttpRequest, reads: frozenset[str]) -> tuple[Slot, StoredPage | None]:
    """This request's slot, and its copy if one of the current generation is stored.

    One cache round trip for a hit: the generation and the page are read together, and
    a copy of another generation is no copy.
    """
    key = _page_slot_key(request, reads)
    values = _read_many([_GENERATION_KEY, key])
    generation = values.get(_GENERATION_KEY)
    if generation is None:
        _forget_request_generation()
        return Slot(key=key, generation=_current_generation()), None
    _remember_generation(generation)
    slot = Slot(key=key, generation=generation)
    return slot, _of_generation(values.get(key), slot)


def _of_generation(value: object, slot: Slot) -> StoredPage | None:
    if isinstance(value, StoredPage) and value.generation == slot.generation:
        return value
    return None


def anonymous(request: HttpRequest) -> bool:
    """No cookie that could make the page personal (session, messages)."""
    return not (_PERSONAL_COOKIES & request.COOKIES.keys())


def cacheable_request(request: HttpRequest) -> bool:
    return request.method in ("GET", "HEAD") and anonymous(request)


# --- Stored copies ------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPage:
    """A page as it left the stack: status, headers and body, without the response object
    (no middleware state, no request, nothing but what a visitor receives)."""

    generation: int
    status: int
    headers: tuple[tuple[str, str], ...]
    content: bytes

    def response(self, *, state: str) -> HttpResponse:
        response = HttpResponse(self.content, status=self.status, headers=dict(self.headers))
        response["X-Page-Cache"] = state
        return response


def fit_to_store(request: HttpRequest, response: HttpResponseBase) -> bool:
    """Only a plain 200 to a GET, with no cookie for this visitor, is a copy for everyone."""
    return (
        request.method == "GET"
        and response.status_code == 200
        and not response.streaming
        and not response.cookies
        and isinstance(response, HttpResponse)
    )


def store(slot: Slot, response: HttpResponse) -> None:
    """Keep this page for `PAGE_CACHE_SECONDS`, with the validators a revisit is checked by.

    The ETag is the body's hash, so a copy rendered again after a change elsewhere
    still matches what a reader's browser holds; Last-Modified is when it was made,
    unless the view said when its content changed (the feed does).
    """
    if not response.has_header("ETag"):
        set_response_etag(response)
    if not response.has_header("Last-Modified"):
        response["Last-Modified"] = http_date()
    response["X-Page-Cache"] = "miss"
    stored = StoredPage(
        generation=slot.generation,
        status=response.status_code,
        headers=tuple((name, value) for name, value in response.items() if name != "X-Page-Cache"),
        content=response.content,
    )
    cache.set(slot.key, stored, PAGE_CACHE_SECONDS)


def stored(slot: Slot) -> StoredPage | None:
    """The slot's copy, if one of the slot's generation is stored now."""
    return _of_generation(read(slot.key), slot)


def _kept_something_for_this_visitor(request: HttpRequest) -> bool:
    """The view wrote to the visitor's session or left them a message: the page is theirs.

    The middleware turns either into a cookie only after the view has returned, so
    `response.cookies` does not show it yet.
    """
    session = getattr(request, "session", None)
    if session is not None and session.modified:
        return True
    return bool(getattr(getattr(request, "_messages", None), "added_new", False))


View = Callable[..., HttpResponse]


def cache_anonymous_page(*, reads: Iterable[str] = ()) -> Callable[[View], View]:
    """Store the view's page for anonymous readers, keyed by the query parameters it `reads`."""
    known = frozenset(reads)
    unknown = known - KNOWN_PARAMETERS
    if unknown:
        raise ValueError(f"The page cache does not know how a page reads {sorted(unknown)}")

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not cacheable_request(request):
                return view(request, *args, **kwargs)
            if getattr(request, MIDDLEWARE_MARK, False):
                response = view(request, *args, **kwargs)
                setattr(response, STORABLE_MARK, _for_everyone(request))
                return response
            slot, page = lookup(request, known)
            if page is not None:
                return page.response(state="hit")
            response = view(request, *args, **kwargs)
            if fit_to_store(request, response) and _for_everyone(request):
                store(slot, response)
            return response

        wrapped.page_cache_reads = known  # type: ignore[attr-defined]
        return wrapped

    return decorate


def _for_everyone(request: HttpRequest) -> bool:
    """Nobody signed in during the view, and it kept nothing for this visitor."""
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    return not signed_in and not _kept_something_for_this_visitor(request)
