"""The email provider's tracking webhooks, through django-anymail.

anymail verifies and parses each provider's webhook (mounted under /anymail/) and sends
its `tracking` signal; this receiver hands bounces, complaints and unsubscribes on.
"""

from __future__ import annotations

from typing import Any

from anymail.signals import AnymailTrackingEvent, tracking
from django.dispatch import receiver

from subscriptions.services.unsubscribe import record_provider_event


@receiver(tracking, dispatch_uid="subscriptions.provider_events")
def on_tracking_event(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any):
    record_provider_event(
        email=event.recipient or "",
        event_type=event.event_type or "",
        description=(event.description or event.reject_reason or "")[:100],
    )
