"""What a payment Stripe reports changes about the reader who made it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions.models import Subscriber
from subscriptions.services.memberships import confirm_paying_subscriber, link_stripe_customer
from tests.factories import SubscriberFactory

pytestmark = pytest.mark.django_db


def test_a_pending_reader_who_pays_is_confirmed_with_consent_recorded_now():
    reader = SubscriberFactory(status=Subscriber.Status.PENDING, consent_at=None, confirmed_at=None)
    before = timezone.now()

    confirm_paying_subscriber(subscriber=reader, source="stripe")

    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.ACTIVE
    assert reader.confirmed_at is not None and reader.confirmed_at >= before
    assert reader.consent_at == reader.confirmed_at


def test_a_pending_reader_who_consented_earlier_keeps_that_consent_time():
    consented = timezone.now() - timedelta(days=3)
    reader = SubscriberFactory(
        status=Subscriber.Status.PENDING, consent_at=consented, confirmed_at=None
    )

    confirm_paying_subscriber(subscriber=reader, source="stripe")

    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.ACTIVE
    assert reader.consent_at == consented
    assert reader.confirmed_at > consented


@pytest.mark.parametrize("state", [Subscriber.Status.UNSUBSCRIBED, Subscriber.Status.BOUNCED])
def test_a_reader_who_left_while_their_payment_was_processed_is_not_made_active(state):
    """The reader was loaded pending; they unsubscribed (or bounced) before the update."""
    leaving = SubscriberFactory(
        status=Subscriber.Status.PENDING, consent_at=None, confirmed_at=None
    )
    other = SubscriberFactory(status=Subscriber.Status.PENDING, consent_at=None, confirmed_at=None)
    Subscriber.objects.filter(pk=leaving.pk).update(status=state)

    confirm_paying_subscriber(subscriber=leaving, source="stripe")

    assert Subscriber.objects.get(pk=leaving.pk).status == state
    assert Subscriber.objects.get(pk=leaving.pk).confirmed_at is None
    assert Subscriber.objects.get(pk=other.pk).status == Subscriber.Status.PENDING
    assert leaving.status == state


def test_a_reader_linked_to_a_stripe_customer_meanwhile_keeps_that_customer():
    """Loaded unlinked; another event linked them before this one's update."""
    reader = SubscriberFactory(stripe_customer_id=None)
    Subscriber.objects.filter(pk=reader.pk).update(stripe_customer_id="cus_first")

    link_stripe_customer(subscriber=reader, customer_id="cus_second")

    assert Subscriber.objects.get(pk=reader.pk).stripe_customer_id == "cus_first"
    assert reader.stripe_customer_id == "cus_first"


def test_an_unlinked_reader_is_linked_to_the_customer_who_paid():
    reader = SubscriberFactory(stripe_customer_id=None)

    link_stripe_customer(subscriber=reader, customer_id="cus_new")

    assert reader.stripe_customer_id == "cus_new"
    assert Subscriber.objects.get(pk=reader.pk).stripe_customer_id == "cus_new"


def test_an_empty_customer_id_links_nobody():
    """An empty id would take the unique column's one empty value from the next reader."""
    reader = SubscriberFactory(stripe_customer_id=None)

    link_stripe_customer(subscriber=reader, customer_id="")

    assert Subscriber.objects.get(pk=reader.pk).stripe_customer_id is None
