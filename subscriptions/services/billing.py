"""Paid plans: Stripe customers, Checkout for a plan, the Customer Portal, plan sync.

Access is never granted here: a Checkout Session only sends the reader to Stripe. The
membership appears when Stripe's webhook says the subscription exists
(`subscriptions/services/stripe_events.py`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from allauth.account.models import EmailAddress
from django.utils import timezone

from publication.models import Publication
from subscriptions import stripe_client
from subscriptions.models import Membership, Offer, Plan, Subscriber
from subscriptions.services import offers
from subscriptions.services.access import subscriber_is_paying
from subscriptions.services.accounts import link_reader_account
from subscriptions.services.addresses import clean_address
from subscriptions.services.attribution import source_metadata
from subscriptions.services.donations import format_amount
from subscriptions.services.memberships import (
    OFFER_KEY,
    PURPOSE_KEY,
    PURPOSE_MEMBERSHIP,
    SUBSCRIBER_KEY,
    find_or_create_subscriber,
)
from subscriptions.services.plans import active_plans as active_plans  # re-exported
from subscriptions.services.tokens import absolute_url


class BillingError(Exception):
    """Something the reader should be told, in words they can act on."""


class SignInRequired(BillingError):
    """The address belongs to a reader with billing history; they must sign in first."""


class AlreadyPaid(BillingError):
    """The reader already has a paid membership."""


@dataclass(frozen=True)
class CheckoutRedirect:
    url: str
    session_id: str


def change_group_seats(*, group: Membership, seats: int, attempt: str) -> None:
    """Ask Stripe for `seats` seats; the webhook's subscription update mirrors them."""
    if not stripe_client.is_configured():
        raise BillingError(
            "Seats cannot be changed right now: payments are not set up on this site."
        )
    if group.plan is None or group.plan.kind != Plan.Kind.GROUP or not group.stripe_subscription_id:
        raise BillingError("This is not a group subscription.")
    taken = group.invites.filter(removed_at__isnull=True).count()
    if seats < max(taken, 1):
        raise BillingError(
            f"{taken} seats are taken or invited: remove someone before going below that."
        )
    if seats > MAX_SEATS:
        raise BillingError(f"A group has at most {MAX_SEATS} seats.")
    subscription = stripe_client.retrieve_subscription(group.stripe_subscription_id)
    items = (subscription.get("items") or {}).get("data", [])
    if not items:
        raise BillingError("Stripe has no item on this subscription.")
    stripe_client.update_subscription_quantity(
        subscription_id=group.stripe_subscription_id,
        item_id=str(items[0]["id"]),
        quantity=seats,
        idempotency_key=f"broadside-seats-{group.pk}-{seats}-{attempt}",
    )


# --- The reader ----------------------------------------------------------------------


def subscriber_for_checkout(
    *, email: str, user: Any | None = None, source_article_id: int | None = None
) -> Subscriber:
    """Find the reader paying, or record a new pending one (no email is sent for it).

    A signed-in reader is their account's subscriber. Otherwise a reader who already
    asked for the free newsletter is found, not duplicated; a new address waits as
    pending, and the completed payment confirms it (`confirm_paying_subscriber`).
    """
    if user is not None and user.is_authenticated:
        linked = link_reader_account(user=user, email=user.email or email, signup=True)
        if linked is not None:
            return linked
    return find_or_create_subscriber(
        email=clean_address(email),
        status=Subscriber.Status.PENDING,
        consent_at=timezone.now(),
        consent_source="upgrade",
        # A new address's signup is credited to the article the upgrade came from.
        source_article_id=source_article_id,
    )


def ensure_stripe_customer(*, subscriber: Subscriber) -> str:
    """The reader's Stripe customer id, created once (the idempotency key is ours)."""
    if subscriber.stripe_customer_id:
        return subscriber.stripe_customer_id
    customer = stripe_client.create_customer(
        email=subscriber.email,
        name=subscriber.name,
        metadata={SUBSCRIBER_KEY: str(subscriber.pk)},
        idempotency_key=f"broadside-customer-{subscriber.pk}",
    )
    updated = Subscriber.objects.filter(pk=subscriber.pk, stripe_customer_id__isnull=True).update(
        stripe_customer_id=customer["id"]
    )
    subscriber.refresh_from_db(fields=["stripe_customer_id"])
    if not updated and subscriber.stripe_customer_id is None:
        raise BillingError("We could not set up billing for this address. Please try again.")
    return subscriber.stripe_customer_id or customer["id"]


# --- Checkout and the portal ------------------------------------------------------------


MAX_SEATS = 500
FOUNDING_MAX_AMOUNT = 10_000_000  # in cents; larger pledges are arranged by hand


def trial_days_for(*, subscriber: Subscriber, plan: Plan, offer: Offer | None = None) -> int:
    """The free days Checkout gives this reader: the offer's or the plan's, and only
    to a reader who never had a trial (one trial per reader)."""
    days = offer.trial_days if offer is not None and offer.kind == Offer.Kind.TRIAL else 0
    days = days or plan.trial_days
    if not days or subscriber.pk is None:
        return days
    had_trial = Membership.objects.filter(
        subscriber=subscriber, kind=Membership.Kind.STRIPE, trial_end__isnull=False
    ).exists()
    return 0 if had_trial else days


