"""Offers: a discount or an extended trial on a shareable link (/upgrade/?offer=CODE).

The editor creates an offer in the admin; `publish_offer` makes its Stripe coupon and
promotion code (a trial offer needs neither). The upgrade page shows the discounted
price (`offer_price`) and `billing.start_plan_checkout` applies the promotion code at
Checkout. A redemption is a membership that came from the offer, so the count cannot
drift from what readers actually hold. A capped offer also counts the checkouts started
with it and not yet completed or expired (`OfferReservation`, taken under a row lock on
the offer by `reserve_place`), so no more readers can start it than its cap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from subscriptions import stripe_client
from subscriptions.models import Membership, Offer, OfferReservation, Plan
from subscriptions.services.donations import format_amount
from subscriptions.services.memberships import OFFER_KEY

CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,38}[A-Z0-9]$")
# Memberships that never became a subscription somebody agreed to pay for.
NOT_REDEEMED = (Membership.Status.INCOMPLETE, Membership.Status.INCOMPLETE_EXPIRED)
# A place taken for a checkout that never got its session id back (Stripe failed, the
# process died) is free again after this.
UNSTARTED_RESERVATION_TTL = timedelta(hours=1)


class OfferError(Exception):
    """The offer cannot be used or saved; the message says why, in words a reader or an
    editor can act on."""


@dataclass(frozen=True)
class OfferPrice:
    """What a reader pays with the offer: `first` for the discounted periods."""

    first: int
    regular: int
    periods: str  # "for 3 months", "forever", "for the first payment", "after 30 free days"


def normalize_code(code: str) -> str:
    return code.strip().upper()


def validate_code(code: str) -> str:
    code = normalize_code(code)
    if not CODE_PATTERN.match(code):
        raise OfferError("A code is 3 to 40 letters, digits or dashes, e.g. SPRING-25.")
    return code


def redemptions(*, offer: Offer) -> int:
    return offer.memberships.exclude(status__in=NOT_REDEEMED).count()


def open_reservations(*, offer: Offer, now: datetime | None = None) -> int:
    now = now or timezone.now()
    return (
        offer.reservations.filter(released_at__isnull=True)
        .filter(
            ~Q(stripe_checkout_session_id="") | Q(created_at__gt=now - UNSTARTED_RESERVATION_TTL)
        )
        .count()
    )


def places_taken(*, offer: Offer, now: datetime | None = None) -> int:
    """Redemptions plus checkouts started with the offer and still open."""
    return redemptions(offer=offer) + open_reservations(offer=offer, now=now)


def reserve_place(*, offer: Offer, plan: Plan, now: datetime | None = None) -> OfferReservation:
    """Check the offer again under a row lock and hold a place for one checkout.

    Raises OfferError if it cannot be used (used up, ended...). On SQLite the
    transaction takes the write lock at BEGIN, which serialises the same way.
    """
    with transaction.atomic():
        Offer.objects.select_for_update().filter(pk=offer.pk).first()
        checked = offer_for_code(code=offer.code, plan=plan, now=now)
        return OfferReservation.objects.create(offer=checked)


def reservation_started(*, reservation: OfferReservation, session_id: str) -> None:
    OfferReservation.objects.filter(pk=reservation.pk).update(stripe_checkout_session_id=session_id)


def release_reservation(
    *,
    reservation: OfferReservation | None = None,
    session_id: str = "",
    now: datetime | None = None,
) -> None:
    """The checkout completed (its membership counts now), expired, or never started."""
    now = now or timezone.now()
    rows = OfferReservation.objects.filter(released_at__isnull=True)
    if reservation is not None:
        rows = rows.filter(pk=reservation.pk)
    elif session_id:
        rows = rows.filter(stripe_checkout_session_id=session_id)
    else:
        return
    rows.update(released_at=now)


def offer_for_code(*, code: str, plan: Plan | None = None, now: datetime | None = None) -> Offer:
    """The offer a link names, if a reader may use it now (on `plan`, if given).

    Raises OfferError saying why not: unknown, ended, used up, or for another plan.
    """
    now = now or timezone.now()
    offer = Offer.objects.select_related("plan").filter(code=normalize_code(code)).first()
    if offer is None:
        raise OfferError("This offer does not exist. Check the link, or choose a plan below.")
    if not offer.active or (offer.ends_at is not None and offer.ends_at <= now):
        raise OfferError(f"The offer “{offer.name}” has ended. You can still choose a plan below.")
    if (
        offer.max_redemptions is not None
        and places_taken(offer=offer, now=now) >= offer.max_redemptions
    ):
        raise OfferError(
            f"The offer “{offer.name}” has been used up. You can still choose a plan below."
        )
    if offer.kind != Offer.Kind.TRIAL and not offer.stripe_promotion_code_id:
        raise OfferError(f"The offer “{offer.name}” is not open yet.")
    if plan is not None and not offer_applies(offer=offer, plan=plan):
        raise OfferError(f"The offer “{offer.name}” is not for the {plan.name} plan.")
    return offer


def offer_applies(*, offer: Offer, plan: Plan) -> bool:
    """An offer for no plan in particular applies to individual plans only: a founding
    plan's amount is its minimum, which only an offer naming that plan may go below."""
    if offer.plan_id is not None:
        return offer.plan_id == plan.pk
    if plan.kind in (Plan.Kind.GROUP, Plan.Kind.FOUNDING):
        return False
    return offer.kind != Offer.Kind.AMOUNT or offer.currency.lower() == plan.currency.lower()


