"""The Stripe events' outbox: drained due events, in order per Stripe object."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions.models import StripeEvent
from subscriptions.services import stripe_outbox
from subscriptions.services.stripe_events import MAX_ATTEMPTS

pytestmark = pytest.mark.django_db

NO_HANDLER = "customer.tax_id.updated"  # applied by marking it processed, nothing else


def stored(stripe_id: str, *, obj: str, seconds: int, type: str = NO_HANDLER) -> StripeEvent:
    now = timezone.now()
    payload = {"data": {"object": {"id": obj, "object": "subscription"}}}
    return StripeEvent.objects.create(
        stripe_id=stripe_id,
        type=type,
        created=now - timedelta(hours=1) + timedelta(seconds=seconds),
        payload=payload,
        object_id=StripeEvent.object_id_in(payload),
        next_attempt_at=now,
    )


def test_an_object_s_events_wait_behind_an_earlier_one_another_drainer_holds():
    first = stored("evt_1", obj="sub_a", seconds=1)
    second = stored("evt_2", obj="sub_a", seconds=2)
    other = stored("evt_3", obj="sub_b", seconds=3)

    held, _ = stripe_outbox.claim_batch(limit=1)  # drainer A takes the oldest
    assert [c.pk for c in held] == [first.pk]

    claimed, left = stripe_outbox.claim_batch()  # drainer B, meanwhile
    assert [c.pk for c in claimed] == [other.pk]
    assert left == 1  # sub_a's second event waits for the first

    stripe_outbox.apply_batch(held)
    claimed, _ = stripe_outbox.claim_batch()
    assert [c.pk for c in claimed] == [second.pk]


def test_a_failing_event_holds_back_its_object_s_later_events_until_it_is_given_up(stripe_api):
    failing = stored(
        "evt_fails", obj="sub_missing", seconds=1, type="customer.subscription.updated"
    )
    behind = stored("evt_behind", obj="sub_missing", seconds=2)
    elsewhere = stored("evt_elsewhere", obj="sub_other", seconds=3)

    assert stripe_outbox.drain() == 2  # the failing one, and the other object's

    failing.refresh_from_db()
    behind.refresh_from_db()
    elsewhere.refresh_from_db()
    assert failing.processed_at is None and failing.attempts == 1
    assert "No such subscription" in failing.error
    assert behind.processed_at is None and behind.attempts == 0
    assert elsewhere.processed_at is not None
    assert stripe_outbox.drain() == 0  # still behind the failed event's retry

    StripeEvent.objects.filter(pk=failing.pk).update(attempts=MAX_ATTEMPTS)
    assert stripe_outbox.drain() == 1
    behind.refresh_from_db()
    assert behind.processed_at is not None


def test_events_naming_no_object_are_not_held_back_by_each_other():
    payload = {"data": {"object": {"object": "balance"}}}
    assert StripeEvent.object_id_in(payload) == ""
    assert StripeEvent.object_id_in({"data": None}) == ""
    for n in range(3):
        StripeEvent.objects.create(
            stripe_id=f"evt_nothing_{n}",
            type=NO_HANDLER,
            created=timezone.now(),
            payload=payload,
            next_attempt_at=timezone.now(),
        )
    stripe_outbox.claim_batch(limit=1)
    claimed, left = stripe_outbox.claim_batch()
    assert (len(claimed), left) == (2, 0)


def test_a_drainer_that_died_leaves_its_events_due_after_the_lease():
    event = stored("evt_orphan", obj="sub_c", seconds=1)
    claimed, _ = stripe_outbox.claim_batch()
    assert [c.pk for c in claimed] == [event.pk]  # and then the worker died
    assert stripe_outbox.drain() == 0
    StripeEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())  # lease over
    assert stripe_outbox.drain() == 1
