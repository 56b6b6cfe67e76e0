"""Paid access comes only from our plans: a subscription on any other price is recorded,
flagged in the admin, and grants nothing."""

from __future__ import annotations

import pytest

from subscriptions.models import Membership, Plan, Subscriber
from subscriptions.services.access import paid_subscribers, subscriber_is_paid
from subscriptions.services.billing import sync_stripe_plans
from tests.factories import PlanFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def our_plan(stripe_api):
    plan = PlanFactory(name="Monthly", amount=800, interval="month", stripe_price_id=None)
    sync_stripe_plans()
    plan.refresh_from_db()
    assert plan.stripe_price_id
    return plan


def _subscribe(stripe_api, stripe_webhooks, *, email: str, price: str) -> Membership:
    customer = stripe_api.add_customer(email=email)
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    return Membership.objects.get(stripe_subscription_id=subscription["id"])


def test_a_subscription_on_a_price_of_none_of_our_plans_is_recorded_and_grants_nothing(
    stripe_api, stripe_webhooks, our_plan, editor_client
):
    cheap = stripe_api.add_price(unit_amount=100, interval="month")  # $1/month, elsewhere

    membership = _subscribe(
        stripe_api, stripe_webhooks, email="cheap@example.com", price=cheap["id"]
    )

    assert membership.status == Membership.Status.ACTIVE
    assert membership.foreign_price is True
    assert membership.stripe_price_id == cheap["id"]
    assert membership.plan is None
    reader = Subscriber.objects.get(email="cheap@example.com")
    assert not subscriber_is_paid(subscriber=reader)
    assert reader not in paid_subscribers()
    # Flagged in the admin: the column, and a filter that finds it.
    listing = editor_client.get("/admin/subscriptions/membership/", {"foreign_price__exact": "1"})
    assert "cheap@example.com" in listing.content.decode()
    listing = editor_client.get("/admin/subscriptions/membership/", {"foreign_price__exact": "0"})
    assert "cheap@example.com" not in listing.content.decode()


def test_a_subscription_on_our_plan_s_price_grants_access(stripe_api, stripe_webhooks, our_plan):
    membership = _subscribe(
        stripe_api, stripe_webhooks, email="member@example.com", price=our_plan.stripe_price_id
    )
    assert membership.plan == our_plan
    assert membership.foreign_price is False
    assert subscriber_is_paid(subscriber=membership.subscriber)


def test_readers_on_a_plan_s_earlier_price_keep_access_after_its_amount_is_edited(
    stripe_api, stripe_webhooks, our_plan
):
    old_price = our_plan.stripe_price_id
    membership = _subscribe(stripe_api, stripe_webhooks, email="early@example.com", price=old_price)
    Plan.objects.filter(pk=our_plan.pk).update(amount=900)
    sync_stripe_plans()
    our_plan.refresh_from_db()
    assert our_plan.stripe_price_id != old_price

    renewed = stripe_api.renew_subscription(membership.stripe_subscription_id)
    stripe_webhooks.deliver("invoice.paid", renewed)
    stripe_webhooks.deliver(
        "customer.subscription.updated",
        stripe_api.get("subscription", membership.stripe_subscription_id),
    )

    membership.refresh_from_db()
    assert membership.plan == our_plan
    assert membership.foreign_price is False
    assert subscriber_is_paid(subscriber=membership.subscriber)


def test_moving_a_subscription_onto_a_foreign_price_ends_its_access(
    stripe_api, stripe_webhooks, our_plan
):
    membership = _subscribe(
        stripe_api, stripe_webhooks, email="mover@example.com", price=our_plan.stripe_price_id
    )
    cheap = stripe_api.add_price(unit_amount=100, interval="month")
    items = stripe_api.get("subscription", membership.stripe_subscription_id)["items"]
    items["data"][0]["price"] = cheap
    subscription = stripe_api.update_subscription(membership.stripe_subscription_id, items=items)
    stripe_webhooks.deliver("customer.subscription.updated", subscription)

    membership.refresh_from_db()
    assert membership.foreign_price is True
    assert not subscriber_is_paid(subscriber=membership.subscriber)


