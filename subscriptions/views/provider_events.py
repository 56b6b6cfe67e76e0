"""The email provider's tracking webhooks, through django-anymail.

anymail verifies and parses each provider's webhook (mounted under /anymail/ by
`provider_webhook_urlpatterns`) and sends its `tracking` signal; this receiver hands
bounces, complaints and unsubscribes on.

A webhook answers only while it can be authenticated: the site sends through an
anymail provider (`EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend`) and
`ANYMAIL_WEBHOOK_SECRET` is set, which anymail checks as HTTP basic auth on every
call. Otherwise every /anymail/ URL is a 404: anymail without a secret accepts any
caller, and one unauthenticated POST would mark any reader complained for good.
Only the configured provider's URLs answer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from anymail.signals import AnymailTrackingEvent, tracking
from django.conf import settings
from django.core import checks
from django.dispatch import receiver
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern

from subscriptions.services.unsubscribe import record_provider_event

# anymail reports the soft (temporary) bounces of Postmark, Brevo, Mandrill and
# MailerSend as "bounced", like hard ones. A full mailbox must not take a reader off the
# list for good; if the address is really gone, a hard bounce follows.
_SOFT_BOUNCES = {"SoftBounce", "soft_bounce", "soft_bounced"}


def _provider_type(event: AnymailTrackingEvent) -> str:
    raw = event.esp_event if isinstance(event.esp_event, dict) else {}
    data = raw.get("data")  # MailerSend nests its activity
    nested = data.get("type") if isinstance(data, dict) else None
    return str(raw.get("Type") or raw.get("event") or nested or "")


@receiver(tracking, dispatch_uid="subscriptions.provider_events")
def on_tracking_event(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any):
    event_type = event.event_type or ""
    if event_type == "bounced" and _provider_type(event) in _SOFT_BOUNCES:
        event_type = "deferred"
    record_provider_event(
        email=event.recipient or "",
        event_type=event_type,
        description=(event.description or event.reject_reason or "")[:100],
    )


def webhook_provider() -> str | None:
    """The anymail provider mail goes through (`postmark`, `amazon_ses`, ...), or None."""
    backend = str(getattr(settings, "EMAIL_BACKEND", "") or "")
    prefix, _, rest = backend.partition("anymail.backends.")
    if prefix or not rest:
        return None
    return rest.split(".", 1)[0] or None


def provider_webhooks_enabled() -> bool:
    anymail = getattr(settings, "ANYMAIL", None) or {}
    return webhook_provider() is not None and bool(anymail.get("WEBHOOK_SECRET"))


def _only_when_authenticated(esp: str, view: Callable[..., HttpResponse]) -> Callable[..., Any]:
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Checked per request, so a change of settings needs no URL reload.
        if not provider_webhooks_enabled() or webhook_provider() != esp:
            raise Http404("No email provider webhooks are configured.")
        return view(request, *args, **kwargs)

    return guarded


def provider_webhook_urlpatterns() -> list[URLPattern]:
    """anymail's webhook URLs, each answering only under `provider_webhooks_enabled`."""
    from anymail import urls as anymail_urls

    patterns = []
    for pattern in anymail_urls.urlpatterns:
        if not isinstance(pattern, URLPattern) or not pattern.name:
            continue
        esp = pattern.name.rsplit("_", 2)[0]  # e.g. amazon_ses_tracking_webhook
        patterns.append(
            URLPattern(
                pattern.pattern,
                _only_when_authenticated(esp, pattern.callback),
                pattern.default_args,
                pattern.name,
            )
        )
    return patterns


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """System check: a provider's webhooks need their secret, or they stay switched off."""
    anymail = getattr(settings, "ANYMAIL", None) or {}
    if webhook_provider() and not anymail.get("WEBHOOK_SECRET"):
        return [
            checks.Warning(
                f"EMAIL_BACKEND sends through {webhook_provider()}, but ANYMAIL_WEBHOOK_SECRET "
                "is not set: its bounce and complaint webhooks answer 404, so bounced and "
                "complained addresses stay on the list.",
                hint="Set ANYMAIL_WEBHOOK_SECRET=user:password and give the provider "
                "https://user:password@<site>/anymail/<provider>/tracking/.",
                id="subscriptions.W010",
            )
        ]
    return []
