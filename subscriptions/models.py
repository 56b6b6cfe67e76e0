"""Readers and money: subscribers, plans, memberships, donations, Stripe events."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class Subscriber(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending confirmation"
        ACTIVE = "active", "Active"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"

    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    consent_at = models.DateTimeField(null=True, blank=True)
    consent_ip = models.GenericIPAddressField(null=True, blank=True)
    consent_source = models.CharField(max_length=500, blank=True)
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    status_reason = models.CharField(
        max_length=200, blank=True, default="", help_text="Why the status last changed."
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="subscriber",
    )
    stripe_customer_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    imported_from = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Addresses are stored in their one normal form
            # (subscriptions.services.addresses.normalize_email), so plain equality is
            # identity; a case-insensitive index would fold look-alikes together.
            models.UniqueConstraint(fields=["email"], name="subscriber_email_unique"),
            # Sending skips every status but active; an unknown one would be a silent gap.
            models.CheckConstraint(
                condition=Q(
                    status__in=["pending", "active", "unsubscribed", "bounced", "complained"]
                ),
                name="subscriber_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return self.email


class Suppression(models.Model):
    """An address that must never be emailed again, kept only as a hash."""

    email_hash = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=50)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.reason}: {self.email_hash[:12]}…"


class Plan(models.Model):
    class Interval(models.TextChoices):
        MONTH = "month", "Monthly"
        YEAR = "year", "Yearly"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    interval = models.CharField(max_length=10, choices=Interval.choices)
    amount = models.PositiveIntegerField(help_text="In the currency's smallest unit (cents).")
    currency = models.CharField(max_length=3, default="usd")
    stripe_product_id = models.CharField(max_length=100, blank=True)
    stripe_price_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    active = models.BooleanField(
        default=True, help_text="Offered on /upgrade/ (needs a Stripe price)."
    )
    position = models.PositiveIntegerField(default=0)
    imported_from = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Made from a Stripe price that readers already paid elsewhere (e.g. "
        "substack), so their subscriptions count as paid here. Not offered until made "
        "active; `sync_stripe_plans` leaves its price alone.",
    )

    class Meta:
        ordering = ["position", "amount"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="plan_amount_positive")
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A paid membership: mirrored from a Stripe subscription, or comp/gift with expiry."""

    class Kind(models.TextChoices):
        STRIPE = "stripe", "Stripe subscription"
        COMP = "comp", "Complimentary"
        GIFT = "gift", "Gift"

    class Status(models.TextChoices):
        # Stripe's subscription statuses, plus "expired" for comp and gift memberships.
        INCOMPLETE = "incomplete", "Incomplete"
        INCOMPLETE_EXPIRED = "incomplete_expired", "Incomplete, expired"
        TRIALING = "trialing", "Trialing"
        ACTIVE = "active", "Active"
        PAST_DUE = "past_due", "Past due"
        CANCELED = "canceled", "Canceled"
        UNPAID = "unpaid", "Unpaid"
        PAUSED = "paused", "Paused"
        EXPIRED = "expired", "Expired"

    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="memberships")
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.STRIPE)
    stripe_subscription_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    status = models.CharField(max_length=30, choices=Status.choices, default=Status.INCOMPLETE)
    current_period_start = models.DateTimeField(
        null=True, blank=True, help_text="Start of the period being billed; grace runs from it."
    )
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="For complimentary and gift memberships."
    )
    reminder_sent_at = models.DateTimeField(null=True, blank=True)
    imported_from = models.CharField(
        max_length=100, blank=True, default="", help_text="e.g. substack, for imported members."
    )
    canceled_at = models.DateTimeField(
        null=True, blank=True, help_text="When the membership ended (for churn figures)."
    )
    stripe_synced_at = models.DateTimeField(
        null=True, blank=True, help_text="Creation time of the newest Stripe state applied."
    )
    stripe_price_id = models.CharField(
        max_length=100, blank=True, default="", help_text="The Stripe price it bills."
    )
    foreign_price = models.BooleanField(
        default=False,
        help_text="Its Stripe price belongs to none of our plans: recorded, but it grants "
        "no paid access. Move the subscription to a plan's price in Stripe, or grant a "
        "complimentary membership.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="stripe") | Q(stripe_subscription_id__isnull=False),
                name="membership_stripe_has_subscription_id",
                violation_error_message=(
                    "A Stripe membership comes from Stripe's webhook. To grant one by hand, "
                    "choose Complimentary or Gift."
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} membership of {self.subscriber}"


class Donation(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        REFUNDED = "refunded", "Refunded"
        DISPUTED = "disputed", "Disputed"

    amount = models.PositiveIntegerField(help_text="In the currency's smallest unit (cents).")
    currency = models.CharField(max_length=3, default="usd")
    email = models.EmailField(blank=True)
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.SET_NULL, related_name="donations"
    )
    message = models.TextField(blank=True)
    recurring = models.BooleanField(default=False, help_text="Monthly support rather than once.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    amount_refunded = models.PositiveIntegerField(
        default=0, help_text="Refunded so far, in cents; a partial refund leaves it paid."
    )
    stripe_checkout_session_id = models.CharField(
        max_length=200, null=True, blank=True, unique=True
    )
    stripe_payment_intent_id = models.CharField(max_length=200, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True, db_index=True)
    stripe_invoice_id = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="The invoice paid, for monthly support (one donation per invoice).",
    )
    thanked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="donation_amount_positive"),
            models.CheckConstraint(
                condition=Q(amount_refunded__lte=models.F("amount")),
                name="donation_refund_within_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount / 100:.2f} {self.currency.upper()} from {self.email or 'anonymous'}"


class StripeEvent(models.Model):
    """Every webhook event received: the raw log and the idempotency ledger."""

    stripe_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    created = models.DateTimeField(help_text="When Stripe created the event.")
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="When an unprocessed event is retried."
    )
    needs_attention = models.BooleanField(
        default=False, help_text="Flagged for editors, e.g. a payment dispute."
    )
    object_id = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="The Stripe object the event is about; its events are applied in order.",
    )

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_id}"

    @staticmethod
    def object_id_in(payload: Any) -> str:
        """The Stripe object an event is about (`data.object.id`), or "" when it names none."""
        try:
            value = payload["data"]["object"]["id"]
        except (KeyError, TypeError):
            return ""
        return value[:255] if isinstance(value, str) else ""
