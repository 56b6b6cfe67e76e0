"""Per-request memory of who may read what (`subscriptions.services.access`)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from subscriptions.services.access import remembered_for_one_request


class ReaderAccessMiddleware:
    """A reader's paid status is looked up once per request, however often a page asks."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with remembered_for_one_request():
            return self.get_response(request)
