"""Stripe webhooks: verify, record once, then apply in a worker.

Receiving (`receive_webhook`) only verifies the signature, parses the JSON and inserts
the StripeEvent, due at once; its unique `stripe_id` makes a redelivered event a no-op.
Processing (`process_event`) happens in a worker draining the stored events in order
(`subscriptions.services.stripe_outbox`), with no broker call in the request. It
re-reads the session or subscription from Stripe, so whatever order events arrive in,
the newest state is what gets applied (https://docs.stripe.com/webhooks#event-ordering).
A failure is recorded on the event (error, attempts) and retried with backoff by the
same drain; editors can also retry it from the admin.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, cached_property
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from publication.emails import send_email_on_commit
from subscriptions import stripe_client
from subscriptions.models import Membership, StripeEvent, Subscriber
from subscriptions.services import donations, gifts, offers, trials
from subscriptions.services.memberships import (
    PURPOSE_DONATION,
    PURPOSE_KEY,
    SUBSCRIBER_KEY,
    confirm_paying_subscriber,
    find_subscriber_for_stripe,
    from_timestamp,
    invoice_subscription_metadata,
    link_stripe_customer,
    lock_stripe_object,
    subscriber_from_payment,
    subscription_purpose,
    sync_membership_from_stripe,
)
from subscriptions.services.tokens import absolute_url

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
# Stripe's statuses of a subscription that has been paid for (past_due: a renewal failed).
PAYING_STATUSES = ("active", "trialing", "past_due")
# A drainer's lease on the events it claimed: if it dies mid-batch, they are due again
# after this long.
SAFETY_NET_DELAY = timedelta(minutes=5)


class WebhookRejected(Exception):
    """The request is not a genuine, well-formed Stripe event (answer 400)."""


@dataclass(frozen=True)
class Received:
    """A delivery accepted: stored now (`pk`), or a redelivery of a stored event."""

    stripe_id: str
    pk: int | None

    @property
    def created(self) -> bool:
        return self.pk is not None

    @cached_property
    def event(self) -> StripeEvent:
        """The stored event (read when asked: answering a delivery does not need it)."""
        return StripeEvent.objects.get(stripe_id=self.stripe_id)


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4, ... minutes between attempts, at most six hours."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 360))


# --- Receiving ---------------------------------------------------------------------------


def receive_webhook(*, payload: bytes, signature_header: str | None) -> Received:
    """Verify and store one webhook delivery. Raises WebhookRejected on bad input.

    This is the whole of the webhook's own work, so it is kept to what acceptance needs
    (measured in README, "Running in production"): the signature, one parse of the
    JSON, and one INSERT ... ON CONFLICT DO NOTHING built once per database backend,
    with the delivery's own JSON text as the payload (no model instance, no second
    serialisation). The existing row of a redelivery is read only if asked for.
    """
    try:
        stripe_client.verify_webhook(payload=payload, signature_header=signature_header)
    except stripe_client.WebhookSignatureError as exc:
        raise WebhookRejected(f"Invalid signature: {exc}") from exc
    # Verified, so it is UTF-8. Parsed as text: JSON between systems is UTF-8 without a
    # byte order mark (RFC 8259), and the text stored is then exactly the JSON parsed.
    text = payload.decode("utf-8")
    try:
        data = json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        raise WebhookRejected("Malformed JSON.") from exc
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(data):
        # Python reads "\ud800" alone; PostgreSQL's jsonb refuses it (an error every
        # time Stripe retried): not text at all, so refused here.
        raise WebhookRejected("Malformed JSON: an unpaired surrogate escape.")
    if "\\u0000" in text:
        # PostgreSQL's jsonb cannot hold U+0000; a signed event with one in a free-text
        # field (a customer's name, say) is stored without it rather than refused forever.
        data = _without_nul(data)
        text = json.dumps(data)
    if (
        not isinstance(data, dict)
        or data.get("object") != "event"
        or not isinstance(data.get("id"), str)
        or not isinstance(data.get("type"), str)
        or not isinstance(data.get("data"), dict)
        or not isinstance(data.get("created"), int)
    ):
        raise WebhookRejected("Not a Stripe event.")
    now = timezone.now()
    try:
        created = from_timestamp(data["created"]) or now
    except (OverflowError, OSError, ValueError) as exc:
        raise WebhookRejected("Not a Stripe event: its creation time is out of range.") from exc
    stripe_id = data["id"][:100]
    pk = _insert_unless_known(
        {
            "stripe_id": stripe_id,
            "type": data["type"][:100],
            "created": created,
            "livemode": bool(data.get("livemode")),
            "payload": text,
            "received_at": now,
            "next_attempt_at": now,
            "object_id": StripeEvent.object_id_in(data),
        }
    )
    return Received(stripe_id=stripe_id, pk=pk)


def _not_json(constant: str) -> Any:
    """NaN and Infinity: Python's extension, not JSON, and refused by PostgreSQL's jsonb."""
    raise ValueError(f"{constant} is not JSON")


def _has_lone_surrogate(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


# What receive_webhook gives for each event; every other column takes its default.
_GIVEN = frozenset(
    {
        "stripe_id",
        "type",
        "created",
        "livemode",
        "payload",
        "received_at",
        "next_attempt_at",
        "object_id",
    }
)


@dataclass(frozen=True)
class _Insert:
    """The INSERT of one event on one database backend, and its constant values."""

    sql: str
    columns: tuple[str, ...]  # the attnames given per event, in the statement's order
    constants: dict[str, Any]  # the other columns' defaults, prepared for the backend
    datetimes: frozenset[str]


@cache
def _insert_statement(vendor: str) -> _Insert:
    """INSERT ... ON CONFLICT (stripe_id) DO NOTHING RETURNING id, from the model's fields."""
    meta = StripeEvent._meta
    quote = connection.ops.quote_name
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    given = [f for f in fields if f.attname in _GIVEN]
    constants = {}
    for field in fields:
        if field.attname in _GIVEN:
            continue
        if field.has_default() and callable(field.default):
            raise ImproperlyConfigured(
                f"StripeEvent.{field.attname} has a callable default: give it in receive_webhook."
            )
        constants[field.attname] = field.get_db_prep_save(field.get_default(), connection)
    ordered = given + [f for f in fields if f.attname not in _GIVEN]
    columns = ", ".join(quote(str(f.column)) for f in ordered)
    placeholders = ", ".join(["%s"] * len(ordered))
    # Only our own table and column names are interpolated; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({quote('stripe_id')}) DO NOTHING RETURNING {quote('id')}"
    )
    return _Insert(
        sql=sql,
        columns=tuple(f.attname for f in given),
        constants=constants,
        datetimes=frozenset(f.attname for f in given if f.get_internal_type() == "DateTimeField"),
    )


