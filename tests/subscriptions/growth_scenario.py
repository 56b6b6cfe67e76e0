"""A publication's ten days of readers, memberships and donations, with the figures they
must give, in the America/New_York time zone (daylight saving time begins inside the
window, on 8 March 2026).

Used by tests/subscriptions/test_growth.py on PostgreSQL in the test process, and by
tests/integration/test_growth_backends.py on both PostgreSQL and SQLite through a
`manage.py shell`, so that the same rows give the same days on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

TIME_ZONE = "America/New_York"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 08:00 on 10 March in New York
DAYS = 10  # 1 to 10 March


def utc(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def build() -> None:
    """Create the scenario's rows (timestamps set as they would have been then)."""
    from subscriptions.models import Donation, Membership, Plan, Subscriber

    monthly = Plan.objects.create(
        name="Monthly", interval="month", amount=800, stripe_price_id="price_growth_m"
    )
    yearly = Plan.objects.create(
        name="Yearly", interval="year", amount=12000, stripe_price_id="price_growth_y"
    )

    def reader(email: str, status: str, *, created: datetime, **times: Any) -> Subscriber:
        subscriber = Subscriber.objects.create(email=email, status=status)
        Subscriber.objects.filter(pk=subscriber.pk).update(
            created_at=created, updated_at=times.pop("updated", created), **times
        )
        return subscriber

    def membership(subscriber: Subscriber, *, created: datetime, **fields: Any) -> None:
        made = Membership.objects.create(subscriber=subscriber, **fields)
        Membership.objects.filter(pk=made.pk).update(created_at=created, updated_at=created)

    # On the list before the window: A, E (bounces on 9 March) and J.
    a = reader("a@example.com", "active", created=utc(2, 20), confirmed_at=utc(2, 20))
    # Confirmed at 22:30 on 1 March in New York, 2 March in UTC: new on 1 March.
    b = reader("b@example.com", "active", created=utc(3, 1), confirmed_at=utc(3, 2, 3, 30))
    # Joins on 3 March, leaves at 23:59 on 5 March (04:59 on 6 March in UTC).
    c = reader(
        "c@example.com",
        "unsubscribed",
        created=utc(3, 3),
        confirmed_at=utc(3, 3, 15),
        unsubscribed_at=utc(3, 6, 4, 59),
    )
    reader("d@example.com", "pending", created=utc(3, 4))  # never confirmed: not counted
    # Bounced at 01:00 on 9 March in New York (05:00 UTC, daylight saving time by then).
    reader(
        "e@example.com",
        "bounced",
        created=utc(2, 1),
        confirmed_at=utc(2, 1),
        unsubscribed_at=utc(3, 9, 5),
    )
    # Imported active, without a confirmation time: on the list from its creation.
    reader("f@example.com", "active", created=utc(3, 7))
    # Came and went before the window.
    reader(
        "g@example.com",
        "unsubscribed",
        created=utc(1, 1),
        confirmed_at=utc(1, 1),
        unsubscribed_at=utc(2, 1),
    )
    # Left the emails in February but pays yearly until 8 March (11:00 in New York).
    h = reader(
        "h@example.com",
        "unsubscribed",
        created=utc(2, 1),
        confirmed_at=utc(2, 1),
        unsubscribed_at=utc(2, 2),
    )
    j = reader("j@example.com", "active", created=utc(2, 1), confirmed_at=utc(2, 1))

    # A: complimentary until 4 March, and a gift from 3 March: paid every day, once.
    membership(a, created=utc(2, 25), kind="comp", status="expired", canceled_at=utc(3, 4))
    membership(a, created=utc(3, 3), kind="gift", status="active", expires_at=utc(6, 1))
    # B pays monthly from 2 March.
    membership(b, created=utc(3, 2), plan=monthly, stripe_subscription_id="sub_b", status="active")
    # C never paid: an incomplete checkout.
    membership(
        c, created=utc(3, 3), plan=monthly, stripe_subscription_id="sub_c", status="incomplete"
    )
    membership(
        h,
        created=utc(2, 10),
        plan=yearly,
        stripe_subscription_id="sub_h",
        status="canceled",
        canceled_at=utc(3, 8, 15),
    )
    # J: a trial from 5 March, paying from 8 March.
    membership(
        j,
        created=utc(3, 5),
        plan=monthly,
        stripe_subscription_id="sub_j",
        status="active",
        trial_end=utc(3, 8),
    )

    def donation(**fields: Any) -> None:
        Donation.objects.create(**fields)

    # 23:00 on 28 February in New York: February's, and outside the ten days.
    donation(amount=2500, currency="usd", status="paid", paid_at=utc(3, 1, 4))
    donation(amount=1000, amount_refunded=400, currency="usd", status="paid", paid_at=utc(3, 6))
    donation(amount=9999, currency="usd", status="pending")
    donation(
        amount=3000, currency="usd", status="refunded", amount_refunded=3000, paid_at=utc(3, 7)
    )
    donation(amount=500, currency="eur", status="paid", paid_at=utc(3, 10, 6))


def figures() -> dict[str, Any]:
    """What the growth selectors say about the scenario, as plain JSON-able values."""
    from subscriptions.services.growth import donations_by_day, donations_by_month, growth_by_day

    growth = growth_by_day(days=DAYS, now=NOW)
    by_day = donations_by_day(days=DAYS, now=NOW)
    by_month = donations_by_month(months=3, now=NOW)
    return {
        "days": [day.isoformat() for day in growth.days],
        "subscribers": growth.subscribers,
        "free": growth.free,
        "paid": growth.paid,
        "new": growth.new,
        "lost": growth.lost,
        "mrr": growth.mrr,
        "donations_by_day": by_day.amounts,
        "donation_counts_by_day": by_day.counts,
        "months": [month.isoformat() for month in by_month.periods],
        "donations_by_month": by_month.amounts,
        "donation_counts_by_month": by_month.counts,
    }


EXPECTED: dict[str, Any] = {
    "days": [f"2026-03-{day:02d}" for day in range(1, 11)],
    "subscribers": [4, 4, 5, 5, 4, 4, 5, 5, 4, 4],
    "free": [3, 2, 3, 3, 1, 1, 2, 2, 1, 1],
    "paid": [2, 3, 3, 3, 4, 4, 4, 3, 3, 3],
    "new": [1, 0, 1, 0, 0, 0, 1, 0, 0, 0],
    "lost": [0, 0, 0, 0, 1, 0, 0, 0, 1, 0],
    "mrr": {"usd": [1000, 1800, 1800, 1800, 1800, 1800, 1800, 1600, 1600, 1600]},
    "donations_by_day": {
        "usd": [0, 0, 0, 0, 0, 600, 0, 0, 0, 0],
        "eur": [0, 0, 0, 0, 0, 0, 0, 0, 0, 500],
    },
    "donation_counts_by_day": [0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
    "months": ["2026-01-01", "2026-02-01", "2026-03-01"],
    "donations_by_month": {"usd": [0, 2500, 600], "eur": [0, 0, 500]},
    "donation_counts_by_month": [0, 1, 2],
}
