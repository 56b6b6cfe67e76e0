"""Paid readers' Stripe subscriptions, looked up and adopted as memberships."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from subscriptions import stripe_client
from subscriptions.models import Membership, Plan, Subscriber
from subscriptions.services.memberships import (
    lock_stripe_object,
    plan_for_price,
    subscription_price_id,
    sync_membership_from_stripe,
)
from substack.services.readers import _granted_membership
from substack.services.report import (
    SOURCE,
    PendingPaidReader,
    SubstackReport,
)

# Stripe's statuses of a subscription that is paid for (past_due: a renewal is retried).
LIVE_STATUSES = ("active", "trialing", "past_due")
# Stripe allows 100 read requests a second in live mode and 25 in test mode
# (https://docs.stripe.com/rate-limits); the import stays under both.
STRIPE_REQUESTS_PER_SECOND = 20


class _Pacer:
    """Spaces calls at least 1/rate seconds apart."""

    def __init__(self, *, per_second: float) -> None:
        self.interval = 1 / per_second
        self.last = 0.0

    def wait(self) -> None:
        delay = self.last + self.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.last = time.monotonic()


# --- Adopting the Stripe subscriptions ------------------------------------------------


def adopt_stripe_subscriptions(
    *,
    readers: list[PendingPaidReader],
    report: SubstackReport,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """Mirror each paid reader's live Stripe subscriptions; comp-until-expiry otherwise.

    Stripe is read outside any lock, then each reader's memberships are written in one
    transaction, so a webhook for the same subscription arriving meanwhile converges
    with it (`sync_membership_from_stripe` keeps the newer state).
    """
    pacer = _Pacer(per_second=STRIPE_REQUESTS_PER_SECOND)
    products: dict[str, dict[str, Any]] = {}
    for done, reader in enumerate(readers, start=1):
        pacer.wait()
        customer = stripe_client.find_customer(reader.customer_id)
        subscriptions: list[dict[str, Any]] = []
        if customer is not None:
            pacer.wait()
            subscriptions = stripe_client.list_customer_subscriptions(reader.customer_id)
        report.stripe_lookups += 1
        observed_at = timezone.now()
        live = [s for s in subscriptions if s.get("status") in LIVE_STATUSES]
        with transaction.atomic():
            if Membership.objects.filter(
                subscriber_id=reader.subscriber_id, imported_from__startswith=SOURCE
            ).exists():
                continue
            if customer is None:
                report.customers_not_found.append(reader.customer_id)
            elif not live and subscriptions:
                report.subscriptions_canceled += 1
            adopted = 0
            for subscription in live:
                if _adopt(
                    subscription=subscription,
                    subscriber_id=reader.subscriber_id,
                    observed_at=observed_at,
                    products=products,
                    report=report,
                ):
                    adopted += 1
            if adopted:
                report.adopted += adopted
                report.memberships_created += adopted
            else:
                _granted_membership(
                    subscriber_id=reader.subscriber_id, kind="paid", expires_at=reader.expires_at
                ).save()
                report.comp_until_expiry += 1
                report.memberships_created += 1
        if progress is not None:
            progress("Stripe lookups", done, len(readers))


def _adopt(
    *,
    subscription: dict[str, Any],
    subscriber_id: int,
    observed_at: datetime,
    products: dict[str, dict[str, Any]],
    report: SubstackReport,
) -> bool:
    """Record one live subscription as the reader's Stripe membership, with a Plan for
    its price. False when its price cannot be a plan (not a monthly or yearly amount)."""
    subscription_id = str(subscription["id"])
    plan = plan_for_price(subscription) or _imported_plan(
        subscription=subscription, products=products, report=report
    )
    if plan is None:
        return False
    lock_stripe_object(subscription_id)
    known = Membership.objects.filter(stripe_subscription_id=subscription_id).first()
    if known is not None and known.subscriber_id != subscriber_id:
        return False  # someone else's already; a webhook made it
    subscriber = Subscriber.objects.get(pk=subscriber_id)
    membership = sync_membership_from_stripe(
        subscription=subscription, subscriber=subscriber, observed_at=observed_at
    )
    if membership is None:
        return False
    Membership.objects.filter(pk=membership.pk).update(imported_from=f"{SOURCE}:paid")
    return True


def _imported_plan(
    *, subscription: dict[str, Any], products: dict[str, dict[str, Any]], report: SubstackReport
) -> Plan | None:
    price_id = subscription_price_id(subscription)
    items = (subscription.get("items") or {}).get("data", [])
    price = items[0].get("price") if items else None
    if not price_id or not isinstance(price, dict):
        return None
    recurring = price.get("recurring") or {}
    interval = recurring.get("interval")
    amount = price.get("unit_amount")
    if (
        interval not in Plan.Interval.values
        or (recurring.get("interval_count") or 1) != 1
        or not isinstance(amount, int)
        or amount <= 0
    ):
        return None
    product = price.get("product")
    product_id = str(product.get("id") if isinstance(product, dict) else product or "")
    if product_id and product_id not in products:
        products[product_id] = (
            product if isinstance(product, dict) else stripe_client.retrieve_product(product_id)
        )
    name = str((products.get(product_id) or {}).get("name") or "Imported plan")
    plan, created = Plan.objects.get_or_create(
        stripe_price_id=price_id,
        defaults={
            "name": f"{name} ({amount / 100:.2f} {str(price.get('currency', 'usd')).upper()}"
            f" a {interval})"[:200],
            "interval": interval,
            "amount": amount,
            "currency": str(price.get("currency") or "usd")[:3].lower(),
            "stripe_product_id": product_id[:100],
            "active": False,
            "imported_from": SOURCE,
        },
    )
    if created:
        report.plans_created.append(f"{plan.name} ({price_id})")
    return plan