def _insert_unless_known(values: dict[str, Any]) -> int | None:
    """Insert the event unless its stripe_id is stored: the new row's id, or None.

    One statement, so in autocommit one round trip and one commit; and a redelivered
    event raises nothing, so it cannot break a surrounding transaction. `payload` is
    JSON text, stored as it is.
    """
    statement = _insert_statement(connection.vendor)
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        adapt(values[name]) if name in statement.datetimes else values[name]
        for name in statement.columns
    ]
    params.extend(statement.constants.values())
    row = _execute_as_its_own_health_check(statement.sql, params)
    return int(row[0]) if row else None


def _execute_as_its_own_health_check(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    """Run one idempotent statement and fetch its row, without a health check first.

    With CONN_HEALTH_CHECKS, a connection kept from an earlier request is checked with a
    `SELECT 1` before the request's first query: a round trip (and work for PostgreSQL)
    as large as the rest of a delivery's. Here the statement is the check: if it fails
    and the connection turns out to be unusable (the database restarted or closed it),
    it is closed and the statement runs once more on a fresh connection, which is what
    the check would have done first. Safe only because the statement is idempotent (an
    INSERT that committed before the connection broke is found by its ON CONFLICT).
    Inside a transaction nothing changes: the usual check runs.
    """
    # health_check_enabled/done: Django's own flags (since 4.1), not in django-stubs.
    skip_check = (
        connection.connection is not None
        and connection.health_check_enabled  # type: ignore[attr-defined]
        and not connection.health_check_done  # type: ignore[attr-defined]
        and not connection.in_atomic_block
    )
    if skip_check:
        connection.health_check_done = True  # type: ignore[attr-defined]
    try:
        return _fetch_one(sql, params)
    except (InterfaceError, OperationalError):
        if not skip_check or connection.is_usable():
            raise
        connection.close()
        return _fetch_one(sql, params)


def _fetch_one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


# --- Processing --------------------------------------------------------------------------


def process_event(*, event_id: int) -> bool:
    """Apply one stored event, once. Returns True when it is (now or already) processed.

    Safe to call concurrently and repeatedly: the event row is locked and its
    `processed_at` checked inside the same transaction that applies it.
    """
    try:
        with transaction.atomic():
            event = StripeEvent.objects.select_for_update().filter(pk=event_id).first()
            if event is None:
                return False
            if event.processed_at is not None:
                return True
            handler = HANDLERS.get(event.type)
            try:
                if handler is not None:
                    # A savepoint: a failure undoes the handler's writes, not the lock.
                    with transaction.atomic():
                        handler(event)
            except Exception as exc:
                logger.exception("Processing Stripe event %s failed", event_id)
                # Recorded before the row lock is released, so a worker waiting on this
                # event applies it after the failure is on record, never before.
                _note_failure(event=event, exc=exc)
                return False
            now = timezone.now()
            event.processed_at = now
            event.attempts += 1
            event.error = ""
            event.next_attempt_at = None
            event.save(
                update_fields=[
                    "processed_at",
                    "attempts",
                    "error",
                    "next_attempt_at",
                    "needs_attention",
                ]
            )
            return True
    except Exception as exc:
        # The database itself failed (a lost connection, say): record it when it can.
        logger.exception("Processing Stripe event %s failed", event_id)
        _record_failure(event_id=event_id, exc=exc)
        return False


def _record_failure(*, event_id: int, exc: BaseException) -> None:
    with transaction.atomic():
        event = StripeEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.processed_at is not None:
            return
        _note_failure(event=event, exc=exc)


def _note_failure(*, event: StripeEvent, exc: BaseException) -> None:
    """Count a failed attempt on the locked event, with its error and next try."""
    event.attempts += 1
    event.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]
    event.next_attempt_at = (
        timezone.now() + retry_delay(event.attempts) if event.attempts < MAX_ATTEMPTS else None
    )
    event.save(update_fields=["attempts", "error", "next_attempt_at"])


