"""Who the request's reader is and what they may read, from the cache
(`subscriptions.services.reader_cache`), and Stripe's webhook answered before the rest
of the stack."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.middleware import AuthenticationMiddleware, auser
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.utils.crypto import constant_time_compare
from django.utils.functional import SimpleLazyObject, empty

from subscriptions import reader_cache
from subscriptions.services.access import paid_status, remembered_for_one_request


class ReaderAuthenticationMiddleware(AuthenticationMiddleware):
    """Django's `AuthenticationMiddleware`, with the signed-in reader's User row (and
    their paid status with it) read from their record in the cache instead of two
    queries, and that status looked up at most once per request however often a page
    asks.

    Everything else is Django's own `auth.get_user`: the session names the user and
    the backend that signed them in, a backend no longer configured signs nobody in,
    and the session's hash of the password must match the row's (a changed password
    ends every other session at once: the save renews the reader's record, so the row
    is read afresh), else the session is flushed.
    """

    # The per-request memories are context variables set around the call: sync only
    # (Django adapts it under ASGI).
    async_capable = False

    def __call__(self, request: HttpRequest) -> Any:
        with remembered_for_one_request(), reader_cache.one_request():
            response = super().__call__(request)
        if isinstance(response, HttpResponseBase):  # always: sync only (above)
            _private_if_signed_in(request, response)
        return response

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)  # the session middleware's check, request.auser
        request.user = SimpleLazyObject(lambda: _cached_user(request))  # type: ignore[assignment]
        request.auser = partial(auser, request)


def _private_if_signed_in(request: HttpRequest, response: HttpResponseBase) -> None:
    """A page built for a signed-in reader (their account pages, allauth's address
    pages) is `private, no-cache` unless its view said otherwise: no shared cache keeps
    it, and a browser asks again before showing it. Only if the request looked at who
    is signed in: a page that never did shows nothing of theirs."""
    user = getattr(request, "user", None)
    if not isinstance(user, SimpleLazyObject) or user._wrapped is empty:
        return
    if user.is_authenticated and not response.has_header("Cache-Control"):
        patch_cache_control(response, private=True, no_cache=True)


def _cached_user(request: HttpRequest) -> Any:
    if not hasattr(request, "_cached_user"):
        request._cached_user = _get_user(request)  # type: ignore[attr-defined]
    return request._cached_user  # type: ignore[attr-defined]


def _get_user(request: HttpRequest) -> Any:
    """`django.contrib.auth.get_user`, with `backend.get_user` served from the cache for
    the backends that read the User row as `ModelBackend` does."""
    user: Any = None
    try:
        user_id = get_user_model()._meta.pk.to_python(request.session[SESSION_KEY])
        backend_path = request.session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    backend = load_backend(backend_path)
    if type(backend).get_user is ModelBackend.get_user:
        user = reader_cache.signed_in_user(
            user_id=user_id, load=lambda: backend.get_user(user_id), paid_status=paid_status
        )
    else:
        user = backend.get_user(user_id)
    if hasattr(user, "get_session_auth_hash"):
        session_hash = request.session.get(HASH_SESSION_KEY) or ""
        # From the reader's record when it was read (the User in it has no password
        # hash to make them from), else from the row.
        hashes = reader_cache.remembered_session_auth_hashes(user_id=user.pk)
        session_auth_hash = hashes[0] if hashes else user.get_session_auth_hash()
        fallbacks = hashes[1:] if hashes else user.get_session_auth_fallback_hash()
        verified = bool(session_hash) and constant_time_compare(session_hash, session_auth_hash)
        if not verified:
            # The current secret does not verify the session: try the fallback secrets,
            # as Django does.
            if session_hash and any(
                constant_time_compare(session_hash, fallback) for fallback in fallbacks
            ):
                request.session.cycle_key()
                request.session[HASH_SESSION_KEY] = session_auth_hash
            else:
                request.session.flush()
                user = None
    return user or AnonymousUser()


@lru_cache(maxsize=1)
def _webhook_paths() -> frozenset[str]:
    """The webhook's path, with and without its trailing slash: Stripe follows no
    redirect, so an endpoint configured without the slash must not get APPEND_SLASH's
    301 (nor, with DEBUG on, its RuntimeError for a POST)."""
    path = reverse("subscriptions:stripe_webhook")
    return frozenset({path, path.rstrip("/")})


class StripeWebhookFirstMiddleware:
    """A delivery to /stripe/webhook/ (or /stripe/webhook) goes straight to its view,
    before any other middleware.

    The view needs none of them: it is CSRF-exempt (the signature authenticates the
    request), reads no session, user, message or cookie, and answers Stripe, which
    ignores the security headers a browser needs. Skipping them keeps a burst of
    deliveries to verifying, inserting and answering. The host is still checked
    against ALLOWED_HOSTS, as CommonMiddleware would (a 400 otherwise).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST" and request.path_info in _webhook_paths():
            from subscriptions.views.webhooks import stripe_webhook

            request.get_host()  # DisallowedHost: answered 400 by the handler
            return stripe_webhook(request)
        return self.get_response(request)
