"""Growth and money over time, for the admin's charts: the list, paid members, MRR,
donations, and what each source (an article) converted.

Days are the publication's (the `TIME_ZONE` setting): a reader who confirms at 23:30 in
London on 1 March counts on 1 March whatever UTC says. Counts by day are aggregate
queries (`GROUP BY` the day, truncated by the database in that zone, on PostgreSQL and
SQLite alike) over the timestamps each row keeps:

- on the list: from `confirmed_at` (or `created_at` for a reader made active without a
  confirmation: an import, the admin) until `unsubscribed_at` (set by an unsubscribe, a
  bounce or a complaint). A reader who leaves and comes back counts from the return:
  the row keeps only its current stay.
- paid: a membership that granted access, from `starts_at` (or `created_at`) until
  `canceled_at` (set when a Stripe subscription ends or a comp or gift expires); a
  reader with two memberships at once counts once. Free is on the list and not paid.
- MRR: each Stripe membership's monthly amount at its current price and discount,
  from the end of its trial until it ended.
- donations: by `paid_at`, net of refunds, per currency.

Paid and MRR read the membership rows themselves (paid readers are a few thousand rows
for the largest newsletters), so a reader with overlapping memberships counts once.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count, DateField, DateTimeField, F, Q, Sum
from django.db.models.functions import Coalesce, TruncDate, TruncMonth
from django.utils import timezone

from subscriptions.models import Donation, Membership, Plan, Subscriber
from subscriptions.services.access import paid_for_stripe_memberships
from subscriptions.services.revenue import monthly_amount_of

DEFAULT_DAYS = 365
DEFAULT_MONTHS = 12

_LEFT = [Subscriber.Status.UNSUBSCRIBED, Subscriber.Status.BOUNCED, Subscriber.Status.COMPLAINED]
# Never paid for: no access was granted.
_NEVER_PAID = [Membership.Status.INCOMPLETE, Membership.Status.INCOMPLETE_EXPIRED]
# No longer granting access, whether or not an end was recorded.
_ENDED = [
    Membership.Status.CANCELED,
    Membership.Status.EXPIRED,
    Membership.Status.UNPAID,
    Membership.Status.PAUSED,
]


@dataclass(frozen=True)
class DailyGrowth:
    """One value per day in `days` (oldest first) for each figure."""

    days: list[date]
    subscribers: list[int]  # on the list at the end of the day
    free: list[int]  # on the list and not paid
    paid: list[int]  # with paid access (on the list or not)
    new: list[int]  # joined the list that day
    lost: list[int]  # left the list that day (unsubscribed, bounced, complained)
    mrr: dict[str, list[int]] = field(default_factory=dict)  # currency -> cents a month


@dataclass(frozen=True)
class DonationTotals:
    """Donations per period (a day or a month, its first day), net of refunds."""

    periods: list[date]
    amounts: dict[str, list[int]]  # currency -> cents per period
    counts: list[int]


@dataclass(frozen=True)
class ArticleConversions:
    """What one source converted: readers who signed up, upgraded or donated from it."""

    signups: int = 0  # confirmed readers whose signup it is credited with
    pending_signups: int = 0  # still to confirm
    upgrades: int = 0  # paid memberships started from it (paid at least once)
    paying_now: int = 0
    mrr: dict[str, int] = field(default_factory=dict)  # of those paying now, per currency
    donations: int = 0
    donated: dict[str, int] = field(default_factory=dict)  # net of refunds, per currency


def _zone() -> ZoneInfo:
    return timezone.get_default_timezone()


def _window(*, days: int, now: datetime | None) -> tuple[list[date], datetime, datetime]:
    """The `days` local days ending today, the moment the first starts and `now`."""
    now = now or timezone.now()
    zone = _zone()
    today = timezone.localtime(now, zone).date()
    first = today - timedelta(days=days - 1)
    return (
        [first + timedelta(days=n) for n in range(days)],
        datetime.combine(first, time.min, tzinfo=zone),
        now,
    )


def _local_day(moment: datetime) -> date:
    return timezone.localtime(moment, _zone()).date()


def _per_day(rows: Iterable[Any], days: list[date], key: str = "n") -> list[int]:
    by_day = {row["day"]: int(row[key] or 0) for row in rows}
    return [by_day.get(day, 0) for day in days]


# --- The list ------------------------------------------------------------------------


def _joined() -> Coalesce:
    return Coalesce("confirmed_at", "created_at", output_field=DateTimeField())


def _left() -> Coalesce:
    return Coalesce("unsubscribed_at", "updated_at", output_field=DateTimeField())


def _ever_on_list() -> Q:
    # A pending reader is not on the list, even one who was before and signed up again.
    return Q(status=Subscriber.Status.ACTIVE) | Q(confirmed_at__isnull=False, status__in=_LEFT)


def _list_by_day(
    *, days: list[date], start: datetime, now: datetime
) -> tuple[int, list[int], list[int]]:
    """Readers on the list before `start`, and those who joined and left each day."""
    zone = _zone()
    readers = Subscriber.objects.filter(_ever_on_list()).annotate(joined=_joined())
    leavers = Subscriber.objects.filter(confirmed_at__isnull=False, status__in=_LEFT).annotate(
        left=_left()
    )
    before = readers.filter(joined__lt=start).count() - leavers.filter(left__lt=start).count()
    joined = (
        readers.filter(joined__gte=start, joined__lte=now)
        .annotate(day=TruncDate("joined", tzinfo=zone))
        .values("day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    left = (
        leavers.filter(left__gte=start, left__lte=now)
        .annotate(day=TruncDate("left", tzinfo=zone))
        .values("day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return before, _per_day(joined, days), _per_day(left, days)


# --- Paid members and MRR ------------------------------------------------------------


def _merge(spans: list[tuple[date, date | None]]) -> list[tuple[date, date | None]]:
    """Overlapping or touching [start, end) day spans as one (None: still running)."""
    merged: list[tuple[date, date | None]] = []
    for start, end in sorted(spans, key=lambda span: span[0]):
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None or start <= last_end:
                if last_end is not None and (end is None or end > last_end):
                    merged[-1] = (last_start, end)
                continue
        merged.append((start, end))
    return merged


def _intersect(span: tuple[date, date | None], other: tuple[date, date | None]) -> tuple:
    start = max(span[0], other[0])
    ends = [end for end in (span[1], other[1]) if end is not None]
    end = min(ends) if ends else None
    return (start, end) if end is None or start < end else ()


def _add_span(changes: list[int], days: list[date], span: tuple, amount: int = 1) -> None:
    """Add `amount` to every day of `days` within the [start, end) span, as changes:
    `amount` where it begins, minus `amount` where it stops (`_running` sums them), so a
    reader paid all year costs two additions, not 365."""
    start, end = span
    first, last = days[0], days[-1]
    begin = max(start, first)
    stop = last + timedelta(days=1) if end is None else min(end, last + timedelta(days=1))
    if begin < stop:
        changes[(begin - first).days] += amount
        changes[(stop - first).days] -= amount


def _running(changes: list[int]) -> list[int]:
    """Each day's value from the changes `_add_span` recorded (one more than the days)."""
    return list(itertools.accumulate(changes[:-1]))