def claim_due_events(*, now: datetime | None = None, limit: int = 100) -> list[int]:
    """Unprocessed events whose next attempt is due (failed, or never picked up).

    Their next attempt moves on by SAFETY_NET_DELAY, so the next sweep does not queue
    them again while these attempts run.
    """
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            StripeEvent.objects.select_for_update(skip_locked=True)
            .filter(processed_at__isnull=True, next_attempt_at__lte=now, attempts__lt=MAX_ATTEMPTS)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        StripeEvent.objects.filter(pk__in=ids).update(next_attempt_at=now + SAFETY_NET_DELAY)
    return ids


def schedule_retry_now(*, event: StripeEvent) -> None:
    """An editor asked to retry: give the event fresh attempts, due at once."""
    StripeEvent.objects.filter(pk=event.pk, processed_at__isnull=True).update(
        attempts=0, next_attempt_at=timezone.now()
    )


# --- What each event type does ---------------------------------------------------------


def _object(event: StripeEvent) -> dict[str, Any]:
    return dict(event.payload.get("data", {}).get("object") or {})


def _current_subscription(subscription_id: str, event: StripeEvent) -> tuple[dict, datetime]:
    """The subscription as Stripe has it now, or the event's snapshot if Stripe is off."""
    if stripe_client.is_configured():
        return stripe_client.retrieve_subscription(subscription_id), timezone.now()
    snapshot = _object(event)
    if snapshot.get("object") != "subscription":
        raise stripe_client.StripeError("STRIPE_SECRET_KEY is not set; cannot re-read Stripe.")
    return snapshot, event.created


