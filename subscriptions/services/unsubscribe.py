"""Leaving the list: one-click unsubscribes and the email provider's bounce reports.

Each change is a single UPDATE, so it takes effect at once: the sending workers
re-check a subscriber's status when they claim the delivery.
"""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from subscriptions.models import Subscriber
from subscriptions.services.addresses import normalized_or_none
from subscriptions.services.tokens import read_unsubscribe_token

S = Subscriber.Status

# Which statuses a provider event may replace: a complaint outranks everything,
# a bounce outranks an unsubscribe, and nothing moves a complained address back.
_REPLACEABLE: dict[str, list[Subscriber.Status]] = {
    S.UNSUBSCRIBED: [S.PENDING, S.ACTIVE],
    S.BOUNCED: [S.PENDING, S.ACTIVE, S.UNSUBSCRIBED],
    S.COMPLAINED: [S.PENDING, S.ACTIVE, S.UNSUBSCRIBED, S.BOUNCED],
}

PROVIDER_EVENT_STATUS = {
    "bounced": S.BOUNCED,
    "complained": S.COMPLAINED,
    "unsubscribed": S.UNSUBSCRIBED,
}


def unsubscribe_subscriber(*, subscriber: Subscriber, reason: str) -> bool:
    """Stop all email to this subscriber now. Idempotent; True if the status changed."""
    return _set_status(query=Q(pk=subscriber.pk), status=S.UNSUBSCRIBED, reason=reason) > 0


def unsubscribe_subscribers(*, subscriber_ids: list[int], reason: str) -> int:
    """Unsubscribe many at once (the admin action); returns how many changed."""
    return _set_status(query=Q(pk__in=subscriber_ids), status=S.UNSUBSCRIBED, reason=reason)


def unsubscribe_by_token(*, token: str) -> Subscriber | None:
    """The one-click unsubscribe. Raises InvalidToken; None if the reader was erased."""
    subscriber_id = read_unsubscribe_token(token=token)
    subscriber = Subscriber.objects.filter(pk=subscriber_id).first()
    if subscriber is not None:
        unsubscribe_subscriber(subscriber=subscriber, reason="unsubscribe link")
        subscriber.refresh_from_db()
    return subscriber


def subscriber_for_unsubscribe_token(*, token: str) -> Subscriber | None:
    return Subscriber.objects.filter(pk=read_unsubscribe_token(token=token)).first()


def record_provider_event(*, email: str, event_type: str, description: str = "") -> int:
    """Apply a bounce, complaint or unsubscribe reported by the email provider.

    Returns how many subscribers changed (0 for unknown addresses and other events).
    """
    status = PROVIDER_EVENT_STATUS.get(event_type)
    normalized = normalized_or_none(email)
    if status is None or normalized is None:
        return 0
    reason = f"provider: {event_type}" + (f" ({description})" if description else "")
    return _set_status(query=Q(email=normalized), status=status, reason=reason)


def _set_status(*, query: Q, status: str, reason: str) -> int:
    now = timezone.now()
    return Subscriber.objects.filter(query, status__in=_REPLACEABLE[status]).update(
        status=status, status_reason=reason[:200], unsubscribed_at=now, updated_at=now
    )
