"""Readers and money: subscribers, plans, memberships, donations, Stripe events."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class AccessQuerySet(models.QuerySet):
    """Bulk writes to rows the paid rule reads renew every reader's cached record
    (`subscriptions.services.reader_cache`); saves and deletes of one row do so through
    `subscriptions.signals`. `relevant` names the fields whose `update()` can change a
    reader's access (None: every field)."""

    relevant: frozenset[str] | None = None

    def update(self, **kwargs: Any) -> int:
        count = super().update(**kwargs)
        if self.relevant is None or self.relevant & kwargs.keys():
            _access_changed()
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        deleted = super().delete()
        _access_changed()
        return deleted

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(*args, **kwargs)
        _access_changed()
        return created

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        count = super().bulk_update(*args, **kwargs)
        _access_changed()
        return count


class SubscriberQuerySet(AccessQuerySet):
    # The paid rule reads a subscriber only through its link to an account.
    relevant = frozenset({"user", "user_id"})


def _access_changed() -> None:
    from subscriptions import reader_cache

    reader_cache.access_changed()


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
    source_article_id = models.PositiveIntegerField(
        null=True,
        blank=True,
        db_index=True,
        help_text="The article the reader signed up from (an id the content layer resolves).",
    )
    # db_default as well: processes of the previous release, still running while the
    # migration is applied, insert subscribers without this column.
    tracking_opt_out = models.BooleanField(
        "no open and click counting",
        default=False,
        db_default=False,
        help_text="The reader's emails carry no open pixel and no redirected links.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SubscriberQuerySet.as_manager()

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

    class Kind(models.TextChoices):
        INDIVIDUAL = "individual", "Individual"
        FOUNDING = "founding", "Founding member (pay what you want above the amount)"
        GROUP = "group", "Group (the amount is per seat)"

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
    kind = models.CharField(
        max_length=20,
        choices=Kind.choices,
        default=Kind.INDIVIDUAL,
        help_text="Founding: a yearly plan whose amount is the least a founding member pays. "
        "Group: bought with a number of seats, one reader per seat.",
    )
    trial_days = models.PositiveIntegerField(
        default=0, help_text="Days of free trial before the first charge (0 for none)."
    )
    imported_from = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Made from a Stripe price that readers already paid elsewhere (e.g. "
        "substack), so their subscriptions count as paid here. Not offered until made "
        "active; `sync_stripe_plans` leaves its price alone.",
    )

    objects = AccessQuerySet.as_manager()

    class Meta:
        ordering = ["position", "amount"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="plan_amount_positive"),
            models.CheckConstraint(
                condition=Q(kind__in=["individual", "founding", "group"]), name="plan_kind_valid"
            ),
            models.CheckConstraint(
                condition=~Q(kind="founding") | Q(interval="year"),
                name="plan_founding_is_yearly",
                violation_error_message="A founding plan is yearly.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A paid membership: mirrored from a Stripe subscription, or comp/gift with expiry."""

    class Kind(models.TextChoices):
        STRIPE = "stripe", "Stripe subscription"
        COMP = "comp", "Complimentary"
        GIFT = "gift", "Gift"
        GROUP = "group", "Group seat"

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
    starts_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="For a gift to a reader who is already paid: it starts when their "
        "current period ends. Empty: from its creation.",
    )
    group = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="seats",
        help_text="For a group seat: the group's Stripe membership, whose state it follows.",
    )
    quantity = models.PositiveIntegerField(
        default=1, help_text="Seats bought (group plans); mirrored from Stripe."
    )
    unit_amount = models.PositiveIntegerField(
        null=True, blank=True, help_text="The Stripe price's amount per seat, in cents."
    )
    offer = models.ForeignKey(
        "Offer", null=True, blank=True, on_delete=models.SET_NULL, related_name="memberships"
    )
    discount_percent_off = models.FloatField(null=True, blank=True)
    discount_amount_off = models.PositiveIntegerField(null=True, blank=True)
    discount_ends_at = models.DateTimeField(
        null=True, blank=True, help_text="When a repeating discount stops (empty: forever)."
    )
    trial_end = models.DateTimeField(
        null=True, blank=True, help_text="When the free trial ends (or ended)."
    )
    trial_reminder_sent_at = models.DateTimeField(null=True, blank=True)
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
    source_article_id = models.PositiveIntegerField(
        null=True,
        blank=True,
        db_index=True,
        help_text="The article the reader upgraded from (an id the content layer resolves).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AccessQuerySet.as_manager()

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
            models.CheckConstraint(
                condition=~Q(kind="group") | Q(group__isnull=False),
                name="membership_group_seat_has_group",
            ),
            models.UniqueConstraint(
                fields=["group", "subscriber"],
                condition=Q(kind="group", status="active"),
                name="membership_one_live_seat_per_reader",
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
    paid_at = models.DateTimeField(
        null=True, blank=True, help_text="When Stripe said it was paid (for the figures by day)."
    )
    source_article_id = models.PositiveIntegerField(
        null=True,
        blank=True,
        db_index=True,
        help_text="The article the donor came from (an id the content layer resolves).",
    )
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


class Offer(models.Model):
    """A discount or an extended trial on a shareable link (/upgrade/?offer=CODE).

    It becomes a Stripe coupon and promotion code (percent or amount off) when saved in
    the admin; a trial offer needs neither, Checkout starts the subscription in trial.
    """

    class Kind(models.TextChoices):
        PERCENT = "percent", "Percent off"
        AMOUNT = "amount", "Amount off"
        TRIAL = "trial", "Free trial"

    class Duration(models.TextChoices):
        ONCE = "once", "First payment"
        REPEATING = "repeating", "A number of months"
        FOREVER = "forever", "Forever"

    code = models.CharField(
        max_length=40,
        unique=True,
        help_text="Letters, digits and dashes; the link is /upgrade/?offer=CODE.",
    )
    name = models.CharField(max_length=200, help_text="Shown to readers, e.g. 'Spring offer'.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PERCENT)
    percent_off = models.PositiveSmallIntegerField(null=True, blank=True)
    amount_off = models.PositiveIntegerField(
        null=True, blank=True, help_text="In the plans' currency's smallest unit (cents)."
    )
    currency = models.CharField(max_length=3, default="usd")
    duration = models.CharField(max_length=10, choices=Duration.choices, default=Duration.ONCE)
    duration_in_months = models.PositiveSmallIntegerField(null=True, blank=True)
    trial_days = models.PositiveSmallIntegerField(null=True, blank=True)
    plan = models.ForeignKey(
        Plan,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        help_text="Only this plan (empty: any individual plan; a founding plan only if named).",
    )
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Not redeemable after.")
    max_redemptions = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)
    stripe_coupon_id = models.CharField(max_length=100, blank=True, default="")
    stripe_promotion_code_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind="percent", percent_off__gte=1, percent_off__lte=100)
                    | Q(kind="amount", amount_off__gt=0)
                    | Q(kind="trial", trial_days__gte=1)
                ),
                name="offer_has_its_value",
                violation_error_message="Give the percent, the amount or the trial's days.",
            ),
            models.CheckConstraint(
                condition=~Q(duration="repeating") | Q(duration_in_months__gte=1),
                name="offer_repeating_has_months",
                violation_error_message="Say for how many months the discount repeats.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class OfferReservation(models.Model):
    """A place an offer holds for a Checkout Session that was started with it.

    Started checkouts count against the offer's cap until Stripe says the session
    completed (the membership counts then) or expired, so a capped trial offer, which
    has no Stripe promotion code to enforce the cap, cannot be started more times.
    """

    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="reservations")
    # Blank only between taking the place and Stripe answering with the session.
    stripe_checkout_session_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["stripe_checkout_session_id"])]

    def __str__(self) -> str:
        return f"{self.offer.code}: {self.stripe_checkout_session_id or 'starting'}"