def _apply_subscription(
    *,
    subscription_id: str,
    event: StripeEvent,
    hint_subscriber: Subscriber | None = None,
) -> tuple[dict[str, Any], Membership | None]:
    """Mirror the subscription as Stripe has it now: the subscription, and its membership
    (None for monthly support, which is a donation, or while nobody has paid for it)."""
    lock_stripe_object(subscription_id)
    subscription, observed_at = _current_subscription(subscription_id, event)
    if subscription_purpose(subscription) == PURPOSE_DONATION:
        return subscription, None
    paying = subscription.get("status") in PAYING_STATUSES
    metadata = subscription.get("metadata") or {}
    existing = (
        Membership.objects.filter(stripe_subscription_id=subscription_id)
        .select_related("subscriber")
        .first()
    )
    subscriber = (
        existing.subscriber
        if existing
        else hint_subscriber
        or find_subscriber_for_stripe(
            subscriber_id=metadata.get(SUBSCRIBER_KEY), customer_id=subscription.get("customer")
        )
    )
    if subscriber is None:
        # Made in Stripe's dashboard or through a Payment Link: match by the customer's email.
        customer = stripe_client.retrieve_customer(str(subscription["customer"]))
        if not customer.get("email"):
            raise stripe_client.StripeError(
                f"Customer {subscription['customer']} has no email; cannot match a reader."
            )
        subscriber = find_subscriber_for_stripe(email=customer["email"])
        if subscriber is None and not paying:
            # Unpaid (a first payment that failed, say): no reader is made for an address
            # nobody confirmed; the event that reports the payment makes them.
            return subscription, None
        subscriber = subscriber or subscriber_from_payment(
            email=customer["email"], name=customer.get("name") or "", source="stripe"
        )
    link_stripe_customer(subscriber=subscriber, customer_id=subscription.get("customer"))
    if paying:
        confirm_paying_subscriber(subscriber=subscriber, source="stripe")
    membership = sync_membership_from_stripe(
        subscription=subscription, subscriber=subscriber, observed_at=observed_at
    )
    return subscription, membership


def handle_checkout_completed(event: StripeEvent) -> None:
    snapshot = _object(event)
    session_id = str(snapshot["id"])
    lock_stripe_object(session_id)
    session = (
        stripe_client.retrieve_checkout_session(session_id)
        if stripe_client.is_configured()
        else snapshot
    )
    if gifts.is_gift_session(session):
        gifts.record_paid_gift(session=session)
        return
    if donations.is_donation_session(session):
        donations.record_paid_donation(session=session)
        return
    if session.get("mode") != "subscription" or not session.get("subscription"):
        return
    if session.get("status") != "complete":
        return
    metadata = session.get("metadata") or {}
    details = session.get("customer_details") or {}
    subscriber = find_subscriber_for_stripe(
        # Our own metadata, not client_reference_id: a Payment Link takes that from its
        # URL (?client_reference_id=...), so a payer could name any reader and have
        # their own Stripe customer, card and receipts tied to that reader's account.
        subscriber_id=metadata.get(SUBSCRIBER_KEY),
        customer_id=session.get("customer"),
        email=details.get("email") or session.get("customer_email"),
    )
    _apply_subscription(
        subscription_id=str(session["subscription"]), event=event, hint_subscriber=subscriber
    )
    # The membership carries the offer now: the place held for this checkout is used.
    offers.release_reservation(session_id=session_id)


def handle_checkout_expired(event: StripeEvent) -> None:
    # Expired is final for a Checkout Session: it can no longer be paid.
    donations.forget_abandoned_donation(session_id=str(_object(event)["id"]))
    gifts.forget_abandoned_gift(session_id=str(_object(event)["id"]))
    offers.release_reservation(session_id=str(_object(event)["id"]))


def handle_subscription_changed(event: StripeEvent) -> None:
    _apply_subscription(subscription_id=str(_object(event)["id"]), event=event)


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    # Since API version 2025-03-31 an invoice names its subscription under `parent`.
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    subscription = details.get("subscription") or invoice.get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    return str(subscription) if subscription else None


def _invoice_purpose(invoice: dict[str, Any]) -> str:
    return invoice_subscription_metadata(invoice).get(PURPOSE_KEY, "")


