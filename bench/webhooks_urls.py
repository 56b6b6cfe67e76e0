"""The site's URLs plus the trivial views bench/webhooks.py compares to: `/bench/ping/`,
through the whole middleware stack, and `/bench/bare/`, answered by BareMiddleware at
the webhook's place in the stack."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import path

from config.urls import urlpatterns as site_urlpatterns


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


class BareMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path_info == "/bench/bare/":
            return ping(request)
        return self.get_response(request)


urlpatterns = [path("bench/ping/", ping), *site_urlpatterns]
