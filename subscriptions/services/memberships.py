"""Paid memberships: mirrored from Stripe subscriptions, or granted (comp and gift).

`sync_membership_from_stripe` is the one way a Stripe subscription's state reaches our
database. It is called with the subscription as just re-read from Stripe (or, failing
that, as carried by an event) and the time that state was observed; a state older than
the one already applied is ignored, so duplicated and reordered webhooks converge.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from publication.emails import send_email_on_commit
from subscriptions.models import Gift, Membership, Offer, Plan, Subscriber
from subscriptions.services.access import subscriber_is_paying
from subscriptions.services.addresses import normalize_email, normalized_or_none
from subscriptions.services.attribution import source_from_metadata
from subscriptions.services.plans import upgrades_open
from subscriptions.services.tokens import absolute_url

logger = logging.getLogger(__name__)

# Metadata we put on Checkout Sessions and subscriptions to say what they pay for.
PURPOSE_KEY = "broadside_purpose"
PURPOSE_MEMBERSHIP = "membership"
PURPOSE_DONATION = "donation"
SUBSCRIBER_KEY = "subscriber_id"
OFFER_KEY = "offer_id"
PURPOSE_GIFT = "gift"

REMINDER_BEFORE_EXPIRY = timedelta(days=7)
# Final in Stripe: https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses
ENDED_STATUSES = (Membership.Status.CANCELED, Membership.Status.INCOMPLETE_EXPIRED)


def from_timestamp(value: int | float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


def lock_stripe_object(object_id: str) -> None:
    """Serialise work on one Stripe object across workers until the transaction ends."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [object_id])


def subscription_purpose(subscription: dict[str, Any]) -> str:
    return (subscription.get("metadata") or {}).get(PURPOSE_KEY) or PURPOSE_MEMBERSHIP


def invoice_subscription_metadata(invoice: dict[str, Any]) -> dict[str, str]:
    """The metadata of the subscription an invoice bills, as Stripe copies it onto it."""
    # Since API version 2025-03-31 under `parent`; before it, at the top level.
    details = (invoice.get("parent") or {}).get("subscription_details") or invoice.get(
        "subscription_details"
    )
    return dict((details or {}).get("metadata") or {})


def subscription_period(subscription: dict[str, Any], bound: str) -> datetime | None:
    """`current_period_start` or `current_period_end` of a subscription."""
    # Since API version 2025-03-31 the period lives on each subscription item.
    values = [
        item.get(bound)
        for item in (subscription.get("items") or {}).get("data", [])
        if item.get(bound)
    ]
    return from_timestamp(subscription.get(bound) or (max(values) if values else None))


def subscription_price_id(subscription: dict[str, Any]) -> str | None:
    items = (subscription.get("items") or {}).get("data", [])
    if not items:
        return None
    price = items[0].get("price") or {}
    return price.get("id") if isinstance(price, dict) else price


def plan_for_price(subscription: dict[str, Any]) -> Plan | None:
    """Which of our plans the subscription's price is: the plan's current price, or an
    earlier price of that plan (`sync_stripe_plans` makes a new price when a plan's
    amount is edited, marks each with the plan's id, and keeps subscribers on theirs)."""
    price_id = subscription_price_id(subscription)
    if not price_id:
        return None
    plan = Plan.objects.filter(stripe_price_id=price_id).first()
    if plan is not None:
        return plan
    items = (subscription.get("items") or {}).get("data", [])
    price = items[0].get("price") if items else None
    if not isinstance(price, dict):
        return None
    plan_id = str((price.get("metadata") or {}).get("plan_id") or "")
    product = price.get("product")
    product_id = product.get("id") if isinstance(product, dict) else product
    if not plan_id.isdigit() or not product_id:
        return None
    return Plan.objects.filter(pk=int(plan_id), stripe_product_id=product_id).first()


# --- Who is this subscription for? ----------------------------------------------------


def find_subscriber_for_stripe(
    *,
    subscriber_id: str | int | None = None,
    customer_id: str | None = None,
    email: str | None = None,
) -> Subscriber | None:
    """Our reader, by our own id (metadata), else the Stripe customer, else the email."""
    if subscriber_id:
        try:
            found = Subscriber.objects.filter(pk=int(subscriber_id)).first()
        except (TypeError, ValueError):
            found = None
        if found is not None:
            return found
    if customer_id:
        found = Subscriber.objects.filter(stripe_customer_id=customer_id).first()
        if found is not None:
            return found
    normalized = normalized_or_none(email)
    if normalized:
        return Subscriber.objects.filter(email=normalized).first()
    return None


