"""Who reads paid text: every kind and state of membership, and the edges between them.

Each fixture has several readers, so that a check that ignores whose membership it
looks at (or looks at nobody's) is caught by the reader next to them.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from newsletter.models import Article
from newsletter.services.access import can_read_full_article
from subscriptions.models import Membership
from subscriptions.services.access import (
    paid_subscribers,
    remembered_for_one_request,
    subscriber_for_user,
    subscriber_is_paid,
    subscriber_is_paying,
    user_is_paid,
)
from tests.factories import (
    MembershipFactory,
    PublishedArticleFactory,
    SubscriberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

K, S = Membership.Kind, Membership.Status
User = get_user_model()


def reader_with(**membership):
    """A signed-up reader with an account and one membership as given."""
    user = UserFactory()
    subscriber = SubscriberFactory(email=user.email, user=user)
    MembershipFactory(subscriber=subscriber, **membership)
    return user, subscriber


def comp(**fields):
    return {"kind": K.COMP, "plan": None, "stripe_subscription_id": None, **fields}


def gift(**fields):
    return {"kind": K.GIFT, "plan": None, "stripe_subscription_id": None, **fields}


@pytest.fixture
def paid_article():
    return PublishedArticleFactory(visibility=Article.Visibility.PAID)


@pytest.fixture
def paid_subscriber_without_an_account():
    """A paying reader made by a Payment Link or an import: no user account at all."""
    subscriber = SubscriberFactory(email="payment.link@example.com", user=None)
    MembershipFactory(subscriber=subscriber)
    return subscriber


def test_an_anonymous_visitor_is_never_a_reader_even_when_a_paid_subscriber_has_no_account(
    paid_subscriber_without_an_account, paid_article
):
    assert subscriber_is_paid(subscriber=paid_subscriber_without_an_account)
    for visitor in (AnonymousUser(), None):
        assert subscriber_for_user(user=visitor) is None
        assert user_is_paid(user=visitor) is False
        assert can_read_full_article(user=visitor, article=paid_article) is False


def test_a_user_not_yet_saved_is_never_paid_even_when_a_paid_subscriber_has_no_account(
    paid_subscriber_without_an_account,
):
    unsaved = User(username="not-saved", email="not.saved@example.com")
    assert unsaved.is_authenticated  # every User object is; only its missing pk tells

    assert user_is_paid(user=unsaved) is False
    with remembered_for_one_request():
        assert user_is_paid(user=unsaved) is False


def test_within_a_request_a_reader_not_read_with_the_page_is_asked_of_the_database(
    paid_subscriber_without_an_account,
):
    unpaid, _ = reader_with(status=S.CANCELED)
    paid, _ = reader_with()

    with remembered_for_one_request():
        # Neither is the signed-in reader of this request (no record read for them).
        assert user_is_paid(user=unpaid) is False
        assert user_is_paid(user=paid) is True
        assert user_is_paid(user=unpaid) is False


def test_a_signed_in_reader_is_the_subscriber_of_their_own_account_and_nobody_elses():
    _other_user, other = reader_with()
    user, subscriber = reader_with(status=S.CANCELED)
    assert subscriber_for_user(user=user) == subscriber
    assert user_is_paid(user=user) is False
    assert subscriber_is_paid(subscriber=other) is True


@pytest.mark.parametrize(
    "membership, paid",
    [
        ({"status": S.ACTIVE}, True),
        ({"status": S.TRIALING}, True),
        ({"status": S.INCOMPLETE}, False),
        ({"status": S.CANCELED}, False),
        ({"status": S.UNPAID}, False),
        ({"status": S.PAUSED}, False),
        (comp(status=S.ACTIVE), True),
        (gift(status=S.ACTIVE), True),
        # Revoked by an editor, with no end date: the status alone must end access.
        (comp(status=S.CANCELED), False),
        (gift(status=S.CANCELED), False),
        (comp(status=S.EXPIRED), False),
        (comp(status=S.ACTIVE, expires_at=timezone.now() + timedelta(days=1)), True),
        (comp(status=S.ACTIVE, expires_at=timezone.now() - timedelta(minutes=1)), False),
        (gift(status=S.ACTIVE, expires_at=timezone.now() - timedelta(minutes=1)), False),
        # A Stripe membership's own end date is Stripe's business, not expires_at's.
        ({"status": S.CANCELED, "expires_at": timezone.now() + timedelta(days=1)}, False),
    ],
)
def test_which_memberships_give_access(membership, paid, paid_article):
    user, subscriber = reader_with(**membership)
    _bystander, _ = reader_with(status=S.CANCELED)
    assert subscriber_is_paid(subscriber=subscriber) is paid
    assert user_is_paid(user=user) is paid
    assert can_read_full_article(user=user, article=paid_article) is paid
    assert set(paid_subscribers()) == ({subscriber} if paid else set())


def test_a_past_due_reader_keeps_access_for_exactly_seven_days_after_the_period_started():
    now = timezone.now()
    grace = timedelta(days=7)
    _, inside = reader_with(
        status=S.PAST_DUE, current_period_start=now - grace + timedelta(seconds=1)
    )
    _, at_the_edge = reader_with(status=S.PAST_DUE, current_period_start=now - grace)
    _, _outside = reader_with(
        status=S.PAST_DUE, current_period_start=now - grace - timedelta(seconds=1)
    )
    _, recent = reader_with(status=S.PAST_DUE, current_period_start=now - timedelta(days=1))
    assert set(paid_subscribers(now=now)) == {inside, recent}
    # Seen a few seconds later, the one just inside is outside too.
    assert set(paid_subscribers(now=now + timedelta(seconds=2))) == {recent}
    assert set(paid_subscribers(now=now - timedelta(seconds=1))) == {inside, at_the_edge, recent}
    assert at_the_edge not in paid_subscribers(now=now)


def test_a_comp_membership_ends_at_its_expiry_to_the_second():
    now = timezone.now()
    _, subscriber = reader_with(**comp(status=S.ACTIVE, expires_at=now))
    assert subscriber in paid_subscribers(now=now - timedelta(seconds=1))
    assert subscriber not in paid_subscribers(now=now)


def test_paying_means_a_stripe_subscription_of_this_subscriber_not_a_comp_or_someone_else():
    _, stripe_reader = reader_with(status=S.ACTIVE)
    _, comp_reader = reader_with(**comp(status=S.ACTIVE))
    _, gift_reader = reader_with(**gift(status=S.ACTIVE))
    _, lapsed_reader = reader_with(status=S.CANCELED)
    no_membership = SubscriberFactory()
    assert subscriber_is_paying(subscriber=stripe_reader) is True
    for subscriber in (comp_reader, gift_reader, lapsed_reader, no_membership):
        assert subscriber_is_paying(subscriber=subscriber) is False
    assert subscriber_is_paid(subscriber=comp_reader) is True
    assert subscriber_is_paying(subscriber=None) is False
    assert subscriber_is_paid(subscriber=None) is False


def test_a_subscriber_not_yet_saved_is_neither_paid_nor_paying():
    from subscriptions.models import Subscriber

    MembershipFactory()  # someone else pays
    unsaved = Subscriber(email="unsaved@example.com")
    assert subscriber_is_paid(subscriber=unsaved) is False
    assert subscriber_is_paying(subscriber=unsaved) is False


def test_the_past_due_grace_is_for_stripe_subscriptions_only():
    now = timezone.now()
    _, stripe = reader_with(status=S.PAST_DUE, current_period_start=now - timedelta(days=1))
    _, granted = reader_with(**comp(status=S.PAST_DUE, current_period_start=now))
    assert set(paid_subscribers(now=now)) == {stripe}
    assert subscriber_is_paid(subscriber=granted) is False


def test_paid_status_answers_for_the_moment_asked_about_and_says_when_it_next_changes():
    from subscriptions.services.access import paid_status

    now = timezone.now()
    user, subscriber = reader_with(**comp(status=S.ACTIVE, expires_at=now + timedelta(days=1)))
    MembershipFactory(
        subscriber=subscriber, **gift(status=S.ACTIVE, expires_at=now + timedelta(days=2))
    )

    # The first of the two ends is when the answer may change, whichever row holds it.
    assert paid_status(user_pk=user.pk, now=now) == (True, now + timedelta(days=1))
    # Asked about a moment after both have ended: not paid then, and never again.
    later = now + timedelta(days=3)
    assert paid_status(user_pk=user.pk, now=later) == (False, None)
    # At the very moment one ends, that end is no longer ahead.
    assert paid_status(user_pk=user.pk, now=now + timedelta(days=1)) == (
        True,
        now + timedelta(days=2),
    )


def test_a_seat_an_editor_turned_into_a_comp_ends_with_its_expiry_though_the_group_pays():
    from subscriptions.models import Plan
    from tests.factories import PlanFactory

    plan = PlanFactory(name="Newsroom", kind=Plan.Kind.GROUP)
    group = MembershipFactory(plan=plan, quantity=3)  # the buyer's paid Stripe subscription
    user = UserFactory()
    reader = SubscriberFactory(email=user.email, user=user)
    seat = MembershipFactory(
        subscriber=reader, plan=plan, kind=K.GROUP, group=group, stripe_subscription_id=None
    )
    assert user_is_paid(user=user) is True

    # In the admin: made complimentary until yesterday; it still names its group.
    seat.kind = K.COMP
    seat.expires_at = timezone.now() - timedelta(days=1)
    seat.save()

    assert user_is_paid(user=user) is False
