"""What an import left: readers, paid readers, adopted and granted memberships."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from subscriptions.models import Membership, Subscriber
from subscriptions.services.access import paid_subscribers
from substack.services.report import (
    SOURCE,
)

# --- Checking the result --------------------------------------------------------------


def import_status_lines(*, now: datetime | None = None) -> list[str]:
    """What the Substack import left: readers, paid readers, adopted and granted ones."""
    now = now or timezone.now()
    readers = Subscriber.objects.filter(imported_from=SOURCE)
    by_status = dict(
        readers.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    imported = Membership.objects.filter(imported_from__startswith=SOURCE)
    adopted = imported.filter(kind=Membership.Kind.STRIPE)
    adopted_by_status = dict(
        adopted.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    granted = imported.filter(
        kind__in=[Membership.Kind.COMP, Membership.Kind.GIFT],
        status=Membership.Status.ACTIVE,
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    span = granted.aggregate(first=Min("expires_at"), last=Max("expires_at"))
    lines = [
        f"Readers imported from Substack: {readers.count()}",
        *(f"  {status}: {count}" for status, count in sorted(by_status.items())),
        f"Paid now: {paid_subscribers(now=now).filter(imported_from=SOURCE).count()}",
        f"Adopted Stripe memberships: {adopted.count()}",
        *(f"  {status}: {count}" for status, count in sorted(adopted_by_status.items())),
        f"  on a price no plan knows (no access): {adopted.filter(foreign_price=True).count()}",
        f"Comp and gift memberships running: {granted.count()}",
    ]
    if span["first"]:
        lines.append(f"  expiring from {span['first']:%Y-%m-%d} to {span['last']:%Y-%m-%d}")
    return lines