def find_or_create_subscriber(*, email: str, **fields: Any) -> Subscriber:
    """The subscriber with this address, or a new one with these fields.

    Raises InvalidAddress for an address we cannot email.
    """
    email = normalize_email(email)
    subscriber = Subscriber.objects.filter(email=email).first()
    if subscriber is not None:
        return subscriber
    try:
        with transaction.atomic():
            return Subscriber.objects.create(email=email, **fields)
    except IntegrityError:  # the same address, added meanwhile
        return Subscriber.objects.get(email=email)


def subscriber_from_payment(*, email: str, name: str = "", source: str) -> Subscriber:
    """The reader behind a payment made outside our pages (a Payment Link, the dashboard).

    Paying for the publication is a clear request to receive it, so a new address is
    created active (a known pending one is confirmed by `confirm_paying_subscriber`).
    """
    now = timezone.now()
    return find_or_create_subscriber(
        email=email.strip(),
        name=name[:200],
        status=Subscriber.Status.ACTIVE,
        consent_at=now,
        consent_source=source,
        confirmed_at=now,
    )


def confirm_paying_subscriber(*, subscriber: Subscriber, source: str) -> None:
    """A pending reader who completed a payment has shown the address is theirs."""
    if subscriber.status == Subscriber.Status.PENDING:
        now = timezone.now()
        Subscriber.objects.filter(pk=subscriber.pk, status=Subscriber.Status.PENDING).update(
            status=Subscriber.Status.ACTIVE,
            confirmed_at=now,
            consent_at=subscriber.consent_at or now,
            consent_source=subscriber.consent_source or source,
        )
        subscriber.refresh_from_db()


def link_stripe_customer(*, subscriber: Subscriber, customer_id: str | None) -> None:
    """Remember the reader's Stripe customer, unless they already have one."""
    if not customer_id or subscriber.stripe_customer_id:
        return
    if Subscriber.objects.filter(stripe_customer_id=customer_id).exists():
        return
    Subscriber.objects.filter(pk=subscriber.pk, stripe_customer_id__isnull=True).update(
        stripe_customer_id=customer_id
    )
    subscriber.refresh_from_db(fields=["stripe_customer_id"])


# --- Applying Stripe's state -----------------------------------------------------------


def sync_membership_from_stripe(
    *,
    subscription: dict[str, Any],
    subscriber: Subscriber,
    observed_at: datetime,
) -> Membership | None:
    """Make our Membership mirror this Stripe subscription, if this state is newer.

    Call inside a transaction holding `lock_stripe_object(subscription id)`.
    """
    subscription_id = subscription["id"]
    status = subscription.get("status") or Membership.Status.INCOMPLETE
    if status not in Membership.Status.values:
        status = Membership.Status.INCOMPLETE
    membership = (
        Membership.objects.select_for_update()
        .filter(stripe_subscription_id=subscription_id)
        .first()
    )
    if membership is None:
        membership = Membership(
            kind=Membership.Kind.STRIPE,
            stripe_subscription_id=subscription_id,
            subscriber=subscriber,
        )
    elif membership.stripe_synced_at and membership.stripe_synced_at > observed_at:
        logger.info("Ignoring an older state of %s", subscription_id)
        return membership
    elif membership.status in ENDED_STATUSES and status not in ENDED_STATUSES:
        # An ended subscription never starts again in Stripe (a new one is made), so a
        # snapshot of it alive is stale even when its event bears the same second.
        logger.info("Ignoring a live state of ended %s", subscription_id)
        return membership
    price_id = subscription_price_id(subscription)
    if price_id:
        plan = plan_for_price(subscription)
        membership.plan = plan
        membership.stripe_price_id = price_id
        membership.foreign_price = plan is None
        if plan is None:
            logger.warning(
                "%s bills price %s, which is none of our plans: no access granted",
                subscription_id,
                price_id,
            )

    items = (subscription.get("items") or {}).get("data", [])
    if items:
        membership.quantity = max(int(items[0].get("quantity") or 1), 1)
        price = items[0].get("price")
        if isinstance(price, dict) and price.get("unit_amount") is not None:
            membership.unit_amount = int(price["unit_amount"])
    membership.trial_end = from_timestamp(subscription.get("trial_end")) or membership.trial_end
    _apply_discount(membership, subscription)
    offer_id = str((subscription.get("metadata") or {}).get(OFFER_KEY) or "")
    if offer_id.isdigit() and membership.offer_id is None:
        membership.offer = Offer.objects.filter(pk=int(offer_id)).first()
    if membership.source_article_id is None:
        membership.source_article_id = source_from_metadata(subscription.get("metadata"))
    membership.status = status
    membership.current_period_start = subscription_period(subscription, "current_period_start")
    membership.current_period_end = subscription_period(subscription, "current_period_end")
    membership.cancel_at_period_end = bool(
        subscription.get("cancel_at_period_end") or subscription.get("cancel_at")
    )
    if status in ENDED_STATUSES:
        membership.canceled_at = (
            from_timestamp(subscription.get("ended_at") or subscription.get("canceled_at"))
            or membership.canceled_at
            or observed_at
        )
    else:
        membership.canceled_at = None
    membership.stripe_synced_at = observed_at
    membership.save()
    return membership


