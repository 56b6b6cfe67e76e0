"""Gift subscriptions: bought once by anyone for a recipient, redeemed by a signed link.

`start_gift_checkout` (the /gift/ page) records a pending Gift and sends the buyer to
Checkout (mode=payment). Stripe's webhook calls `record_paid_gift`: the buyer gets a
receipt, and the recipient their email on the chosen day, sent by `deliver_due_gifts`
(a periodic task; a gift for today goes at once). `redeem_gift` turns the link into a
gift membership, once, and tells the buyer. `mark_gift_refunded` revokes an unredeemed
gift whose payment was refunded.
"""

from __future__ import annotations

import calendar
import logging
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.core import signing
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from publication.emails import send_email_on_commit, send_transactional_email
from publication.models import Publication
from subscriptions import stripe_client
from subscriptions.models import Gift, Membership, Plan, Subscriber
from subscriptions.services.access import access_granting_memberships
from subscriptions.services.accounts import ensure_reader_account
from subscriptions.services.addresses import clean_address
from subscriptions.services.donations import format_amount
from subscriptions.services.memberships import (
    PURPOSE_GIFT,
    PURPOSE_KEY,
    confirm_paying_subscriber,
    find_or_create_subscriber,
)
from subscriptions.services.tokens import absolute_url

logger = logging.getLogger(__name__)


def single_line(text: str) -> str:
    """A name as one line of plain text: control characters and line or paragraph
    separators (CR, LF, NUL, U+2028...) become spaces, runs of spaces one. Names go
    into email headers (a subject), where a line break would be refused or forge one."""
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    return " ".join(cleaned.split())


GIFT_KEY = "gift_id"
GIFT_SALT = "broadside.subscriptions.gift"
GIFT_MONTHS = (1, 3, 6, 12)
MESSAGE_MAX_LENGTH = 500  # Stripe metadata values hold at most 500 characters.
LATEST_DELIVERY = timedelta(days=366)


class GiftError(Exception):
    """The gift cannot be bought or redeemed; the message is for the reader."""


@dataclass(frozen=True)
class GiftOption:
    plan: Plan
    months: int
    amount: int

    @property
    def key(self) -> str:
        return f"{self.plan.pk}-{self.months}"

    @property
    def label(self) -> str:
        length = (
            "1 year"
            if self.months == 12
            else f"{self.months} month" + ("s" if self.months > 1 else "")
        )
        return f"{length} of {self.plan.name} · {format_amount(self.amount, self.plan.currency)}"


@dataclass(frozen=True)
class GiftCheckout:
    url: str
    gift: Gift


@dataclass(frozen=True)
class Redemption:
    gift: Gift
    membership: Membership
    subscriber: Subscriber
    user: Any


def gift_options() -> list[GiftOption]:
    """1, 3, 6 or 12 months of a monthly plan at its price, or a year of a yearly plan."""
    options: list[GiftOption] = []
    plans = Plan.objects.filter(
        active=True, kind=Plan.Kind.INDIVIDUAL, stripe_price_id__isnull=False
    ).exclude(stripe_price_id="")
    for plan in plans:
        if plan.interval == Plan.Interval.MONTH:
            options += [GiftOption(plan, months, plan.amount * months) for months in GIFT_MONTHS]
        else:
            options.append(GiftOption(plan, 12, plan.amount))
    return options


def gifts_open() -> bool:
    """A gift can be paid for now: Stripe is configured and a plan can be given."""
    return stripe_client.is_configured() and bool(gift_options())


def option_for_key(key: str) -> GiftOption:
    for option in gift_options():
        if option.key == key:
            return option
    raise GiftError("Please choose one of the gifts shown.")


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later (the month's last day if it is shorter)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


# --- Buying --------------------------------------------------------------------------


def start_gift_checkout(
    *,
    option: GiftOption,
    buyer_email: str,
    recipient_email: str,
    recipient_name: str = "",
    buyer_name: str = "",
    message: str = "",
    deliver_on: date | None = None,
    attempt: str | None = None,
) -> GiftCheckout:
    """Record a pending gift and create its Checkout Session (mode=payment).

    Raises InvalidAddress for an address we cannot email, GiftError otherwise.
    """
    today = timezone.localdate()
    deliver_on = deliver_on or today
    if deliver_on < today:
        raise GiftError("The delivery date has passed; choose today or a later day.")
    if deliver_on > today + LATEST_DELIVERY:
        raise GiftError("Choose a delivery date within a year.")
    buyer = clean_address(buyer_email)
    recipient = clean_address(recipient_email)
    message = message.strip()[:MESSAGE_MAX_LENGTH]
    plan = option.plan
    with transaction.atomic():
        gift = Gift.objects.create(
            plan=plan,
            months=option.months,
            amount=option.amount,
            currency=plan.currency.lower(),
            buyer_email=buyer,
            buyer_name=single_line(buyer_name)[:200],
            recipient_email=recipient,
            recipient_name=single_line(recipient_name)[:200],
            message=message,
            deliver_on=deliver_on,
        )
    publication = Publication.load()
    metadata = {PURPOSE_KEY: PURPOSE_GIFT, GIFT_KEY: str(gift.pk)}
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": gift.currency,
                    "unit_amount": gift.amount,
                    "product_data": {
                        "name": f"Gift: {option.label.split(' · ')[0]} of {publication.name}"
                    },
                },
                "quantity": 1,
            }
        ],
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "client_reference_id": f"gift-{gift.pk}",
        "customer_email": buyer,
        "success_url": absolute_url("/gift/thanks/?session_id={CHECKOUT_SESSION_ID}"),
        "cancel_url": absolute_url("/gift/"),
    }
    try:
        session = stripe_client.create_checkout_session(
            params=params, idempotency_key=f"broadside-gift-{gift.pk}-{attempt or uuid.uuid4()}"
        )
    except stripe_client.StripeError as exc:
        gift.delete()
        raise GiftError(
            "We could not reach the payment provider. Please try again in a moment."
        ) from exc
    Gift.objects.filter(pk=gift.pk).update(stripe_checkout_session_id=session["id"])
    gift.stripe_checkout_session_id = session["id"]
    return GiftCheckout(url=session["url"], gift=gift)


