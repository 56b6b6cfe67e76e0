"""Per-request memory of who may read what (`subscriptions.services.access`), and
Stripe's webhook answered before the rest of the stack."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse

from subscriptions.services.access import remembered_for_one_request


class ReaderAccessMiddleware:
    """A reader's paid status is looked up once per request, however often a page asks."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with remembered_for_one_request():
            return self.get_response(request)


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