class Gift(models.Model):
    """A gift subscription: paid once by a buyer, redeemed by the recipient."""

    class Status(models.TextChoices):
        PENDING = "pending", "Awaiting payment"
        PAID = "paid", "Paid, to be delivered"
        DELIVERED = "delivered", "Delivered"
        REDEEMED = "redeemed", "Redeemed"
        REFUNDED = "refunded", "Refunded (revoked)"

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT)
    months = models.PositiveSmallIntegerField()
    amount = models.PositiveIntegerField(help_text="Paid, in cents.")
    currency = models.CharField(max_length=3, default="usd")
    buyer_email = models.EmailField()
    buyer_name = models.CharField(max_length=200, blank=True)
    recipient_email = models.EmailField()
    recipient_name = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    deliver_on = models.DateField(
        help_text="The day the recipient is emailed (in the publication's TIME_ZONE)."
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    stripe_checkout_session_id = models.CharField(
        max_length=200, null=True, blank=True, unique=True
    )
    stripe_payment_intent_id = models.CharField(max_length=200, blank=True, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    receipt_sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    redeemed_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    membership = models.OneToOneField(
        Membership, null=True, blank=True, on_delete=models.SET_NULL, related_name="gift"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "deliver_on"])]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="gift_amount_positive"),
            models.CheckConstraint(condition=Q(months__gte=1), name="gift_months_positive"),
            # Unless its recipient erased their account, which takes the membership.
            models.CheckConstraint(
                condition=~Q(status="redeemed")
                | Q(membership__isnull=False)
                | Q(recipient_email=""),
                name="gift_redeemed_has_membership",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.months} months of {self.plan} for {self.recipient_email}"


class GroupInvite(models.Model):
    """A seat of a group subscription offered to one address."""

    group = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="invites")
    email = models.EmailField()
    invited_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    seat = models.OneToOneField(
        Membership, null=True, blank=True, on_delete=models.SET_NULL, related_name="invite"
    )

    class Meta:
        ordering = ["invited_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "email"],
                condition=Q(removed_at__isnull=True),
                name="group_invite_one_open_per_address",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} in group {self.group_id}"