def _apply_discount(membership: Membership, subscription: dict[str, Any]) -> None:
    """The subscription's discount, for the revenue figures. Stripe lists discounts as
    ids unless expanded (`stripe_client.retrieve_subscription` expands them); a snapshot
    with bare ids leaves what we knew alone."""
    discounts = subscription.get("discounts")
    if discounts is None or any(not isinstance(d, dict) for d in discounts):
        return
    membership.discount_percent_off = None
    membership.discount_amount_off = None
    membership.discount_ends_at = None
    for discount in discounts:
        # Since API version 2025-09-30 the coupon sits under `source`.
        coupon = (discount.get("source") or {}).get("coupon") or discount.get("coupon")
        if not isinstance(coupon, dict):
            continue
        if coupon.get("percent_off"):
            membership.discount_percent_off = float(coupon["percent_off"])
        elif coupon.get("amount_off"):
            membership.discount_amount_off = int(coupon["amount_off"])
        membership.discount_ends_at = from_timestamp(discount.get("end"))
        if coupon.get("duration") == "once":
            # Applied to one invoice only: the period that began when it was applied.
            started = from_timestamp(discount.get("start"))
            period_start = subscription_period(subscription, "current_period_start")
            if started and period_start and started < period_start - timedelta(hours=1):
                membership.discount_ends_at = period_start
            else:
                membership.discount_ends_at = subscription_period(
                    subscription, "current_period_end"
                )
        break


# --- Comp and gift memberships --------------------------------------------------------


def expire_memberships(*, now: datetime | None = None) -> dict[str, int]:
    """Mark lapsed comp/gift memberships expired; remind readers a week before."""
    now = now or timezone.now()
    granted = Q(kind__in=[Membership.Kind.COMP, Membership.Kind.GIFT])
    expired = Membership.objects.filter(
        granted, status=Membership.Status.ACTIVE, expires_at__lte=now
    ).update(status=Membership.Status.EXPIRED, canceled_at=now)

    reminded = 0
    due = Membership.objects.filter(
        granted,
        status=Membership.Status.ACTIVE,
        expires_at__gt=now,
        expires_at__lte=now + REMINDER_BEFORE_EXPIRY,
        reminder_sent_at__isnull=True,
    ).values_list("pk", flat=True)
    for membership_id in list(due):
        with transaction.atomic():
            membership = (
                Membership.objects.select_for_update(skip_locked=True)
                .select_related("subscriber")
                .filter(pk=membership_id, reminder_sent_at__isnull=True)
                .first()
            )
            if membership is None:
                continue
            subscriber = membership.subscriber
            if (
                subscriber.status
                in (
                    Subscriber.Status.BOUNCED,
                    Subscriber.Status.COMPLAINED,
                )
                or subscriber_is_paying(subscriber=subscriber)
                or _carried_on(membership)
            ):
                # The address takes no mail, or a paid subscription or a later gift
                # carries on after this.
                membership.reminder_sent_at = now
                membership.save(update_fields=["reminder_sent_at", "updated_at"])
                continue
            # A bought gift invites its reader to subscribe; a gift granted by hand is
            # reminded like a complimentary membership.
            gift = Gift.objects.filter(membership=membership).exists()
            send_email_on_commit(
                to=subscriber.email,
                subject="Your gift subscription ends soon" if gift else "Your membership ends soon",
                template="gift_ending" if gift else "membership_reminder",
                context={
                    "subscriber": subscriber,
                    "membership": membership,
                    "upgrade_url": absolute_url("/upgrade/") if upgrades_open() else "",
                },
            )
            membership.reminder_sent_at = now
            membership.save(update_fields=["reminder_sent_at", "updated_at"])
            reminded += 1
    return {"expired": expired, "reminded": reminded}


def _carried_on(membership: Membership) -> bool:
    """Whether another granted membership of the reader runs on past this one's end."""
    return (
        Membership.objects.filter(
            subscriber_id=membership.subscriber_id,
            kind__in=[Membership.Kind.COMP, Membership.Kind.GIFT],
            status=Membership.Status.ACTIVE,
        )
        .exclude(pk=membership.pk)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=membership.expires_at))
        .exists()
    )