def _membership_span(row: dict[str, Any]) -> tuple[date, date | None]:
    start = _local_day(row["starts_at"] or row["created_at"])
    end_moment = row["canceled_at"]
    if end_moment is None and row["status"] in _ENDED:
        end_moment = row["updated_at"]
    return start, _local_day(end_moment) if end_moment is not None else None


def _list_span(row: dict[str, Any]) -> tuple[date, date | None] | None:
    """The days its reader is on the list (of a membership's row, `subscriber__*`)."""
    status = row["subscriber__status"]
    confirmed_at = row["subscriber__confirmed_at"]
    if status == Subscriber.Status.PENDING or (
        confirmed_at is None and status != Subscriber.Status.ACTIVE
    ):
        return None
    start = _local_day(confirmed_at or row["subscriber__created_at"])
    if status not in _LEFT:
        return start, None
    return start, _local_day(row["subscriber__unsubscribed_at"] or row["subscriber__updated_at"])


_MEMBERSHIP_VALUES = (
    "subscriber_id",
    "kind",
    "status",
    "plan_id",
    "starts_at",
    "created_at",
    "canceled_at",
    "updated_at",
    "trial_end",
    "unit_amount",
    "quantity",
    "discount_percent_off",
    "discount_amount_off",
    "discount_ends_at",
    "subscriber__status",
    "subscriber__confirmed_at",
    "subscriber__created_at",
    "subscriber__unsubscribed_at",
    "subscriber__updated_at",
)