def offer_price(*, offer: Offer, amount: int) -> OfferPrice:
    """The price of a plan of `amount` with the offer, as Stripe will bill it."""
    if offer.kind == Offer.Kind.TRIAL:
        return OfferPrice(
            first=amount, regular=amount, periods=f"after {offer.trial_days} free days"
        )
    if offer.kind == Offer.Kind.PERCENT:
        # Stripe rounds a percentage discount to the nearest cent.
        first = amount - round(amount * (offer.percent_off or 0) / 100)
    else:
        first = max(amount - (offer.amount_off or 0), 0)
    periods = {
        Offer.Duration.ONCE: "for the first payment",
        Offer.Duration.FOREVER: "for as long as you stay",
        Offer.Duration.REPEATING: f"for {offer.duration_in_months} months",
    }[Offer.Duration(offer.duration)]
    return OfferPrice(first=first, regular=amount, periods=periods)


def describe(*, offer: Offer, amount: int, currency: str) -> str:
    price = offer_price(offer=offer, amount=amount)
    if offer.kind == Offer.Kind.TRIAL:
        return f"{offer.trial_days} days free, then {format_amount(amount, currency)}"
    return (
        f"{format_amount(price.first, currency)} instead of "
        f"{format_amount(price.regular, currency)} {price.periods}"
    )


def check_offer(*, offer: Offer) -> None:
    """What the database constraints cannot say, for the admin form."""
    validate_code(offer.code)
    if (
        offer.kind == Offer.Kind.AMOUNT
        and offer.plan is not None
        and offer.currency.lower() != offer.plan.currency.lower()
    ):
        raise OfferError("An amount off is in the plan's currency.")
    if offer.plan is not None and offer.plan.kind == Plan.Kind.GROUP:
        raise OfferError("Offers are for individual and founding plans.")


def publish_offer(*, offer: Offer) -> Offer:
    """Create the Stripe coupon and promotion code of a discount offer, once.

    Safe to run again: ids already stored are kept, and the idempotency keys are ours.
    A trial offer is applied as Checkout's `trial_period_days` and needs nothing here.
    """
    offer.code = validate_code(offer.code)
    if offer.kind == Offer.Kind.TRIAL:
        return offer
    metadata = {OFFER_KEY: str(offer.pk)}
    if not offer.stripe_coupon_id:
        params: dict = {"duration": offer.duration, "name": offer.name[:40], "metadata": metadata}
        if offer.kind == Offer.Kind.PERCENT:
            params["percent_off"] = offer.percent_off
        else:
            params["amount_off"] = offer.amount_off
            params["currency"] = offer.currency.lower()
        if offer.duration == Offer.Duration.REPEATING:
            params["duration_in_months"] = offer.duration_in_months
        if offer.plan is not None and offer.plan.stripe_product_id:
            params["applies_to"] = {"products": [offer.plan.stripe_product_id]}
        coupon = stripe_client.create_coupon(
            params=params, idempotency_key=f"broadside-coupon-{offer.pk}"
        )
        offer.stripe_coupon_id = coupon["id"]
        Offer.objects.filter(pk=offer.pk).update(stripe_coupon_id=coupon["id"])
    if not offer.stripe_promotion_code_id:
        promotion = stripe_client.create_promotion_code(
            coupon_id=offer.stripe_coupon_id,
            code=offer.code,
            expires_at=int(offer.ends_at.timestamp()) if offer.ends_at else None,
            max_redemptions=offer.max_redemptions,
            metadata=metadata,
            idempotency_key=f"broadside-promotion-code-{offer.pk}",
        )
        offer.stripe_promotion_code_id = promotion["id"]
        Offer.objects.filter(pk=offer.pk).update(stripe_promotion_code_id=promotion["id"])
    return offer


def end_offer(*, offer: Offer) -> None:
    """Stop an offer: its link says it has ended and Stripe refuses its code."""
    Offer.objects.filter(pk=offer.pk).update(active=False)
    if offer.stripe_promotion_code_id:
        stripe_client.set_promotion_code_active(
            promotion_code_id=offer.stripe_promotion_code_id, active=False
        )


def apply_promotion_code_update(*, promotion_code: dict) -> None:
    """Stripe says a promotion code changed (deactivated in the dashboard, say)."""
    if not promotion_code.get("active"):
        Offer.objects.filter(stripe_promotion_code_id=promotion_code.get("id") or "-").update(
            active=False
        )


def offer_figures() -> list[dict]:
    """Each offer with its redemptions, for the revenue summary."""
    rows = []
    for offer in Offer.objects.order_by("-created_at")[:20]:
        redeemed = offer.memberships.exclude(status__in=NOT_REDEEMED)
        rows.append(
            {
                "offer": offer,
                "redemptions": redeemed.count(),
                "paying": redeemed.filter(
                    Q(status=Membership.Status.ACTIVE) | Q(status=Membership.Status.PAST_DUE)
                ).count(),
            }
        )
    return rows