def is_gift_session(session: dict[str, Any]) -> bool:
    return (session.get("metadata") or {}).get(PURPOSE_KEY) == PURPOSE_GIFT


def record_paid_gift(*, session: dict[str, Any], now: datetime | None = None) -> Gift | None:
    """A completed, paid gift Checkout Session (as re-read from Stripe): mark the gift
    paid, send the buyer's receipt once, and deliver it now if its day has come.

    Call inside a transaction.
    """
    if session.get("status") != "complete" or session.get("payment_status") != "paid":
        return None
    now = now or timezone.now()
    gift_id = str((session.get("metadata") or {}).get(GIFT_KEY) or "")
    ours = Q(stripe_checkout_session_id=session["id"])
    if gift_id.isdigit():
        # Checkout may complete before the session's id was stored on the gift.
        ours |= Q(pk=int(gift_id), stripe_checkout_session_id__isnull=True)
    gift = Gift.objects.select_for_update().filter(ours).select_related("plan").first()
    if gift is None:
        logger.warning("Paid gift session %s names no gift of ours", session["id"])
        return None
    if gift.status == Gift.Status.PENDING:
        gift.status = Gift.Status.PAID
        gift.paid_at = now
        gift.stripe_payment_intent_id = str(session.get("payment_intent") or "")
        gift.save(update_fields=["status", "paid_at", "stripe_payment_intent_id"])
    receipt_due = Gift.objects.filter(pk=gift.pk, receipt_sent_at__isnull=True)
    # A buyer who erased their account meanwhile has no address left to send it to.
    if receipt_due.update(receipt_sent_at=now) and gift.buyer_email:
        send_email_on_commit(
            to=gift.buyer_email,
            subject="Your gift subscription",
            template="gift_receipt",
            context=_gift_context(gift),
        )
    if gift.deliver_on <= timezone.localdate(now):
        # Once the payment is on record; a failure leaves the gift for the next run.
        gift_id_paid = gift.pk
        transaction.on_commit(lambda: deliver_gift(gift_id=gift_id_paid, now=now))
    return gift


def forget_abandoned_gift(*, session_id: str) -> int:
    deleted, _ = Gift.objects.filter(
        stripe_checkout_session_id=session_id, status=Gift.Status.PENDING
    ).delete()
    return deleted


# --- Delivering ----------------------------------------------------------------------


def deliver_due_gifts(*, now: datetime | None = None) -> int:
    """Email every paid gift whose day has come (the periodic task). Returns how many."""
    now = now or timezone.now()
    due = (
        _deliverable().filter(deliver_on__lte=timezone.localdate(now)).values_list("pk", flat=True)
    )
    return sum(deliver_gift(gift_id=gift_id, now=now) for gift_id in list(due[:500]))


def _deliverable() -> QuerySet[Gift]:
    """Paid and not yet sent, to a recipient who has not erased their account since."""
    return Gift.objects.filter(status=Gift.Status.PAID, delivered_at__isnull=True).exclude(
        recipient_email=""
    )


def deliver_gift(*, gift_id: int, now: datetime) -> bool:
    """Send the recipient their link, once: the gift is claimed under a row lock and
    marked delivered only after the mail server took the email. A failure (the server
    refuses it, a header it rejects) is logged and leaves the gift due for the next run.
    """
    try:
        with transaction.atomic():
            gift = (
                _deliverable()
                .select_for_update(skip_locked=True)
                .select_related("plan")
                .filter(pk=gift_id)
                .first()
            )
            if gift is None:
                return False
            send_transactional_email(
                to=gift.recipient_email,
                subject=f"{single_line(gift.buyer_name) or 'Someone'} gave you a subscription",
                template="gift_delivery",
                context={**_gift_context(gift), "redeem_url": redemption_url(gift=gift)},
            )
            gift.status = Gift.Status.DELIVERED
            gift.delivered_at = now
            gift.save(update_fields=["status", "delivered_at"])
    except Exception:
        logger.exception("Gift %s could not be delivered; it stays due", gift_id)
        return False
    return True


