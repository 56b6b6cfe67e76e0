"""What `sync_membership_from_stripe` does with one subscription state, seen on several
memberships at once: which states it applies, which it passes by, and what it tells the
operators when it does."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions.models import Membership
from subscriptions.services.memberships import sync_membership_from_stripe
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


def _state(subscription_id: str, *, status: str = "active", price: str = "price_ours") -> dict:
    return {"id": subscription_id, "status": status, "items": {"data": [{"price": price}]}}


def test_each_state_passed_by_or_on_no_plan_of_ours_is_logged_with_its_subscription(caplog):
    now = timezone.now()
    PlanFactory(stripe_price_id="price_ours")
    synced_later = MembershipFactory(
        stripe_subscription_id="sub_newer", stripe_synced_at=now + timedelta(minutes=1)
    )
    ended = MembershipFactory(
        stripe_subscription_id="sub_ended",
        status=Membership.Status.CANCELED,
        stripe_synced_at=now - timedelta(minutes=1),
    )
    MembershipFactory(stripe_subscription_id="sub_fine", stripe_synced_at=now)

    with caplog.at_level(logging.INFO, logger="subscriptions.services.memberships"):
        for subscription_id, reader in (
            ("sub_newer", synced_later.subscriber),
            ("sub_ended", ended.subscriber),
            ("sub_fine", SubscriberFactory()),
        ):
            sync_membership_from_stripe(
                subscription=_state(subscription_id), subscriber=reader, observed_at=now
            )
        sync_membership_from_stripe(
            subscription=_state("sub_foreign", price="price_elsewhere"),
            subscriber=SubscriberFactory(),
            observed_at=now,
        )

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "Ignoring an older state of sub_newer"),
        ("INFO", "Ignoring a live state of ended sub_ended"),
        (
            "WARNING",
            "sub_foreign bills price price_elsewhere, which is none of our plans: "
            "no access granted",
        ),
    ]


def _sync(state: dict, *, at=None) -> Membership:
    membership = sync_membership_from_stripe(
        subscription=state, subscriber=SubscriberFactory(), observed_at=at or timezone.now()
    )
    assert membership is not None
    membership.refresh_from_db()
    return membership


def test_seats_are_stripe_s_quantity_and_one_when_it_says_none_or_zero():
    PlanFactory(stripe_price_id="price_ours")
    seats = {}
    for name, item in {
        "three": {"quantity": 3},
        "one": {"quantity": 1},
        "zero": {"quantity": 0},
        "unsaid": {},
    }.items():
        state = _state(f"sub_{name}")
        state["items"]["data"][0].update(item)
        seats[name] = _sync(state).quantity
    assert seats == {"three": 3, "one": 1, "zero": 1, "unsaid": 1}


def test_the_price_s_amount_is_mirrored_when_the_snapshot_expands_it_and_kept_when_not():
    PlanFactory(stripe_price_id="price_ours")
    expanded = _state("sub_expanded", price={"id": "price_ours", "unit_amount": 650})
    bare = _state("sub_bare")
    known = MembershipFactory(stripe_subscription_id="sub_bare", unit_amount=800)

    assert _sync(expanded).unit_amount == 650
    assert (
        sync_membership_from_stripe(
            subscription=bare, subscriber=known.subscriber, observed_at=timezone.now()
        ).unit_amount
        == 800
    )
    known.refresh_from_db()
    assert known.unit_amount == 800


def test_a_trial_end_is_mirrored_and_a_state_that_names_none_keeps_the_one_known():
    now = timezone.now().replace(microsecond=0)
    PlanFactory(stripe_price_id="price_ours")
    trial_end = now + timedelta(days=14)
    trialing = MembershipFactory(stripe_subscription_id="sub_trialing", trial_end=trial_end)
    new = _state("sub_new", status="trialing")
    new["trial_end"] = int((now + timedelta(days=7)).timestamp())

    assert _sync(new).trial_end == now + timedelta(days=7)
    sync_membership_from_stripe(
        subscription=_state("sub_trialing"), subscriber=trialing.subscriber, observed_at=now
    )
    trialing.refresh_from_db()
    assert trialing.trial_end == trial_end
    assert _sync(_state("sub_never")).trial_end is None


def test_both_ends_of_the_period_are_mirrored_in_the_old_and_the_new_api_shapes():
    now = timezone.now().replace(microsecond=0)
    PlanFactory(stripe_price_id="price_ours")
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    old_shape = dict(
        _state("sub_old"),
        current_period_start=int(start.timestamp()),
        current_period_end=int(end.timestamp()),
    )
    new_shape = _state("sub_new")
    new_shape["items"]["data"][0].update(
        current_period_start=int(start.timestamp()) + 60,
        current_period_end=int(end.timestamp()) + 60,
    )

    old, new = _sync(old_shape), _sync(new_shape)

    assert (old.current_period_start, old.current_period_end) == (start, end)
    assert (new.current_period_start, new.current_period_end) == (
        start + timedelta(seconds=60),
        end + timedelta(seconds=60),
    )


def test_an_ended_state_without_its_own_time_keeps_the_end_already_recorded():
    now = timezone.now().replace(microsecond=0)
    PlanFactory(stripe_price_id="price_ours")
    ended_at = now - timedelta(days=2)
    recorded = MembershipFactory(
        stripe_subscription_id="sub_recorded",
        status=Membership.Status.CANCELED,
        canceled_at=ended_at,
        stripe_synced_at=now - timedelta(days=2),
    )
    sync_membership_from_stripe(
        subscription=_state("sub_recorded", status="canceled"),
        subscriber=recorded.subscriber,
        observed_at=now,
    )
    recorded.refresh_from_db()
    assert recorded.canceled_at == ended_at
    # One nobody recorded the end of ends when it was seen ended.
    assert _sync(_state("sub_unrecorded", status="canceled"), at=now).canceled_at == now


def _discounted(subscription_id: str, *, period_start, discounts: list) -> dict:
    state = _state(subscription_id)
    state["items"]["data"][0].update(
        current_period_start=int(period_start.timestamp()),
        current_period_end=int((period_start + timedelta(days=30)).timestamp()),
    )
    state["discounts"] = discounts
    return state


def test_a_one_off_discount_applied_up_to_an_hour_before_the_period_counts_for_it():
    """Stripe applies a first-invoice coupon a moment before the period it pays for
    starts: up to an hour before, it is that period's; earlier, a past period's."""
    period_start = timezone.now().replace(microsecond=0) - timedelta(days=1)
    period_end = period_start + timedelta(days=30)
    PlanFactory(stripe_price_id="price_ours")
    ends = {}
    for name, before in {
        "at the start": timedelta(0),
        "half an hour before": timedelta(minutes=30),
        "an hour before": timedelta(hours=1),
        "ninety minutes before": timedelta(minutes=90),
        "a month before": timedelta(days=30),
    }.items():
        discount = {
            "start": int((period_start - before).timestamp()),
            "end": None,
            "coupon": {"percent_off": 20, "duration": "once"},
        }
        state = _discounted(f"sub_{len(ends)}", period_start=period_start, discounts=[discount])
        ends[name] = _sync(state).discount_ends_at
    unstarted = {"end": None, "coupon": {"amount_off": 300, "duration": "once"}}
    ends["with no start"] = _sync(
        _discounted("sub_unstarted", period_start=period_start, discounts=[unstarted])
    ).discount_ends_at

    assert ends == {
        "at the start": period_end,
        "half an hour before": period_end,
        "an hour before": period_end,
        "ninety minutes before": period_start,
        "a month before": period_start,
        "with no start": period_end,
    }


def test_the_first_discount_with_its_coupon_expanded_is_the_one_mirrored():
    period_start = timezone.now().replace(microsecond=0)
    PlanFactory(stripe_price_id="price_ours")
    bare_then_expanded = [
        {"coupon": "co_bare", "end": None},
        {"source": {"coupon": {"amount_off": 500, "duration": "forever"}}, "end": None},
        {"coupon": {"percent_off": 10, "duration": "forever"}, "end": None},
    ]
    membership = _sync(
        _discounted("sub_discounted", period_start=period_start, discounts=bare_then_expanded)
    )
    assert (membership.discount_amount_off, membership.discount_percent_off) == (500, None)


def test_stripes_timestamps_are_read_as_utc_whatever_the_machines_time_zone():
    from datetime import UTC, datetime

    from subscriptions.services.memberships import from_timestamp

    moment = from_timestamp(1_700_000_000)

    assert moment == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    assert from_timestamp(None) is None
    assert from_timestamp(0) is None  # Stripe's "not set"
