"""One-click unsubscribe (RFC 8058): GET asks, POST unsubscribes.

Mail scanners fetch links, so GET changes nothing. Mail clients POST
`List-Unsubscribe=One-Click` with no cookies and no CSRF token, so the POST is exempt
from CSRF: the signed token in the URL is what authorises it.
https://www.rfc-editor.org/rfc/rfc8058
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from subscriptions.services.tokens import InvalidToken
from subscriptions.services.unsubscribe import (
    subscriber_for_unsubscribe_token,
    unsubscribe_by_token,
)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        if request.method == "POST":
            subscriber = unsubscribe_by_token(token=token)
            return render(request, "subscriptions/unsubscribed.html", {"subscriber": subscriber})
        subscriber = subscriber_for_unsubscribe_token(token=token)
    except InvalidToken as exc:
        return render(
            request, "subscriptions/unsubscribe_invalid.html", {"reason": str(exc)}, status=400
        )
    return render(
        request, "subscriptions/unsubscribe.html", {"subscriber": subscriber, "token": token}
    )