def _paid_by_day(
    *, days: list[date], start: datetime, now: datetime
) -> tuple[list[int], list[int], dict[str, list[int]]]:
    """Per day: readers with paid access, those of them on the list, MRR per currency.

    The rows are read as values, not models: a large publication has tens of thousands.
    """
    rows = (
        Membership.objects.exclude(status__in=_NEVER_PAID)
        .exclude(foreign_price=True)
        .exclude(kind=Membership.Kind.STRIPE, plan__isnull=True)
        .filter(Q(starts_at__lte=now) | Q(starts_at__isnull=True, created_at__lte=now))
        .exclude(canceled_at__lt=start)
        .values(*_MEMBERSHIP_VALUES)
        .order_by()
    )
    plans = {plan.pk: plan for plan in Plan.objects.all()}
    paid = [0] * (len(days) + 1)
    paid_on_list = [0] * (len(days) + 1)
    mrr: dict[str, list[int]] = defaultdict(lambda: [0] * (len(days) + 1))
    spans: dict[int, list[tuple[date, date | None]]] = defaultdict(list)
    readers: dict[int, dict[str, Any]] = {}
    for row in rows:
        span = _membership_span(row)
        spans[row["subscriber_id"]].append(span)
        readers[row["subscriber_id"]] = row
        plan = plans.get(row["plan_id"])
        if row["kind"] == Membership.Kind.STRIPE and plan is not None:
            paying_from = span[0]
            if row["trial_end"] is not None:
                paying_from = max(paying_from, _local_day(row["trial_end"]))
            paying = _intersect((paying_from, None), span)
            if paying:
                amount = monthly_amount_of(
                    plan=plan,
                    unit_amount=row["unit_amount"],
                    quantity=row["quantity"],
                    discount_percent_off=row["discount_percent_off"],
                    discount_amount_off=row["discount_amount_off"],
                    discount_ends_at=row["discount_ends_at"],
                    now=now,
                )
                _add_span(mrr[plan.currency.lower()], days, paying, round(amount))
    for subscriber_id, reader_spans in spans.items():
        on_list = _list_span(readers[subscriber_id])
        for span in _merge(reader_spans):
            _add_span(paid, days, span)
            both = _intersect(span, on_list) if on_list else ()
            if both:
                _add_span(paid_on_list, days, both)
    return (
        _running(paid),
        _running(paid_on_list),
        {currency: _running(changes) for currency, changes in mrr.items()},
    )


def growth_by_day(*, days: int = DEFAULT_DAYS, now: datetime | None = None) -> DailyGrowth:
    """The list, free and paid readers, new and lost readers and MRR for each of the
    last `days` days (today included, so far)."""
    day_list, start, now = _window(days=days, now=now)
    before, joined, left = _list_by_day(days=day_list, start=start, now=now)
    subscribers = []
    running = before
    for new, lost in zip(joined, left, strict=True):
        running += new - lost
        subscribers.append(running)
    paid, paid_on_list, mrr = _paid_by_day(days=day_list, start=start, now=now)
    return DailyGrowth(
        days=day_list,
        subscribers=subscribers,
        free=[total - both for total, both in zip(subscribers, paid_on_list, strict=True)],
        paid=paid,
        new=joined,
        lost=left,
        mrr=mrr,
    )


# --- Donations -----------------------------------------------------------------------


def _paid_donations(*, start: datetime, now: datetime):
    return Donation.objects.filter(
        status=Donation.Status.PAID, paid_at__gte=start, paid_at__lte=now
    ).annotate(net=F("amount") - F("amount_refunded"))


def _donation_totals(rows: Iterable[Any], periods: list[date]) -> DonationTotals:
    amounts: dict[str, list[int]] = defaultdict(lambda: [0] * len(periods))
    counts = [0] * len(periods)
    index = {period: n for n, period in enumerate(periods)}
    for row in rows:
        period = row["day"]
        if period not in index:
            continue
        amounts[row["currency"].lower()][index[period]] += int(row["total"] or 0)
        counts[index[period]] += int(row["n"])
    return DonationTotals(periods=periods, amounts=dict(amounts), counts=counts)


def donations_by_day(*, days: int = DEFAULT_DAYS, now: datetime | None = None) -> DonationTotals:
    day_list, start, now = _window(days=days, now=now)
    rows = (
        _paid_donations(start=start, now=now)
        .annotate(day=TruncDate("paid_at", tzinfo=_zone()))
        .values("day", "currency")
        .annotate(total=Sum("net"), n=Count("pk"))
        .order_by()
    )
    return _donation_totals(rows, day_list)


