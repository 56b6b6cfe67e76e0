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
