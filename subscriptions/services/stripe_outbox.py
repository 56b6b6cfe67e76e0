"""Stripe events from acceptance to the workers: the StripeEvent table is the outbox.

The webhook only verifies, inserts the event and answers; no broker is touched in the
request, so a burst after a Stripe outage is accepted as fast as rows can be inserted,
and an event accepted while the broker is down is already safe in the database. Every
unprocessed event is due (`next_attempt_at`) from the moment it is stored. Workers
drain them (`drain`), woken by a short poll (the `drain-stripe-events` beat entry,
every STRIPE_OUTBOX_POLL_SECONDS): the same path applies new events, retries failed
ones when their backoff ends and picks up those of a worker that died mid-event.

Order per Stripe object: events are applied in the order Stripe created them (the
order received, within one second) for each object they are about (`data.object.id`).
Drainers may run side by side; each claims a batch in one transaction and leaves out
any event whose object still has an earlier unprocessed event outside the batch (being
applied elsewhere, or waiting for its retry), and within its batch stops an object's
events at the first that fails. An event that has used up its attempts no longer holds
back the events after it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from subscriptions.models import StripeEvent
from subscriptions.services.stripe_events import MAX_ATTEMPTS, SAFETY_NET_DELAY, process_event

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
# One drain stops taking new batches after this long, so a worker is not held forever
# by a backlog; the next poll goes on with it.
DRAIN_BUDGET_SECONDS = 30.0


@dataclass(frozen=True)
class _Claimed:
    pk: int
    key: str


def claim_batch(*, limit: int = BATCH_SIZE) -> tuple[list[_Claimed], int]:
    """Due events this drainer may apply now, oldest first, each leased for
    SAFETY_NET_DELAY; and how many due events it had to leave to another drainer."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            StripeEvent.objects.select_for_update(skip_locked=True)
            .filter(processed_at__isnull=True, next_attempt_at__lte=now, attempts__lt=MAX_ATTEMPTS)
            .order_by("created", "pk")
            .values_list("pk", "object_id", "created")[:limit]
        )
        if not due:
            return [], 0
        batch = {pk for pk, _key, _created in due}
        keys = {key for _pk, key, _created in due if key}
        earliest_elsewhere: dict[str, tuple[Any, int]] = {}
        for pk, key, created in (
            StripeEvent.objects.filter(
                processed_at__isnull=True, attempts__lt=MAX_ATTEMPTS, object_id__in=keys
            )
            .exclude(pk__in=batch)
            .values_list("pk", "object_id", "created")
        ):
            if key not in earliest_elsewhere or (created, pk) < earliest_elsewhere[key]:
                earliest_elsewhere[key] = (created, pk)
        claimed = [
            _Claimed(pk=pk, key=key)
            for pk, key, created in due
            if not key or key not in earliest_elsewhere or earliest_elsewhere[key] > (created, pk)
        ]
        StripeEvent.objects.filter(pk__in=[c.pk for c in claimed]).update(
            next_attempt_at=now + SAFETY_NET_DELAY
        )
    return claimed, len(due) - len(claimed)


def _release(pks: list[int]) -> None:
    """Claimed but not attempted: due again at once."""
    if pks:
        StripeEvent.objects.filter(pk__in=pks, processed_at__isnull=True).update(
            next_attempt_at=timezone.now()
        )


def apply_batch(claimed: list[_Claimed]) -> int:
    """Apply claimed events in order; an object's events stop at its first failure."""
    attempted = 0
    stopped: set[str] = set()
    held: list[int] = []
    for event in claimed:
        if event.key and event.key in stopped:
            held.append(event.pk)
            continue
        attempted += 1
        if not process_event(event_id=event.pk) and event.key:
            stopped.add(event.key)
    _release(held)
    return attempted


def drain(*, budget_seconds: float = DRAIN_BUDGET_SECONDS, limit: int = BATCH_SIZE) -> int:
    """Apply every due event this drainer can; returns how many it attempted."""
    deadline = time.monotonic() + budget_seconds
    attempted = 0
    while time.monotonic() < deadline:
        claimed, left = claim_batch(limit=limit)
        if not claimed:
            # Nothing due, or only events behind another drainer's: the next poll.
            break
        attempted += apply_batch(claimed)
        if len(claimed) + left < limit:
            break
    return attempted