def handle_invoice_paid(event: StripeEvent) -> None:
    invoice = _object(event)
    subscription_id = invoice_subscription_id(invoice)
    if not subscription_id:
        return
    if _invoice_purpose(invoice) == PURPOSE_DONATION:
        donations.record_recurring_donation_payment(
            invoice=invoice, subscription_id=subscription_id
        )
        return
    subscription, _membership = _apply_subscription(subscription_id=subscription_id, event=event)
    if subscription_purpose(subscription) == PURPOSE_DONATION:
        # The subscription says it is a donation even if the invoice did not.
        donations.record_recurring_donation_payment(
            invoice=invoice, subscription_id=subscription_id
        )


def handle_invoice_payment_failed(event: StripeEvent) -> None:
    invoice = _object(event)
    subscription_id = invoice_subscription_id(invoice)
    if not subscription_id or _invoice_purpose(invoice) == PURPOSE_DONATION:
        return
    _subscription, membership = _apply_subscription(subscription_id=subscription_id, event=event)
    if membership is None:
        return
    if membership.status in (Membership.Status.ACTIVE, Membership.Status.TRIALING):
        return  # Paid since (this event arrived late): nothing for the reader to fix.
    subscriber = membership.subscriber
    if subscriber.status in (Subscriber.Status.BOUNCED, Subscriber.Status.COMPLAINED):
        return
    send_email_on_commit(
        to=subscriber.email,
        subject="Your payment did not go through",
        template="payment_failed",
        context={
            "subscriber": subscriber,
            "membership": membership,
            "amount": donations.format_amount(
                int(invoice.get("amount_due") or 0), str(invoice.get("currency") or "usd")
            ),
            "billing_url": absolute_url("/account/billing/"),
            "invoice_url": invoice.get("hosted_invoice_url") or "",
        },
    )


def handle_trial_will_end(event: StripeEvent) -> None:
    """Three days before a trial ends: remind the reader of the first charge, once."""
    subscription, membership = _apply_subscription(
        subscription_id=str(_object(event)["id"]), event=event
    )
    if membership is None:
        return
    trials.send_trial_reminder(membership=membership, subscription=subscription)


def handle_charge_refunded(event: StripeEvent) -> None:
    charge = _object(event)
    donations.mark_donation_refunded(charge=charge)
    gifts.mark_gift_refunded(charge=charge)


def handle_promotion_code_updated(event: StripeEvent) -> None:
    snapshot = _object(event)
    code = (
        stripe_client.retrieve_promotion_code(str(snapshot["id"]))
        if stripe_client.is_configured()
        else snapshot
    )
    offers.apply_promotion_code_update(promotion_code=code)


def handle_dispute_created(event: StripeEvent) -> None:
    dispute = _object(event)
    donation = donations.mark_donation_disputed(dispute=dispute)
    event.needs_attention = True
    editors = (
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    amount = donations.format_amount(
        int(dispute.get("amount") or 0), str(dispute.get("currency") or "usd")
    )
    for email in editors:
        send_email_on_commit(
            to=email,
            subject=f"A payment of {amount} is disputed",
            template="dispute_alert",
            context={
                "dispute": dispute,
                "amount": amount,
                "donation": donation,
                "admin_url": absolute_url(f"/admin/subscriptions/stripeevent/{event.pk}/change/"),
            },
        )


HANDLERS: dict[str, Callable[[StripeEvent], None]] = {
    "checkout.session.completed": handle_checkout_completed,
    "checkout.session.async_payment_succeeded": handle_checkout_completed,
    "checkout.session.expired": handle_checkout_expired,
    "customer.subscription.created": handle_subscription_changed,
    "customer.subscription.updated": handle_subscription_changed,
    "customer.subscription.deleted": handle_subscription_changed,
    "customer.subscription.paused": handle_subscription_changed,
    "customer.subscription.resumed": handle_subscription_changed,
    "invoice.paid": handle_invoice_paid,
    "invoice.payment_failed": handle_invoice_payment_failed,
    "customer.subscription.trial_will_end": handle_trial_will_end,
    "charge.refunded": handle_charge_refunded,
    "promotion_code.updated": handle_promotion_code_updated,
    "charge.dispute.created": handle_dispute_created,
}