def founding_price(*, plan: Plan, amount: int) -> str:
    """A Stripe price for a founding member's own yearly amount (at least the plan's).

    It is made on the plan's product with the plan's id in its metadata, which is how
    `memberships.plan_for_price` knows it as this plan; one price per amount.
    """
    if amount < plan.amount:
        least = format_amount(plan.amount, plan.currency)
        raise BillingError(f"The founding membership is at least {least} a year.")
    if amount > FOUNDING_MAX_AMOUNT:
        raise BillingError("Please get in touch with us for a pledge that large.")
    if amount == plan.amount and plan.stripe_price_id:
        return plan.stripe_price_id
    product_id: str = plan.stripe_product_id
    if not product_id:
        product = stripe_client.retrieve_price(plan.stripe_price_id or "").get("product")
        product_id = str(product.get("id") if isinstance(product, dict) else product or "")
    price = stripe_client.create_price(
        product_id=product_id,
        amount=amount,
        currency=plan.currency.lower(),
        interval=Plan.Interval.YEAR,
        metadata={"plan_id": str(plan.pk), "founding": "true"},
        idempotency_key=f"broadside-founding-price-{plan.pk}-{amount}-{plan.currency.lower()}",
    )
    return str(price["id"])


def start_plan_checkout(
    *,
    plan: Plan,
    subscriber: Subscriber,
    trusted: bool,
    attempt: str | None = None,
    offer: Offer | None = None,
    seats: int = 1,
    amount: int | None = None,
    source_article_id: int | None = None,
) -> CheckoutRedirect:
    """Create a Checkout Session (mode=subscription) for this reader and plan.

    `source_article_id` (the article the upgrade came from) travels in the session's
    and the subscription's metadata, so the membership the webhook makes is credited.

    `trusted` says the visitor is this reader: signed in with this address. Anyone else
    whose address already has a Stripe customer must sign in first (pending readers
    can: the code proves the address): Checkout would otherwise show that customer's
    saved details to whoever typed the address.

    A Stripe customer is tied to the reader only for a trusted visitor (the sign-in
    proved the address) or by a completed payment (the webhook's
    `link_stripe_customer`). For anyone else Checkout gets the address as
    `customer_email` and Stripe makes the customer when they pay, so a stranger who
    types someone's address can neither block that reader's own checkout later (they
    would have been told to sign in) nor reach a customer of theirs.
    """
    if not plan.active or not plan.stripe_price_id:
        raise BillingError("This plan is not available. Please choose another one.")
    paid = subscriber_is_paying(subscriber=subscriber)
    if not trusted and (paid or subscriber.stripe_customer_id):
        # One answer for both, so the form does not tell strangers who pays.
        raise SignInRequired("Please sign in with this address to continue.")
    if paid and plan.kind != Plan.Kind.GROUP:
        raise AlreadyPaid("You already have a paid subscription. Manage it from your account.")
    if plan.kind == Plan.Kind.GROUP:
        if not 1 <= seats <= MAX_SEATS:
            raise BillingError(f"A group has between 1 and {MAX_SEATS} seats.")
    else:
        seats = 1
    reservation = None
    if offer is not None:
        # Holds a place until Stripe says the session completed or expired.
        reservation = offers.reserve_place(offer=offer, plan=plan)
        offer = reservation.offer
    try:
        redirect = _create_plan_session(
            plan=plan,
            subscriber=subscriber,
            trusted=trusted,
            attempt=attempt,
            offer=offer,
            seats=seats,
            amount=amount,
            source_article_id=source_article_id,
        )
    except BaseException:
        if reservation is not None:
            offers.release_reservation(reservation=reservation)
        raise
    if reservation is not None:
        offers.reservation_started(reservation=reservation, session_id=redirect.session_id)
    return redirect


