"""The revenue summary editors see in the admin: members, MRR, donations, churn."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, F, Sum
from django.utils import timezone

from subscriptions.models import Donation, Gift, Membership, Plan
from subscriptions.services.access import (
    access_granting_memberships,
    paid_for_stripe_memberships,
    paid_subscribers,
)
from subscriptions.services.offers import offer_figures


@dataclass(frozen=True)
class RevenueSummary:
    paid_members: int
    paying_members: int
    complimentary_members: int
    mrr: dict[str, int]  # currency -> smallest unit per month
    donations_this_month: dict[str, int]
    donation_count_this_month: int
    churned_this_month: int
    churn_rate_this_month: float | None
    month_start: datetime
    trials_active: int = 0
    trials_started_this_month: int = 0
    trials_converted_this_month: int = 0
    trials_lapsed_this_month: int = 0
    offers: list[dict] = field(default_factory=list)
    gifts_sold_this_month: int = 0
    gift_revenue_this_month: dict[str, int] = field(default_factory=dict)
    gifts_redeemed_this_month: int = 0
    gift_members: int = 0
    founding_members: int = 0
    founding_revenue_yearly: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    group_seats: int = 0
    group_seats_taken: int = 0


def monthly_amount(membership: Membership, *, now: datetime) -> float:
    """What a Stripe membership brings in a month: its price times its seats, less a
    discount still in effect, a yearly price spread over twelve months."""
    plan = membership.plan
    assert plan is not None
    return monthly_amount_of(
        plan=plan,
        unit_amount=membership.unit_amount,
        quantity=membership.quantity,
        discount_percent_off=membership.discount_percent_off,
        discount_amount_off=membership.discount_amount_off,
        discount_ends_at=membership.discount_ends_at,
        now=now,
    )


def monthly_amount_of(
    *,
    plan: Plan,
    unit_amount: int | None,
    quantity: int | None,
    discount_percent_off: float | None,
    discount_amount_off: int | None,
    discount_ends_at: datetime | None,
    now: datetime,
) -> float:
    """`monthly_amount` from a membership's values, for figures read without its row
    as a model (`subscriptions.services.growth` reads thousands at once)."""
    unit = unit_amount if unit_amount is not None else plan.amount
    amount = float(unit * (quantity or 1))
    if discount_ends_at is None or discount_ends_at > now:
        if discount_percent_off:
            amount -= amount * discount_percent_off / 100
        elif discount_amount_off:
            amount = max(amount - discount_amount_off, 0.0)
    return amount if plan.interval == Plan.Interval.MONTH else amount / 12


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def revenue_summary(*, now: datetime | None = None) -> RevenueSummary:
    now = now or timezone.now()
    start = month_start(now)
    granting = access_granting_memberships(now=now)
    paying = granting.filter(kind=Membership.Kind.STRIPE).exclude(status=Membership.Status.TRIALING)

    mrr: dict[str, int] = defaultdict(int)
    billed = paid_for_stripe_memberships(now=now).exclude(status=Membership.Status.TRIALING)
    founding_yearly: dict[str, int] = defaultdict(int)
    founding = 0
    for membership in billed.select_related("plan").filter(plan__isnull=False):
        plan = membership.plan
        assert plan is not None
        mrr[plan.currency.lower()] += round(monthly_amount(membership, now=now))
        if plan.kind == Plan.Kind.FOUNDING:
            founding += 1
            founding_yearly[plan.currency.lower()] += round(
                monthly_amount(membership, now=now) * 12
            )

    donations: dict[str, int] = {}
    rows = (
        Donation.objects.filter(status=Donation.Status.PAID, created_at__gte=start)
        .values("currency")
        .annotate(total=Sum(F("amount") - F("amount_refunded")), count=Count("pk"))
    )
    count = 0
    for row in rows:
        donations[row["currency"].lower()] = int(row["total"] or 0)
        count += int(row["count"])

    stripe_memberships = Membership.objects.filter(kind=Membership.Kind.STRIPE)
    churned = stripe_memberships.filter(canceled_at__gte=start, canceled_at__lte=now).count()
    # Members at the start of the month: those created before it and not ended before it.
    at_start = (
        stripe_memberships.filter(created_at__lt=start)
        .exclude(canceled_at__lt=start)
        .exclude(status__in=[Membership.Status.INCOMPLETE, Membership.Status.INCOMPLETE_EXPIRED])
        .count()
    )
    trial_memberships = stripe_memberships.filter(trial_end__isnull=False)
    ended_trials = trial_memberships.filter(trial_end__gte=start, trial_end__lte=now)
    gifts = Gift.objects.exclude(status=Gift.Status.PENDING)
    sold = gifts.filter(paid_at__gte=start, paid_at__lte=now)
    gift_revenue: dict[str, int] = {}
    for gift_row in (
        sold.exclude(status=Gift.Status.REFUNDED).values("currency").annotate(total=Sum("amount"))
    ):
        gift_revenue[gift_row["currency"].lower()] = int(gift_row["total"] or 0)
    groups = Membership.objects.filter(
        kind=Membership.Kind.STRIPE,
        plan__kind=Plan.Kind.GROUP,
        status__in=[
            Membership.Status.ACTIVE,
            Membership.Status.TRIALING,
            Membership.Status.PAST_DUE,
        ],
    )
    return RevenueSummary(
        trials_active=granting.filter(status=Membership.Status.TRIALING).count(),
        trials_started_this_month=trial_memberships.filter(
            created_at__gte=start, created_at__lte=now
        ).count(),
        # The trial ended this month into a paid subscription, or into nothing.
        trials_converted_this_month=ended_trials.filter(status=Membership.Status.ACTIVE).count(),
        trials_lapsed_this_month=ended_trials.filter(
            status__in=[
                Membership.Status.CANCELED,
                Membership.Status.UNPAID,
                Membership.Status.INCOMPLETE_EXPIRED,
            ]
        ).count(),
        offers=offer_figures(),
        gifts_sold_this_month=sold.count(),
        gift_revenue_this_month=gift_revenue,
        gifts_redeemed_this_month=gifts.filter(
            redeemed_at__gte=start, redeemed_at__lte=now
        ).count(),
        gift_members=granting.filter(kind=Membership.Kind.GIFT)
        .values("subscriber")
        .distinct()
        .count(),
        founding_members=founding,
        founding_revenue_yearly=dict(founding_yearly),
        groups=groups.count(),
        group_seats=groups.aggregate(total=Sum("quantity"))["total"] or 0,
        group_seats_taken=granting.filter(kind=Membership.Kind.GROUP).count(),
        paid_members=paid_subscribers(now=now).count(),
        paying_members=paying.values("subscriber").distinct().count(),
        complimentary_members=granting.filter(kind__in=[Membership.Kind.COMP, Membership.Kind.GIFT])
        .values("subscriber")
        .distinct()
        .count(),
        mrr=dict(mrr),
        donations_this_month=donations,
        donation_count_this_month=count,
        churned_this_month=churned,
        churn_rate_this_month=(churned / at_start) if at_start else None,
        month_start=start,
    )
