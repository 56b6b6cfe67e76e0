"""Who is paid among trial, gift, group-seat and founding members: several readers in
several states at once, each assertion about the one reader it names."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from newsletter.services.comments import comment_thread
from publication.models import Publication
from subscriptions.models import Membership, Offer, Plan
from subscriptions.services import access, offers
from subscriptions.services.revenue import monthly_amount
from tests.factories import (
    CommentFactory,
    MembershipFactory,
    PlanFactory,
    PublishedArticleFactory,
    SubscriberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
K, S = Membership.Kind, Membership.Status


def paid(subscriber) -> bool:
    return access.subscriber_is_paid(subscriber=subscriber)


def test_group_seats_follow_their_groups_state_and_their_own():
    group_plan = PlanFactory(kind=Plan.Kind.GROUP, amount=500)
    now = timezone.now()
    states = {
        "active": {"status": S.ACTIVE},
        "trialing": {"status": S.TRIALING},
        "past_due_in_grace": {
            "status": S.PAST_DUE,
            "current_period_start": now - timedelta(days=1),
        },
        "past_due_late": {
            "status": S.PAST_DUE,
            "current_period_start": now - access.PAST_DUE_GRACE - timedelta(hours=1),
        },
        "canceled": {"status": S.CANCELED},
        "foreign": {"status": S.ACTIVE, "foreign_price": True},
    }
    seats = {}
    for name, fields in states.items():
        group = MembershipFactory(plan=group_plan, **fields)
        seats[name] = MembershipFactory(
            kind=K.GROUP, group=group, plan=group_plan, stripe_subscription_id=None
        )
        # The buyer is not paid by the group's subscription itself.
        assert not paid(group.subscriber), name
    # A removed member of a live group.
    live = MembershipFactory(plan=group_plan)
    removed = MembershipFactory(
        kind=K.GROUP, group=live, plan=group_plan, status=S.CANCELED, stripe_subscription_id=None
    )
    expected = {"active", "trialing", "past_due_in_grace"}
    for name, seat in seats.items():
        assert paid(seat.subscriber) is (name in expected), name
    assert not paid(removed.subscriber)
    # A seat pointing at an individual plan's subscription grants nothing extra.
    individual = MembershipFactory()
    stray = MembershipFactory(
        kind=K.GROUP, group=individual, plan=individual.plan, stripe_subscription_id=None
    )
    assert not paid(stray.subscriber)
    assert paid(individual.subscriber)


def test_a_gift_that_starts_later_grants_from_its_start_until_its_end():
    now = timezone.now()
    later = MembershipFactory(
        kind=K.GIFT,
        stripe_subscription_id=None,
        starts_at=now + timedelta(days=10),
        expires_at=now + timedelta(days=40),
    )
    current = MembershipFactory(
        kind=K.GIFT, stripe_subscription_id=None, starts_at=None, expires_at=now + timedelta(days=5)
    )
    started = MembershipFactory(
        kind=K.GIFT,
        stripe_subscription_id=None,
        starts_at=now - timedelta(days=1),
        expires_at=now + timedelta(days=5),
    )
    assert not paid(later.subscriber)
    assert paid(current.subscriber)
    assert paid(started.subscriber)
    at = now + timedelta(days=20)
    granting = access.access_granting_memberships(now=at)
    assert granting.filter(pk=later.pk).exists()
    assert not granting.filter(pk=current.pk).exists()
    assert (
        not access.access_granting_memberships(now=now + timedelta(days=41))
        .filter(pk=later.pk)
        .exists()
    )


def test_a_trialing_member_is_paid_and_not_counted_in_revenue():
    trialing = MembershipFactory(status=S.TRIALING, trial_end=timezone.now() + timedelta(days=3))
    active = MembershipFactory(status=S.ACTIVE)
    assert paid(trialing.subscriber) and paid(active.subscriber)
    from subscriptions.services.revenue import revenue_summary

    summary = revenue_summary()
    assert summary.trials_active == 1
    assert summary.mrr == {"usd": active.plan.amount}


def test_monthly_amounts_count_seats_discounts_and_yearly_prices():
    now = timezone.now()
    plan = PlanFactory(amount=1000)
    yearly = PlanFactory(amount=12000, interval="year")
    seats = Membership(plan=plan, quantity=4, unit_amount=900)
    assert monthly_amount(seats, now=now) == 3600
    percent = Membership(plan=plan, discount_percent_off=20, discount_ends_at=now + timedelta(1))
    assert monthly_amount(percent, now=now) == 800
    assert monthly_amount(percent, now=now + timedelta(days=2)) == 1000
    forever = Membership(plan=yearly, discount_amount_off=2400)
    assert monthly_amount(forever, now=now) == 800
    too_much = Membership(plan=plan, discount_amount_off=5000)
    assert monthly_amount(too_much, now=now) == 0


def test_founding_members_are_marked_on_their_comments_when_the_publication_wants(client):
    founding_plan = PlanFactory(kind=Plan.Kind.FOUNDING, interval="year", amount=20000)
    article = PublishedArticleFactory()
    founder, reader, lapsed = UserFactory(), UserFactory(), UserFactory()
    MembershipFactory(subscriber=SubscriberFactory(user=founder), plan=founding_plan)
    MembershipFactory(subscriber=SubscriberFactory(user=reader))
    MembershipFactory(
        subscriber=SubscriberFactory(user=lapsed), plan=founding_plan, status=S.CANCELED
    )
    top = CommentFactory(article=article, user=reader)
    CommentFactory(article=article, user=founder, parent=top)
    CommentFactory(article=article, user=lapsed)

    def marks() -> dict[int, bool]:
        thread = comment_thread(article=article, user=None)
        entries = thread.comments + [r for c in thread.comments for r in c.replies]
        return {e.comment.user_id: e.is_founding for e in entries}

    assert marks() == {reader.pk: False, founder.pk: False, lapsed.pk: False}
    Publication.objects.update_or_create(pk=1, defaults={"show_founding_badges": True})
    assert marks() == {reader.pk: False, founder.pk: True, lapsed.pk: False}


def test_only_the_founding_members_asked_about_are_named():
    # Memberships of readers without an account first, so that no membership's id is
    # its reader's account id by chance: the answer is account ids.
    MembershipFactory.create_batch(2)
    founding_plan = PlanFactory(kind=Plan.Kind.FOUNDING, interval="year", amount=20000)
    founders = [UserFactory() for _ in range(3)]
    for founder in founders:
        MembershipFactory(subscriber=SubscriberFactory(user=founder), plan=founding_plan)
    paid_reader = UserFactory()
    MembershipFactory(subscriber=SubscriberFactory(user=paid_reader))
    first, second, third = (founder.pk for founder in founders)

    asked = {first, third, paid_reader.pk}
    assert access.founding_member_user_ids(user_ids=asked) == {first, third}
    assert access.founding_member_user_ids(user_ids={second}) == {second}
    assert access.founding_member_user_ids(user_ids={paid_reader.pk}) == set()


def test_the_editor_creates_an_offer_in_the_admin_and_stripe_gets_it(editor_client, stripe_api):
    response = editor_client.post(
        "/admin/subscriptions/offer/add/",
        {
            "name": "Autumn",
            "code": "autumn-10",
            "kind": "amount",
            "amount_off": "300",
            "currency": "usd",
            "duration": "forever",
            "active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    offer = Offer.objects.get()
    assert offer.code == "AUTUMN-10"
    assert stripe_api.get("coupon", offer.stripe_coupon_id)["amount_off"] == 300
    assert stripe_api.get("promotion_code", offer.stripe_promotion_code_id)["code"] == "AUTUMN-10"
    bad = editor_client.post(
        "/admin/subscriptions/offer/add/",
        {
            "name": "Bad",
            "code": "no spaces",
            "kind": "percent",
            "percent_off": "10",
            "currency": "usd",
            "duration": "once",
        },
    )
    assert bad.status_code == 200
    assert "letters, digits or dashes" in bad.content.decode()
    assert Offer.objects.count() == 1
    summary_page = editor_client.get("/admin/subscriptions/membership/").content.decode()
    assert "Offer AUTUMN-10" in summary_page and "Free trials" in summary_page


@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-",
        min_size=3,
        max_size=40,
    )
)
def test_a_valid_code_round_trips_through_normalising(code):
    if code[0] == "-" or code[-1] == "-":
        with pytest.raises(offers.OfferError):
            offers.validate_code(code)
        return
    normal = offers.validate_code(code)
    assert normal == code.upper()
    assert offers.validate_code(normal.lower()) == normal


@given(st.text(max_size=60))
def test_any_typed_code_is_either_refused_or_in_the_stripe_alphabet(code):
    try:
        normal = offers.validate_code(code)
    except offers.OfferError:
        return
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in normal)
    assert normal == normal.strip().upper()


def test_a_first_payment_discount_counts_only_for_the_period_it_paid():
    from subscriptions.services.memberships import _apply_discount

    day = 86400
    start = int(timezone.now().timestamp()) - 40 * day

    def subscription(period_start: int) -> dict:
        return {
            "items": {
                "data": [
                    {
                        "current_period_start": period_start,
                        "current_period_end": period_start + 30 * day,
                    }
                ]
            },
            "discounts": [
                {
                    "start": start,
                    "end": None,
                    "source": {"coupon": {"percent_off": 50, "duration": "once"}},
                }
            ],
        }

    first = Membership()
    _apply_discount(first, subscription(start))
    assert first.discount_percent_off == 50
    assert first.discount_ends_at.timestamp() == start + 30 * day
    renewed = Membership()
    _apply_discount(renewed, subscription(start + 30 * day))
    assert renewed.discount_ends_at.timestamp() == start + 30 * day
    # Bare ids (a webhook snapshot) leave what was known.
    known = Membership(discount_amount_off=300)
    _apply_discount(known, {"discounts": ["di_1"]})
    assert known.discount_amount_off == 300
    _apply_discount(known, {"discounts": []})
    assert known.discount_amount_off is None