def redemption_token(*, gift: Gift) -> str:
    return signing.Signer(salt=GIFT_SALT).sign(f"{gift.pk}:{gift.recipient_email}")


def redemption_url(*, gift: Gift) -> str:
    return absolute_url(f"/gift/redeem/{redemption_token(gift=gift)}/")


def gift_for_token(*, token: str) -> Gift:
    try:
        value = signing.Signer(salt=GIFT_SALT).unsign(token)
        gift_id, email = value.split(":", 1)
        gift = Gift.objects.select_related("plan").filter(pk=int(gift_id), recipient_email=email)
    except (signing.BadSignature, ValueError) as exc:
        raise GiftError("This gift link is not valid.") from exc
    found = gift.first()
    if found is None:
        raise GiftError("This gift link is not valid.")
    return found


# --- Redeeming -----------------------------------------------------------------------


def paid_through(*, subscriber: Subscriber, now: datetime) -> datetime:
    """When the reader's current paid access ends (now, if they have none)."""
    granting = access_granting_memberships(now=now).filter(subscriber=subscriber)
    ends = [now]
    stripe_end = granting.filter(kind=Membership.Kind.STRIPE).aggregate(
        end=Max("current_period_end")
    )["end"]
    if stripe_end:
        ends.append(stripe_end)
    granted_end = granting.filter(
        kind__in=[Membership.Kind.COMP, Membership.Kind.GIFT], expires_at__isnull=False
    ).aggregate(end=Max("expires_at"))["end"]
    if granted_end:
        ends.append(granted_end)
    return max(ends)


def redeem_gift(*, token: str, now: datetime | None = None) -> Redemption:
    """Turn a delivered gift into a gift membership of its recipient, once.

    The recipient becomes a confirmed reader with an account if they were not one (the
    link reached their mailbox). A reader who is already paid gets the gift after their
    current period. Raises GiftError for a used, refunded or unknown link.
    """
    now = now or timezone.now()
    found = gift_for_token(token=token)
    with transaction.atomic():
        gift = Gift.objects.select_for_update().select_related("plan").get(pk=found.pk)
        if gift.status == Gift.Status.REDEEMED:
            raise GiftError("This gift has already been redeemed.")
        if gift.status == Gift.Status.REFUNDED:
            raise GiftError("This gift was refunded and can no longer be redeemed.")
        if gift.status != Gift.Status.DELIVERED:
            raise GiftError("This gift is not ready yet.")
        if not gift.recipient_email:
            raise GiftError(
                "This gift's recipient deleted their account; it can no longer be redeemed."
            )
        subscriber = find_or_create_subscriber(
            email=gift.recipient_email,
            name=gift.recipient_name,
            status=Subscriber.Status.ACTIVE,
            consent_at=now,
            consent_source="gift",
            confirmed_at=now,
        )
        confirm_paying_subscriber(subscriber=subscriber, source="gift")
        user = ensure_reader_account(subscriber=subscriber)
        start = paid_through(subscriber=subscriber, now=now)
        membership = Membership.objects.create(
            subscriber=subscriber,
            plan=gift.plan,
            kind=Membership.Kind.GIFT,
            status=Membership.Status.ACTIVE,
            starts_at=start if start > now else None,
            expires_at=add_months(start, gift.months),
        )
        gift.status = Gift.Status.REDEEMED
        gift.redeemed_at = now
        gift.membership = membership
        gift.save(update_fields=["status", "redeemed_at", "membership"])
        if gift.buyer_email:  # unless the buyer erased their account meanwhile
            send_email_on_commit(
                to=gift.buyer_email,
                subject=(
                    f"{single_line(gift.recipient_name) or gift.recipient_email} redeemed your gift"
                ),
                template="gift_redeemed",
                context={**_gift_context(gift), "membership": membership},
            )
    return Redemption(gift=gift, membership=membership, subscriber=subscriber, user=user)


# --- Refunds -------------------------------------------------------------------------


def mark_gift_refunded(*, charge: dict[str, Any], now: datetime | None = None) -> Gift | None:
    """A refunded gift payment revokes the gift if it was not redeemed yet (its link
    then says so); a redeemed gift's membership is left for the editor to decide."""
    intent = charge.get("payment_intent")
    if not intent:
        return None
    gift = Gift.objects.select_for_update().filter(stripe_payment_intent_id=intent).first()
    if gift is None:
        return None
    if not charge.get("refunded"):
        return gift  # A partial refund leaves the gift as it is.
    if gift.status in (Gift.Status.PENDING, Gift.Status.PAID, Gift.Status.DELIVERED):
        gift.status = Gift.Status.REFUNDED
        gift.refunded_at = now or timezone.now()
        gift.save(update_fields=["status", "refunded_at"])
    return gift


def _gift_context(gift: Gift) -> dict[str, Any]:
    return {
        "gift": gift,
        "amount": format_amount(gift.amount, gift.currency),
        "length": "1 year"
        if gift.months == 12
        else f"{gift.months} month" + ("s" if gift.months > 1 else ""),
        "upgrade_url": absolute_url("/upgrade/"),
        "gift_url": absolute_url("/gift/"),
    }