def test_an_earlier_price_counts_as_our_plan_only_when_it_names_the_plan_and_its_product(
    stripe_api, stripe_webhooks, our_plan, settings
):
    """What a price says about itself decides, as an event's snapshot carries it: our
    plan's id in its metadata and our plan's product (by id, or expanded). Another
    product naming our plan, a plan id that is no number, a price without a product or
    metadata, or a bare price id we do not know, is a foreign price."""
    settings.STRIPE_SECRET_KEY = ""  # the snapshots below, exactly as written
    product, plan_id = our_plan.stripe_product_id, str(our_plan.pk)
    unsynced = PlanFactory(name="Yearly", stripe_price_id=None, stripe_product_id="")
    prices = {
        "earlier@example.com": {"product": product, "metadata": {"plan_id": plan_id}},
        "expanded@example.com": {"product": {"id": product}, "metadata": {"plan_id": plan_id}},
        "elsewhere@example.com": {"product": "prod_other", "metadata": {"plan_id": plan_id}},
        "not-a-number@example.com": {"product": product, "metadata": {"plan_id": "one"}},
        "no-product@example.com": {"product": None, "metadata": {"plan_id": plan_id}},
        "unsynced@example.com": {"product": "", "metadata": {"plan_id": str(unsynced.pk)}},
        "no-metadata@example.com": {"product": product},
    }
    expected = {}
    for n, (email, price) in enumerate(prices.items()):
        customer = stripe_api.add_customer(email=email)
        SubscriberFactory(email=email, stripe_customer_id=customer["id"])
        subscription = stripe_api.add_subscription(
            customer=customer["id"], price=our_plan.stripe_price_id
        )
        price_id = f"price_earlier_{n}"
        subscription["items"]["data"][0]["price"] = {"id": price_id, "unit_amount": 700, **price}
        stripe_webhooks.deliver("customer.subscription.updated", subscription)
        ours = email in ("earlier@example.com", "expanded@example.com")
        expected[email] = (our_plan.pk if ours else None, not ours, price_id)
    customer = stripe_api.add_customer(email="bare@example.com")
    SubscriberFactory(email="bare@example.com", stripe_customer_id=customer["id"])
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=our_plan.stripe_price_id
    )
    subscription["items"]["data"][0]["price"] = "price_unknown"
    stripe_webhooks.deliver("customer.subscription.updated", subscription)
    expected["bare@example.com"] = (None, True, "price_unknown")

    mirrored = {
        m.subscriber.email: (m.plan_id, m.foreign_price, m.stripe_price_id)
        for m in Membership.objects.select_related("subscriber")
    }
    assert mirrored == expected
    paid = {
        m.subscriber.email
        for m in Membership.objects.all()
        if subscriber_is_paid(subscriber=m.subscriber)
    }
    assert paid == {"earlier@example.com", "expanded@example.com"}


def test_an_earlier_price_is_the_plan_it_names_only_with_that_plan_s_own_product():
    """Two plans, each with its product: a price naming one plan under the other's
    product, or naming no plan of ours under our product, is none of our plans; one
    naming a plan under its own product is that plan, whichever of the two it is."""
    from subscriptions.services.memberships import plan_for_price

    monthly = PlanFactory(name="Monthly", stripe_product_id="prod_monthly")
    yearly = PlanFactory(name="Yearly", interval="year", stripe_product_id="prod_yearly")
    missing = str(max(monthly.pk, yearly.pk) + 1)

    def plan(plan_id: str, product: str) -> Plan | None:
        price = {"id": "price_earlier", "product": product, "metadata": {"plan_id": plan_id}}
        return plan_for_price({"items": {"data": [{"price": price}]}})

    assert plan(str(monthly.pk), "prod_monthly") == monthly
    assert plan(str(yearly.pk), "prod_yearly") == yearly
    assert plan(str(monthly.pk), "prod_yearly") is None
    assert plan(str(yearly.pk), "prod_monthly") is None
    assert plan(missing, "prod_monthly") is None