def _create_plan_session(
    *,
    plan: Plan,
    subscriber: Subscriber,
    trusted: bool,
    attempt: str | None,
    offer: Offer | None,
    seats: int,
    amount: int | None,
    source_article_id: int | None,
) -> CheckoutRedirect:
    price_id = plan.stripe_price_id
    if plan.kind == Plan.Kind.FOUNDING:
        price_id = founding_price(plan=plan, amount=amount or plan.amount)
    metadata = {
        PURPOSE_KEY: PURPOSE_MEMBERSHIP,
        SUBSCRIBER_KEY: str(subscriber.pk),
        **source_metadata(source_article_id),
    }
    if offer is not None:
        metadata[OFFER_KEY] = str(offer.pk)
    subscription_data: dict[str, Any] = {"metadata": metadata}
    trial_days = trial_days_for(subscriber=subscriber, plan=plan, offer=offer)
    if trial_days:
        # https://docs.stripe.com/payments/checkout/free-trials
        subscription_data["trial_period_days"] = trial_days
    params: dict[str, Any] = {
        "mode": "subscription",
        "client_reference_id": str(subscriber.pk),
        "line_items": [{"price": price_id, "quantity": seats}],
        "metadata": {**metadata, "plan_id": str(plan.pk)},
        "subscription_data": subscription_data,
        "success_url": absolute_url("/upgrade/success/?session_id={CHECKOUT_SESSION_ID}"),
        "cancel_url": absolute_url("/upgrade/"),
    }
    if offer is not None and offer.ends_at is not None:
        # A session is payable for 24 hours; one started just before the offer ends
        # expires with it (Stripe takes 30 minutes at the least).
        now = timezone.now()
        if offer.ends_at < now + timedelta(hours=23):
            ends = max(offer.ends_at, now + timedelta(minutes=31))
            params["expires_at"] = int(ends.timestamp())
    if offer is not None and offer.stripe_promotion_code_id:
        # A promotion code given here cannot be combined with allow_promotion_codes.
        params["discounts"] = [{"promotion_code": offer.stripe_promotion_code_id}]
    elif plan.kind != Plan.Kind.FOUNDING:
        # A founding plan's amount is its minimum: no code typed at Checkout lowers it.
        params["allow_promotion_codes"] = True
    if subscriber.stripe_customer_id or (trusted and _address_proven(subscriber)):
        params["customer"] = ensure_stripe_customer(subscriber=subscriber)
    else:
        params["customer_email"] = subscriber.email
    session = stripe_client.create_checkout_session(
        params=params,
        # One session per click: a fresh key per attempt, stable across library retries.
        idempotency_key=f"broadside-checkout-{subscriber.pk}-{plan.pk}-{attempt or uuid.uuid4()}",
    )
    return CheckoutRedirect(url=session["url"], session_id=session["id"])


def _address_proven(subscriber: Subscriber) -> bool:
    """Whether the address is known to be the reader's: confirmed, imported, or verified
    on their account (a sign-in code)."""
    if subscriber.status != Subscriber.Status.PENDING:
        return True
    return (
        subscriber.user_id is not None
        and EmailAddress.objects.filter(
            user_id=subscriber.user_id, email=subscriber.email, verified=True
        ).exists()
    )


def open_billing_portal(*, subscriber: Subscriber) -> str:
    """The URL of a Stripe Customer Portal session for this reader."""
    if not subscriber.stripe_customer_id:
        raise BillingError("There is no billing account for this address yet.")
    session = stripe_client.create_portal_session(
        customer_id=subscriber.stripe_customer_id, return_url=absolute_url("/account/")
    )
    return str(session["url"])


def checkout_status(*, session_id: str) -> str:
    """'complete', 'open' or 'expired' for the success page; grants nothing."""
    try:
        session = stripe_client.retrieve_checkout_session(session_id)
    except stripe_client.StripeError:
        return "unknown"
    return str(session.get("status") or "unknown")


# --- Plans in Stripe ---------------------------------------------------------------------


def sync_stripe_plans() -> list[str]:
    """Create the Stripe product and the prices missing for our plans; store their ids.

    Safe to run again: plans whose price exists and matches are left alone. A plan
    whose amount, currency or interval was edited gets a new price (Stripe prices are
    immutable); existing subscribers stay on the old one.
    """
    report: list[str] = []
    # Plans made from imported prices keep the product and price they were made from.
    ours = Plan.objects.filter(imported_from="")
    product_id = (
        ours.exclude(stripe_product_id="").values_list("stripe_product_id", flat=True)
    ).first()
    if product_id:
        try:
            stripe_client.retrieve_product(product_id)
        except stripe_client.StripeError:
            product_id = None
    for plan in ours.order_by("pk"):
        if plan.stripe_price_id and _price_matches(plan):
            if product_id and plan.stripe_product_id != product_id:
                Plan.objects.filter(pk=plan.pk).update(stripe_product_id=product_id)
            report.append(f"{plan.name}: up to date ({plan.stripe_price_id})")
            continue
        if not product_id:
            publication = Publication.load()
            product = stripe_client.create_product(
                name=f"{publication.name} paid subscription",
                metadata={PURPOSE_KEY: PURPOSE_MEMBERSHIP},
                idempotency_key="broadside-product-membership",
            )
            product_id = product["id"]
            report.append(f"Created product {product_id}")
        price = stripe_client.create_price(
            product_id=product_id,
            amount=plan.amount,
            currency=plan.currency.lower(),
            interval=plan.interval,
            metadata={"plan_id": str(plan.pk)},
            idempotency_key=(
                f"broadside-price-{plan.pk}-{plan.amount}-{plan.currency.lower()}-{plan.interval}"
            ),
        )
        Plan.objects.filter(pk=plan.pk).update(
            stripe_price_id=price["id"], stripe_product_id=product_id
        )
        report.append(f"{plan.name}: created price {price['id']}")
    return report


def _price_matches(plan: Plan) -> bool:
    try:
        price = stripe_client.retrieve_price(plan.stripe_price_id or "")
    except stripe_client.StripeError:
        return False
    recurring = price.get("recurring") or {}
    return (
        price.get("unit_amount") == plan.amount
        and str(price.get("currency", "")).lower() == plan.currency.lower()
        and recurring.get("interval") == plan.interval
    )
