"""The daily expiry of comp and gift memberships and the reminder a week before, with
memberships of every kind and state side by side."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from subscriptions.models import Membership, Subscriber
from subscriptions.services.memberships import expire_memberships
from tests.factories import MembershipFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

K, S = Membership.Kind, Membership.Status


def membership(kind=K.COMP, status=S.ACTIVE, days=3.0, email=None, **fields):
    subscriber = SubscriberFactory(**({"email": email} if email else {}))
    stripe = kind == K.STRIPE
    return MembershipFactory(
        subscriber=subscriber,
        kind=kind,
        status=status,
        **({} if stripe else {"plan": None, "stripe_subscription_id": None}),
        expires_at=timezone.now() + timedelta(days=days) if days is not None else None,
        **fields,
    )


def run(capture):
    with capture(execute=True):
        return expire_memberships()


def test_only_active_comp_and_gift_memberships_past_their_end_expire(
    django_capture_on_commit_callbacks,
):
    lapsed_comp = membership(K.COMP, days=-1)
    lapsed_gift = membership(K.GIFT, days=-1)
    stripe_with_a_date = membership(K.STRIPE, days=-1)
    canceled_comp = membership(K.COMP, status=S.CANCELED, days=-1)
    running = membership(K.COMP, days=30)

    assert run(django_capture_on_commit_callbacks) == {"expired": 2, "reminded": 0}

    status = dict(Membership.objects.values_list("pk", "status"))
    assert status == {
        lapsed_comp.pk: S.EXPIRED,
        lapsed_gift.pk: S.EXPIRED,
        stripe_with_a_date.pk: S.ACTIVE,
        canceled_comp.pk: S.CANCELED,
        running.pk: S.ACTIVE,
    }
    canceled_comp.refresh_from_db()
    assert canceled_comp.canceled_at is None
    assert mail.outbox == []


def test_the_reminder_goes_to_active_comp_and_gift_readers_within_a_week_of_the_end(
    django_capture_on_commit_callbacks,
):
    membership(K.COMP, days=6.9, email="comp.soon@example.com")
    membership(K.GIFT, days=1, email="gift.soon@example.com")
    membership(K.COMP, days=7.1, email="comp.later@example.com")
    membership(K.STRIPE, days=3, email="stripe@example.com")
    membership(K.COMP, status=S.CANCELED, days=3, email="revoked@example.com")
    membership(K.GIFT, days=None, email="endless@example.com")

    assert run(django_capture_on_commit_callbacks) == {"expired": 0, "reminded": 2}

    assert sorted(message.to[0] for message in mail.outbox) == [
        "comp.soon@example.com",
        "gift.soon@example.com",
    ]
    reminded = Membership.objects.filter(reminder_sent_at__isnull=False)
    assert set(reminded.values_list("subscriber__email", flat=True)) == {
        "comp.soon@example.com",
        "gift.soon@example.com",
    }


def test_the_reminder_says_which_membership_ends_and_when(
    django_capture_on_commit_callbacks, plans_on_sale
):
    gift = membership(K.GIFT, days=5, email="gifted@example.com")
    run(django_capture_on_commit_callbacks)

    (message,) = mail.outbox
    assert message.subject == "Your membership ends soon"
    assert message.to == ["gifted@example.com"]
    ends = gift.expires_at.strftime("%-d %B %Y")
    assert "Your gift membership of" in message.body
    assert f"ends on {ends}." in message.body
    assert "http://testserver/upgrade/" in message.body


def test_an_address_that_takes_no_mail_does_not_stop_the_reminders_after_it(
    django_capture_on_commit_callbacks,
):
    # Memberships come newest first: the bounced one is looked at before the others.
    membership(K.COMP, days=3, email="first@example.com")
    membership(K.GIFT, days=4, email="second@example.com")
    bounced = membership(K.COMP, days=2, email="bounced@example.com")
    Subscriber.objects.filter(pk=bounced.subscriber_id).update(status=Subscriber.Status.BOUNCED)

    assert run(django_capture_on_commit_callbacks)["reminded"] == 2

    assert sorted(message.to[0] for message in mail.outbox) == [
        "first@example.com",
        "second@example.com",
    ]
    assert not Membership.objects.filter(reminder_sent_at__isnull=True).exists()


def test_the_reminder_time_is_the_run_time_and_a_second_run_sends_nothing(
    django_capture_on_commit_callbacks,
):
    soon = membership(K.COMP, days=3)
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert expire_memberships(now=now) == {"expired": 0, "reminded": 1}
    soon.refresh_from_db()
    assert soon.reminder_sent_at == now
    assert soon.status == S.ACTIVE
    assert run(django_capture_on_commit_callbacks) == {"expired": 0, "reminded": 0}
    assert len(mail.outbox) == 1


def test_expiry_is_stamped_with_the_run_time(django_capture_on_commit_callbacks):
    lapsed = membership(K.GIFT, days=-0.5)
    now = timezone.now()
    assert expire_memberships(now=now)["expired"] == 1
    lapsed.refresh_from_db()
    assert (lapsed.status, lapsed.canceled_at) == (S.EXPIRED, now)
    # Exactly at its end a membership is over.
    at_the_end = membership(K.COMP, days=1)
    assert expire_memberships(now=at_the_end.expires_at)["expired"] == 1


def also(of: Membership, kind=K.COMP, status=S.ACTIVE, days=3.0, **fields) -> Membership:
    """Another membership of the same reader."""
    stripe = kind == K.STRIPE
    return MembershipFactory(
        subscriber=of.subscriber,
        kind=kind,
        status=status,
        **({} if stripe else {"plan": None, "stripe_subscription_id": None}),
        expires_at=timezone.now() + timedelta(days=days) if days is not None else None,
        **fields,
    )


def test_no_reminder_goes_to_a_reader_whom_another_granted_membership_carries_on(
    django_capture_on_commit_callbacks,
):
    # Access runs on past the end: an endless comp, or a gift that ends later.
    endless = membership(K.GIFT, days=3, email="endless@example.com")
    also(endless, K.COMP, days=None)
    later = membership(K.COMP, days=3, email="later@example.com")
    also(later, K.GIFT, days=30)
    # Two ending this week: only the one that ends last is reminded.
    first = membership(K.COMP, days=2, email="twice@example.com")
    last = also(first, K.COMP, days=5)
    # Nothing runs on: a revoked comp, a Stripe subscription on a price that grants
    # nothing, another reader's endless comp.
    revoked = membership(K.COMP, days=3, email="revoked@example.com")
    also(revoked, K.COMP, status=S.CANCELED, days=None)
    foreign = membership(K.COMP, days=3, email="foreign@example.com")
    also(foreign, K.STRIPE, days=None, plan=None, foreign_price=True)
    membership(K.COMP, days=3, email="alone@example.com")

    assert run(django_capture_on_commit_callbacks)["reminded"] == 4

    assert sorted(message.to[0] for message in mail.outbox) == [
        "alone@example.com",
        "foreign@example.com",
        "revoked@example.com",
        "twice@example.com",
    ]
    (twice,) = [message for message in mail.outbox if message.to == ["twice@example.com"]]
    assert f"ends on {last.expires_at.strftime('%-d %B %Y')}." in twice.body
    # Those carried on are passed by for good, not looked at again every day.
    due = Membership.objects.filter(expires_at__lte=timezone.now() + timedelta(days=7))
    assert not due.filter(reminder_sent_at__isnull=True).exists()


def test_without_plans_on_sale_the_reminder_offers_no_link_to_upgrade(
    django_capture_on_commit_callbacks,
):
    from subscriptions.services.plans import upgrades_open

    assert not upgrades_open()
    membership(K.COMP, days=3)
    run(django_capture_on_commit_callbacks)

    (message,) = mail.outbox
    assert "After that you will still get the free articles, but not the paid ones.\n" in (
        message.body
    )
    assert "choose a plan" not in message.body
    html = message.alternatives[0][0]
    assert "To keep reading everything" not in html
    assert "Keep my paid access" not in html
    assert 'class="url"' not in html
