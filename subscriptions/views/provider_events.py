"""The email provider's tracking webhooks, through django-anymail.

anymail verifies and parses each provider's webhook (mounted under /anymail/) and sends
its `tracking` signal; this receiver hands bounces, complaints and unsubscribes on.
"""

from __future__ import annotations

from typing import Any

from anymail.signals import AnymailTrackingEvent, tracking
from django.dispatch import receiver

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