def donations_by_month(
    *, months: int = DEFAULT_MONTHS, now: datetime | None = None
) -> DonationTotals:
    """The last `months` calendar months (this one so far), each named by its 1st."""
    now = now or timezone.now()
    this_month = timezone.localtime(now, _zone()).date().replace(day=1)
    periods = [this_month]
    while len(periods) < months:
        periods.insert(0, (periods[0] - timedelta(days=1)).replace(day=1))
    start = datetime.combine(periods[0], time.min, tzinfo=_zone())
    rows = (
        _paid_donations(start=start, now=now)
        .annotate(day=TruncMonth("paid_at", tzinfo=_zone(), output_field=DateField()))
        .values("day", "currency")
        .annotate(total=Sum("net"), n=Count("pk"))
        .order_by()
    )
    return _donation_totals(rows, periods)


# --- Conversions by source -----------------------------------------------------------


def conversions_by_source(
    *, source_article_ids: Iterable[int], now: datetime | None = None
) -> dict[int, ArticleConversions]:
    """What each source converted: one entry per id asked for (zeros when nothing)."""
    now = now or timezone.now()
    ids = sorted(set(source_article_ids))
    figures: dict[int, dict] = {
        pk: {"mrr": defaultdict(int), "donated": defaultdict(int)} for pk in ids
    }
    signups = (
        Subscriber.objects.filter(source_article_id__in=ids)
        .values("source_article_id")
        .annotate(
            confirmed=Count("pk", filter=Q(confirmed_at__isnull=False)),
            # A returning reader's new signup is credited only when confirmed; until
            # then it is counted, confirmed once already, where it was.
            pending=Count(
                "pk", filter=Q(status=Subscriber.Status.PENDING, confirmed_at__isnull=True)
            ),
        )
        .order_by()
    )
    for signup in signups:
        entry = figures[int(signup["source_article_id"] or 0)]
        entry["signups"] = signup["confirmed"]
        entry["pending_signups"] = signup["pending"]
    upgrades = (
        Membership.objects.filter(source_article_id__in=ids, kind=Membership.Kind.STRIPE)
        .exclude(status__in=_NEVER_PAID)
        .values("source_article_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for upgrade in upgrades:
        figures[int(upgrade["source_article_id"] or 0)]["upgrades"] = upgrade["n"]
    paying = (
        paid_for_stripe_memberships(now=now)
        .exclude(status=Membership.Status.TRIALING)
        .filter(source_article_id__in=ids, plan__isnull=False)
        .values(
            "source_article_id",
            "plan_id",
            "unit_amount",
            "quantity",
            "discount_percent_off",
            "discount_amount_off",
            "discount_ends_at",
        )
        .order_by()
    )
    plans = {plan.pk: plan for plan in Plan.objects.all()}
    for membership in paying:
        entry = figures[int(membership["source_article_id"] or 0)]
        entry["paying_now"] = entry.get("paying_now", 0) + 1
        plan = plans[membership["plan_id"]]
        amount = monthly_amount_of(
            plan=plan,
            unit_amount=membership["unit_amount"],
            quantity=membership["quantity"],
            discount_percent_off=membership["discount_percent_off"],
            discount_amount_off=membership["discount_amount_off"],
            discount_ends_at=membership["discount_ends_at"],
            now=now,
        )
        entry["mrr"][plan.currency.lower()] += round(amount)
    donations = (
        Donation.objects.filter(source_article_id__in=ids, status=Donation.Status.PAID)
        .values("source_article_id", "currency")
        .annotate(total=Sum(F("amount") - F("amount_refunded")), n=Count("pk"))
        .order_by()
    )
    for donation in donations:
        entry = figures[int(donation["source_article_id"] or 0)]
        entry["donations"] = entry.get("donations", 0) + donation["n"]
        entry["donated"][donation["currency"].lower()] += int(donation["total"] or 0)
    return {
        pk: ArticleConversions(
            signups=entry.get("signups", 0),
            pending_signups=entry.get("pending_signups", 0),
            upgrades=entry.get("upgrades", 0),
            paying_now=entry.get("paying_now", 0),
            mrr=dict(entry["mrr"]),
            donations=entry.get("donations", 0),
            donated=dict(entry["donated"]),
        )
        for pk, entry in figures.items()
    }
