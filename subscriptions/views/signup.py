"""Subscribe, and confirm by the emailed link."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from subscriptions.forms import SubscribeForm
from subscriptions.services.attribution import source_for_ref
from subscriptions.services.ratelimit import client_ip, consume, network_key
from subscriptions.services.signup import confirm_subscriber, subscribe
from subscriptions.services.tokens import InvalidToken

# Signups accepted from one IP address per window (a household or office shares one).
SIGNUPS_PER_IP = 10
SIGNUP_WINDOW_SECONDS = 60 * 10


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def _posted_from_another_site(request: HttpRequest) -> bool:
    """A browser names the page's origin on every cross-site POST; refuse foreign ones.

    Sites allowed to embed the signup form are listed in CSRF_TRUSTED_ORIGINS. Without
    an Origin header (older browsers, some privacy extensions) the Referer, when there
    is one, must be from an allowed site too, and a browser's `Sec-Fetch-Site:
    cross-site` is refused; a request with neither header is no browser form post.
    """
    here = f"{request.scheme}://{request.get_host()}"
    allowed = {_origin_of(url) for url in [settings.SITE_URL, here, *settings.CSRF_TRUSTED_ORIGINS]}
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.lower() not in allowed  # "null" too: sandboxed frames, data: URLs
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    referer = request.headers.get("Referer")
    if referer is not None:
        return _origin_of(referer) not in allowed
    return False


# Deliberately without a CSRF token: the signup form sits in the footer of pages that are
# cached and shared between anonymous readers, so no per-visitor token can be in it.
# Instead a browser's Origin header must name this site (or a trusted embedding site),
# and a signup can do no more than ask an address to confirm; the honeypot, the per-IP
# limit and one confirmation per address per few minutes bound the rest.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def subscribe_view(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        ref = request.GET.get("ref", "")
        form = SubscribeForm(
            # Only a ref that names an article is carried on: nothing else typed into the
            # link enters the page.
            initial={
                "email": request.GET.get("email", ""),
                "ref": ref if source_for_ref(ref) else "",
            }
        )
        return render(request, "subscriptions/subscribe.html", {"form": form})
    if _posted_from_another_site(request):
        return HttpResponseForbidden("Sign up on the publication's own site.")
    ip = client_ip(request)
    if not consume(
        scope="subscribe", key=network_key(ip), limit=SIGNUPS_PER_IP, period=SIGNUP_WINDOW_SECONDS
    ):
        return render(request, "subscriptions/rate_limited.html", status=429)
    form = SubscribeForm(request.POST)
    if form.is_bot:
        # Answer as for a person, so the bot learns nothing; store and send nothing.
        return render(request, "subscriptions/subscribe_done.html")
    if not form.is_valid():
        return render(request, "subscriptions/subscribe.html", {"form": form}, status=400)
    source = form.cleaned_data["source"] or request.META.get("HTTP_REFERER", "") or request.path
    subscribe(
        email=form.cleaned_data["email"],
        ip=ip,
        source=source,
        source_article_id=source_for_ref(form.cleaned_data["ref"]),
    )
    return render(request, "subscriptions/subscribe_done.html")


def confirm_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        subscriber = confirm_subscriber(token=token)
    except InvalidToken as exc:
        return render(
            request, "subscriptions/confirm_invalid.html", {"reason": str(exc)}, status=400
        )
    return render(request, "subscriptions/welcome.html", {"subscriber": subscriber})
