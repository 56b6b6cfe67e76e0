"""The revenue summary editors see in the admin: members, MRR, donations, churn."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, F, Sum
from django.utils import timezone

from subscriptions.models import Donation, Membership, Plan
from subscriptions.services.access import access_granting_memberships, paid_subscribers


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


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def revenue_summary(*, now: datetime | None = None) -> RevenueSummary:
    now = now or timezone.now()
    start = month_start(now)
    granting = access_granting_memberships(now=now)
    paying = granting.filter(kind=Membership.Kind.STRIPE).exclude(status=Membership.Status.TRIALING)

    mrr: dict[str, int] = defaultdict(int)
    for membership in paying.select_related("plan").filter(plan__isnull=False):
        plan = membership.plan
        assert plan is not None
        monthly = plan.amount if plan.interval == Plan.Interval.MONTH else plan.amount / 12
        mrr[plan.currency.lower()] += round(monthly)

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
    return RevenueSummary(
        paid_members=paid_subscribers(now=now).count(),
        paying_members=paying.values("subscriber").distinct().count(),
        complimentary_members=granting.exclude(kind=Membership.Kind.STRIPE)
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
