"""Whole-page caching of the pages anonymous readers see.

An anonymous reader only ever gets the free part of an article, so every anonymous
visitor gets the same copy of a page and one stored copy can serve them all. A page for
a request that carries a session (a signed-in reader, an editor, someone mid-sign-in)
is never stored and never served from here: that copy may hold paid text.

Copies live for `PAGE_CACHE_SECONDS` at most, and every change to what the pages show
(an article, a comment, the publication) starts a new generation of keys at once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from newsletter.services.page_parameters import Order, discussion_page_number, parse_page_number

PAGE_CACHE_SECONDS = 60
_GENERATION_KEY = "pages:generation"
# Cookies that mean the page may be personal: the session (signed in, or a sign-in or
# checkout under way) and one-time messages shown at the top of the next page.
_PERSONAL_COOKIES = {settings.SESSION_COOKIE_NAME, "messages"}


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
    try:
        cache.incr(_GENERATION_KEY)
    except ValueError:
        cache.set(_GENERATION_KEY, _first_generation(), timeout=None)


def _first_generation() -> int:
    """Where counting starts when the cache holds no generation (new, or evicted while
    pages stayed): the clock, so that it never lands on a generation whose pages are
    still stored. Restarting from a fixed number would serve them again."""
    return time.time_ns()


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
    return params


def _key(request: HttpRequest, reads: frozenset[str]) -> str:
    generation = cache.get_or_set(_GENERATION_KEY, _first_generation, timeout=None)
    params = urlencode(page_parameters(request, reads=reads))
    page = f"{request.scheme}://{request.get_host()}{request.path}?{params}"
    url = hashlib.sha256(page.encode()).hexdigest()
    return f"pages:{generation}:{url}"


def _anonymous(request: HttpRequest) -> bool:
    return not (_PERSONAL_COOKIES & request.COOKIES.keys())


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
    unknown = known - {"page", "cpage", "order"}
    if unknown:
        raise ValueError(f"The page cache does not know how a page reads {sorted(unknown)}")

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in ("GET", "HEAD") or not _anonymous(request):
                return view(request, *args, **kwargs)
            key = _key(request, known)
            cached = cache.get(key)
            if cached is not None:
                cached["X-Page-Cache"] = "hit"
                return cached
            response = view(request, *args, **kwargs)
            if (
                request.method == "GET"
                and response.status_code == 200
                and not response.cookies
                and not request.user.is_authenticated
                and not _kept_something_for_this_visitor(request)
            ):
                response["X-Page-Cache"] = "miss"
                cache.set(key, response, PAGE_CACHE_SECONDS)
            return response

        return wrapped

    return decorate
