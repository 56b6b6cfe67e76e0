"""Donations: one-off or monthly support through Stripe Checkout; donors need not subscribe.

The Donation row is created pending with its Checkout Session; Stripe's webhook marks it
paid (and sends the thank-you email, once), refunded or disputed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from publication.emails import send_email_on_commit
from publication.models import Publication
from subscriptions import stripe_client
from subscriptions.models import Donation, Plan, Subscriber
from subscriptions.services.addresses import normalized_or_none
from subscriptions.services.attribution import source_from_metadata, source_metadata
from subscriptions.services.memberships import (
    PURPOSE_DONATION,
    PURPOSE_KEY,
    SUBSCRIBER_KEY,
    find_subscriber_for_stripe,
    from_timestamp,
    invoice_subscription_metadata,
    link_stripe_customer,
)
from subscriptions.services.tokens import absolute_url

logger = logging.getLogger(__name__)

# In the currency's smallest unit (cents).
PRESET_AMOUNTS = (500, 1000, 2500, 5000)
MIN_AMOUNT = 100
MAX_AMOUNT = 1_000_000
MESSAGE_MAX_LENGTH = 500  # Stripe metadata values hold at most 500 characters.
DONATION_KEY = "donation_id"


class DonationError(Exception):
    """A donation could not be started; the message is for the donor."""


@dataclass(frozen=True)
class DonationCheckout:
    url: str
    donation: Donation


def donation_currency() -> str:
    """Donations are taken in the currency of the paid plans (USD when there are none)."""
    plan = Plan.objects.filter(active=True).order_by("position", "amount").first()
    return (plan.currency if plan else "usd").lower()


def validate_amount(amount: int) -> None:
    if amount < MIN_AMOUNT:
        raise DonationError(f"The smallest donation is {MIN_AMOUNT / 100:.2f}.")
    if amount > MAX_AMOUNT:
        raise DonationError(
            f"The largest donation we take online is {MAX_AMOUNT / 100:,.2f}. "
            "Please get in touch for larger gifts."
        )


def start_donation_checkout(
    *,
    amount: int,
    recurring: bool,
    message: str = "",
    email: str = "",
    subscriber: Subscriber | None = None,
    attempt: str | None = None,
    source_article_id: int | None = None,
) -> DonationCheckout:
    """Record a pending donation and create its Checkout Session.

    One-off gifts use mode=payment; monthly support is a subscription with the price
    given inline (price_data), so no product has to be set up in Stripe first.
    """
    validate_amount(amount)
    message = message.strip()[:MESSAGE_MAX_LENGTH]
    currency = donation_currency()
    publication = Publication.load()
    email = (email or (subscriber.email if subscriber else "")).strip()
    email = normalized_or_none(email) or email
    with transaction.atomic():
        donation = Donation.objects.create(
            amount=amount,
            currency=currency,
            email=email,
            subscriber=subscriber,
            message=message,
            recurring=recurring,
            source_article_id=source_article_id,
        )
    metadata = {
        PURPOSE_KEY: PURPOSE_DONATION,
        DONATION_KEY: str(donation.pk),
        **source_metadata(source_article_id),
    }
    if subscriber is not None:
        metadata[SUBSCRIBER_KEY] = str(subscriber.pk)
    if message:
        metadata["message"] = message
    price_data: dict[str, Any] = {
        "currency": currency,
        "unit_amount": amount,
        "product_data": {
            "name": (
                f"Monthly support for {publication.name}"
                if recurring
                else f"Donation to {publication.name}"
            )
        },
    }
    params: dict[str, Any] = {
        "line_items": [{"price_data": price_data, "quantity": 1}],
        "metadata": metadata,
        "client_reference_id": f"donation-{donation.pk}",
        "success_url": absolute_url("/donate/thanks/?session_id={CHECKOUT_SESSION_ID}"),
        "cancel_url": absolute_url("/donate/"),
    }
    if recurring:
        price_data["recurring"] = {"interval": "month"}
        params["mode"] = "subscription"
        params["subscription_data"] = {"metadata": metadata}
    else:
        params["mode"] = "payment"
        params["submit_type"] = "donate"
        params["payment_intent_data"] = {"metadata": metadata}
    if subscriber is not None and subscriber.stripe_customer_id:
        params["customer"] = subscriber.stripe_customer_id
    elif email:
        params["customer_email"] = email
    try:
        session = stripe_client.create_checkout_session(
            params=params,
            idempotency_key=f"broadside-donation-{donation.pk}-{attempt or uuid.uuid4()}",
        )
    except stripe_client.StripeError as exc:
        donation.delete()
        raise DonationError(
            "We could not reach the payment provider. Please try again in a moment."
        ) from exc
    Donation.objects.filter(pk=donation.pk).update(stripe_checkout_session_id=session["id"])
    donation.stripe_checkout_session_id = session["id"]
    return DonationCheckout(url=session["url"], donation=donation)


# --- Applying Stripe's word ------------------------------------------------------------


def is_donation_session(session: dict[str, Any]) -> bool:
    metadata = session.get("metadata") or {}
    if metadata.get(PURPOSE_KEY) == PURPOSE_DONATION:
        return True
    # A one-off payment can only be a donation here: Payment Links for "buy me a coffee"
    # arrive without our metadata.
    return session.get("mode") == "payment"


def record_paid_donation(*, session: dict[str, Any]) -> Donation | None:
    """A completed, paid Checkout Session for a donation: mark it paid, thank once.

    `session` is as re-read from Stripe. Call inside a transaction.
    """
    if session.get("status") != "complete" or session.get("payment_status") not in (
        "paid",
        "no_payment_required",
    ):
        return None
    metadata = session.get("metadata") or {}
    details = session.get("customer_details") or {}
    email = details.get("email") or session.get("customer_email") or ""
    email = normalized_or_none(email) or email
    donation = (
        Donation.objects.select_for_update()
        .filter(stripe_checkout_session_id=session["id"])
        .first()
    )
    if donation is None and metadata.get(DONATION_KEY, "").isdigit():
        donation = (
            Donation.objects.select_for_update()
            .filter(pk=int(metadata[DONATION_KEY]), stripe_checkout_session_id__isnull=True)
            .first()
        )
    if donation is None:
        donation = Donation(
            stripe_checkout_session_id=session["id"],
            message=str(metadata.get("message", ""))[:MESSAGE_MAX_LENGTH],
        )
    donation.stripe_checkout_session_id = session["id"]
    donation.amount = int(session.get("amount_total") or donation.amount or 0)
    donation.currency = str(session.get("currency") or donation.currency or "usd")
    donation.email = email or donation.email
    donation.recurring = session.get("mode") == "subscription"
    donation.stripe_payment_intent_id = str(
        session.get("payment_intent") or donation.stripe_payment_intent_id or ""
    )
    donation.stripe_subscription_id = str(
        session.get("subscription") or donation.stripe_subscription_id or ""
    )
    if session.get("invoice") and not donation.stripe_invoice_id:
        donation.stripe_invoice_id = str(session["invoice"])
    if donation.subscriber_id is None:
        donation.subscriber = find_subscriber_for_stripe(
            subscriber_id=metadata.get(SUBSCRIBER_KEY),
            customer_id=session.get("customer"),
            email=donation.email,
        )
    if donation.subscriber is not None:
        link_stripe_customer(subscriber=donation.subscriber, customer_id=session.get("customer"))
    if donation.source_article_id is None:
        donation.source_article_id = source_from_metadata(metadata)
    if donation.status == Donation.Status.PENDING:
        donation.status = Donation.Status.PAID
        donation.paid_at = timezone.now()
    if donation.amount <= 0:
        logger.warning("Checkout Session %s has no amount; not recorded", session["id"])
        return None
    donation.save()
    send_donation_thanks(donation=donation)
    return donation


def forget_abandoned_donation(*, session_id: str) -> int:
    """The donor left Checkout unpaid until the session expired: nothing was given, so
    the pending row (an address and a message) is not kept."""
    deleted, _ = Donation.objects.filter(
        stripe_checkout_session_id=session_id, status=Donation.Status.PENDING
    ).delete()
    return deleted


def send_donation_thanks(*, donation: Donation) -> bool:
    """The thank-you email, at most once per donation."""
    if not donation.email or donation.status != Donation.Status.PAID:
        return False
    if Subscriber.objects.filter(
        email=normalized_or_none(donation.email) or "",
        status__in=[Subscriber.Status.BOUNCED, Subscriber.Status.COMPLAINED],
    ).exists():
        return False  # The address takes no mail from us (as for payment and membership emails).
    claimed = Donation.objects.filter(pk=donation.pk, thanked_at__isnull=True).update(
        thanked_at=timezone.now()
    )
    if not claimed:
        return False
    send_email_on_commit(
        to=donation.email,
        subject="Thank you for your support",
        template="donation_thanks",
        context={
            "donation": donation,
            "amount": format_amount(donation.amount, donation.currency),
            "billing_url": absolute_url("/account/billing/"),
        },
    )
    return True


def record_recurring_donation_payment(*, invoice: dict[str, Any], subscription_id: str) -> None:
    """A later month of monthly support was paid: one Donation per invoice."""
    if invoice.get("billing_reason") == "subscription_create":
        # The first month is the Checkout Session's donation. A subscription's session
        # has no payment intent, so the invoice's is noted on it: refunds and disputes
        # of that payment find the donation by it.
        donation_id = invoice_subscription_metadata(invoice).get(DONATION_KEY, "")
        intent = invoice_payment_intent(invoice)
        if donation_id.isdigit() and intent:
            Donation.objects.filter(pk=int(donation_id), stripe_payment_intent_id="").update(
                stripe_payment_intent_id=intent
            )
        return
    amount = int(invoice.get("amount_paid") or 0)
    if amount <= 0:
        return  # Nothing was paid (a 100% coupon, say): no money to record.
    first = Donation.objects.filter(stripe_subscription_id=subscription_id).order_by("pk").first()
    if first is not None and not first.email and first.subscriber_id is None:
        # The donor erased their account (their donations were made anonymous): the
        # money is recorded, but the invoice's address is not stored again.
        email = ""
    else:
        email = invoice.get("customer_email") or (first.email if first else "")
    Donation.objects.get_or_create(
        stripe_invoice_id=invoice["id"],
        defaults={
            "amount": amount,
            "currency": str(invoice.get("currency") or "usd"),
            "email": email,
            "subscriber": first.subscriber if first else None,
            "recurring": True,
            "status": Donation.Status.PAID,
            "stripe_subscription_id": subscription_id,
            "stripe_payment_intent_id": invoice_payment_intent(invoice),
            "thanked_at": timezone.now(),  # Thanked once, for the first month.
            "paid_at": from_timestamp((invoice.get("status_transitions") or {}).get("paid_at"))
            or timezone.now(),
            # Each month of support is credited where the first one was.
            "source_article_id": first.source_article_id if first else None,
        },
    )


# Stripe statuses of a subscription that will not bill again.
_ENDED_SUBSCRIPTION_STATUSES = {"canceled", "incomplete_expired"}


def monthly_donation_still_bills(*, donations: QuerySet[Donation]) -> bool:
    """Whether any of these donations' monthly support will be billed again.

    Nothing here learns that a monthly donation was stopped (its subscription is not
    mirrored), so Stripe is asked: stopped means ended, or set to end at the period's
    end. Without Stripe to ask, a paid monthly donation is taken to go on billing.
    Raises stripe_client.StripeError when Stripe cannot be reached.
    """
    subscription_ids = set(
        donations.filter(recurring=True, status=Donation.Status.PAID)
        .exclude(stripe_subscription_id="")
        .values_list("stripe_subscription_id", flat=True)
    )
    if not subscription_ids:
        return False
    if not stripe_client.is_configured():
        return True
    for subscription_id in sorted(subscription_ids):
        try:
            subscription = stripe_client.retrieve_subscription(subscription_id)
        except stripe_client.StripeNotFound:
            continue  # deleted in Stripe: it bills nobody
        if subscription.get("status") not in _ENDED_SUBSCRIPTION_STATUSES and not subscription.get(
            "cancel_at_period_end"
        ):
            return True
    return False


def invoice_payment_intent(invoice: dict[str, Any]) -> str:
    if invoice.get("payment_intent"):
        return str(invoice["payment_intent"])
    for payment in (invoice.get("payments") or {}).get("data", []):
        intent = (payment.get("payment") or {}).get("payment_intent")
        if intent:
            return str(intent)
    return ""


def donation_for_charge(charge: dict[str, Any]) -> Donation | None:
    intent = charge.get("payment_intent")
    if intent:
        found = Donation.objects.select_for_update().filter(stripe_payment_intent_id=intent).first()
        if found is not None:
            return found
    invoice = charge.get("invoice")
    if invoice:
        return Donation.objects.select_for_update().filter(stripe_invoice_id=invoice).first()
    return None


def mark_donation_refunded(*, charge: dict[str, Any]) -> Donation | None:
    """Record what was refunded; only a full refund makes the donation refunded."""
    donation = donation_for_charge(charge)
    if donation is None:
        return None
    # Each charge.refunded event carries the charge's running total, so the largest one
    # seen is right whatever order the events arrive in.
    refunded = max(donation.amount_refunded, int(charge.get("amount_refunded") or 0))
    if charge.get("refunded") or refunded >= donation.amount:
        refunded = donation.amount
        donation.status = Donation.Status.REFUNDED
    donation.amount_refunded = refunded
    donation.save(update_fields=["amount_refunded", "status", "updated_at"])
    return donation


def mark_donation_disputed(*, dispute: dict[str, Any]) -> Donation | None:
    charge = {"payment_intent": dispute.get("payment_intent"), "invoice": None}
    donation = donation_for_charge(charge)
    if donation is not None:
        donation.status = Donation.Status.DISPUTED
        donation.save(update_fields=["status", "updated_at"])
    return donation


def format_amount(amount: int, currency: str) -> str:
    symbols = {"usd": "$", "eur": "€", "gbp": "£"}
    symbol = symbols.get(currency.lower())
    value = f"{amount / 100:,.2f}"
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"
