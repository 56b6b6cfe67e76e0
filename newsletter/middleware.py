"""The page cache in front of the stack: cached anonymous pages at close to a static file's cost.

First in MIDDLEWARE, so a hit is answered before the session, authentication, messages
and CSRF middleware run, without a database query and without rendering: one cache read
for the generation, one for the page. Which views are cached, and what keys their
copies, the views say (`cache_anonymous_page`); this resolves the path to find out.

A miss renders once. The first request for a page takes a short lock and renders it;
requests for the same page meanwhile (a widely shared article just after a save renewed
every key) wait for that copy instead of rendering their own, up to
`PAGE_RENDER_WAIT_SECONDS`, then render it themselves. They never get the previous
generation's copy: a save must show at once, and that copy may hold text that has just
turned paid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import DisallowedHost, DisallowedRedirect
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, get_urlconf, resolve

from newsletter.services import page_cache, tracking
from subscriptions.services.ratelimit import client_ip

logger = logging.getLogger(__name__)

_Response = TypeVar("_Response", bound=HttpResponseBase)

# The longest a render may hold its page's lock; a worker that dies mid-render frees it
# after this.
PAGE_RENDER_LOCK_SECONDS = 10
# How long a request waits for another one's render of the same page.
PAGE_RENDER_WAIT_SECONDS = 3.0
_FIRST_POLL_SECONDS = 0.005
_LONGEST_POLL_SECONDS = 0.05


@lru_cache(maxsize=4096)
def _cached_reads(urlconf: str, path: str) -> frozenset[str] | None:
    """The query parameters the view at `path` keys its copies by; None: not cached."""
    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return None
    return getattr(match.func, "page_cache_reads", None)


class PageCacheMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with page_cache.one_generation_per_request():
            return self._answer(request)

    def _answer(self, request: HttpRequest) -> HttpResponseBase:
        if not page_cache.cacheable_request(request):
            return self.get_response(request)
        reads = _cached_reads(get_urlconf() or settings.ROOT_URLCONF, request.path_info)
        if reads is None:
            return self.get_response(request)
        try:
            slot, page = page_cache.lookup(request, reads)
        except DisallowedHost:
            return self.get_response(request)  # answered 400 by the stack, as ever
        if page is not None:
            return page.response(state="hit")
        rendering = cache.add(slot.lock, 1, PAGE_RENDER_LOCK_SECONDS)
        if not rendering:
            page = _wait_for(slot)
            if page is not None:
                return page.response(state="hit")
        try:
            return self._render(request, slot)
        finally:
            if rendering:
                cache.delete(slot.lock)

    def _render(self, request: HttpRequest, slot: page_cache.Slot) -> HttpResponseBase:
        setattr(request, page_cache.MIDDLEWARE_MARK, True)
        response = self.get_response(request)
        if getattr(response, page_cache.STORABLE_MARK, False) and page_cache.fit_to_store(
            request, response
        ):
            page_cache.store(slot, response)  # type: ignore[arg-type]
        return response


def _wait_for(slot: page_cache.Slot) -> page_cache.StoredPage | None:
    """Another request is rendering this page: its copy once stored, or None when that
    render ended without one (a 404, a page with a cookie) or took too long."""
    deadline = time.monotonic() + PAGE_RENDER_WAIT_SECONDS
    pause = _FIRST_POLL_SECONDS
    while time.monotonic() < deadline:
        time.sleep(pause)
        page = page_cache.stored(slot)
        if page is not None:
            return page
        if cache.get(slot.lock) is None:
            return page_cache.stored(slot)
        pause = min(pause * 2, _LONGEST_POLL_SECONDS)
    return None


class TrackingMiddleware:
    """The open pixel and the click redirect, answered before anything else runs.

    First in MIDDLEWARE: no session, authentication, CSRF or page cache for a request
    that only records a hit and answers a 43-byte GIF or a 302. Recording is one push
    onto Redis (or, on the embedded default, one short write); a failure to record is
    logged and the reader still gets the image or their link.

    Being first, it would skip SecurityMiddleware: its request and response steps are
    run here on the pixel and the redirect (the http→https redirect when
    SECURE_SSL_REDIRECT is on, `X-Content-Type-Options: nosniff`, HSTS when
    SECURE_HSTS_SECONDS is set), as on every other page.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.security = SecurityMiddleware(get_response)

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        path = request.path_info
        if request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        if path.startswith(tracking.OPEN_PATH_PREFIX):
            token = path[len(tracking.OPEN_PATH_PREFIX) :]
            if "/" not in token:
                return self._secured(request, self._open, token)
        elif path.startswith(tracking.CLICK_PATH_PREFIX):
            token = path[len(tracking.CLICK_PATH_PREFIX) :]
            if token.endswith("/") and "/" not in token[:-1]:
                return self._secured(request, self._click, token[:-1])
        return self.get_response(request)

    def _secured(
        self,
        request: HttpRequest,
        answer: Callable[[HttpRequest, str], HttpResponse],
        token: str,
    ) -> HttpResponseBase:
        redirect = self.security.process_request(request)
        if redirect is not None:  # to https, before anything is recorded
            return self.security.process_response(request, _uncached(redirect))
        return self.security.process_response(request, answer(request, token))

    def _open(self, request: HttpRequest, token: str) -> HttpResponse:
        delivery_id = tracking.open_token_delivery(token)
        if delivery_id is None:
            return _uncached(HttpResponseBadRequest("Not a valid image address."))
        _record(request, delivery_id=delivery_id, link_id=0)
        return _uncached(HttpResponse(tracking.PIXEL_GIF, content_type="image/gif"))

    def _click(self, request: HttpRequest, token: str) -> HttpResponse:
        target = tracking.click_target(token)
        if target is None:
            return _uncached(HttpResponseBadRequest("This link is damaged: it cannot be followed."))
        try:
            response = HttpResponseRedirect(target.url)
        except (DisallowedRedirect, ValueError):  # a scheme or header Django refuses
            return _uncached(HttpResponseBadRequest("This link cannot be followed."))
        _record(request, delivery_id=target.delivery_id, link_id=target.link_id)
        return _uncached(response)


def _record(request: HttpRequest, *, delivery_id: int, link_id: int) -> None:
    try:
        tracking.record(
            tracking.hit_from_request(
                delivery_id=delivery_id,
                link_id=link_id,
                meta=request.META,
                method=request.method or "GET",
                client_ip=client_ip(request) or "",
            )
        )
    except Exception:
        logger.exception("An open or click could not be recorded.")


def _uncached(response: _Response) -> _Response:
    # Every open and click must reach the site: no browser or proxy may keep a copy.
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, private, max-age=0"
    response["Pragma"] = "no-cache"
    response["Referrer-Policy"] = "no-referrer"
    # Not logged as "Bad Request: <path>" by Django either: the path names a delivery.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
