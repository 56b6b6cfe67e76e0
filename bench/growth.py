"""The admin's growth figures and charts on a large list.

    .venv/bin/python bench/growth.py [--sizes 10000,100000] [--rounds 5]

Runs in-process against PostgreSQL (DATABASE_URL, as the tests do) on a database of its
own (`bench_broadside_growth`, created here and dropped at the end). For each list size
it makes that many readers over the last 12 months (a fifth of them gone again), paid
memberships for a tenth (a third of those ended) and one donation per 20 readers, all
credited to 50 articles, then prints the median milliseconds of:

- reference: `SELECT COUNT(*)` of the subscribers table, one scan of the list (the unit
  the other figures are given in, measured in the same run);
- growth_by_day over 365 days (the list's GROUP BY queries, the paid readers' rows);
- donations_by_month over 12 months;
- conversions_by_source for the 50 articles;
- growth_charts: the four charts of the admin home, figures and drawing.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["TEST_DATABASE_NAME"] = "bench_broadside_growth"

import django  # noqa: E402

django.setup()

from _schema import schema_from_models  # noqa: E402  (bench/, the script's folder)
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402


def _median_ms(work: Callable[[], object], rounds: int) -> float:
    work()  # warm: connection, caches, imports
    durations = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        durations.append((time.perf_counter() - start) * 1000)
    return statistics.median(durations)


def _populate(size: int, *, offset: int) -> None:
    from subscriptions.models import Donation, Membership, Plan, Subscriber

    rng = random.Random(size)
    now = timezone.now()
    plan = Plan.objects.create(
        name=f"Monthly {offset}", interval="month", amount=800, stripe_price_id=f"p_{offset}"
    )
    readers = []
    for n in range(size):
        joined = now - timedelta(seconds=rng.randrange(365 * 86400))
        left = rng.random() < 0.2
        readers.append(
            Subscriber(
                email=f"r{offset + n}@example.com",
                status="unsubscribed" if left else "active",
                confirmed_at=joined,
                unsubscribed_at=joined + timedelta(days=rng.randrange(1, 60)) if left else None,
                source_article_id=rng.randrange(1, 51) if rng.random() < 0.3 else None,
            )
        )
    Subscriber.objects.bulk_create(readers, batch_size=5000)
    ids = list(Subscriber.objects.order_by("pk").values_list("pk", "confirmed_at"))[-size:]
    memberships = []
    for n, (pk, joined) in enumerate(ids[: size // 10]):
        ended = n % 3 == 0
        memberships.append(
            Membership(
                subscriber_id=pk,
                plan=plan,
                kind="stripe",
                stripe_subscription_id=f"sub_{offset + n}",
                status="canceled" if ended else "active",
                canceled_at=joined + timedelta(days=30) if ended else None,
                source_article_id=rng.randrange(1, 51),
            )
        )
    Membership.objects.bulk_create(memberships, batch_size=5000)
    donations = [
        Donation(
            amount=500 + rng.randrange(5000),
            status="paid",
            paid_at=now - timedelta(seconds=rng.randrange(365 * 86400)),
            source_article_id=rng.randrange(1, 51),
        )
        for _ in range(size // 20)
    ]
    Donation.objects.bulk_create(donations, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def run(*, sizes: list[int], rounds: int) -> None:
    from newsletter.admin_charts import growth_charts
    from subscriptions.models import Subscriber
    from subscriptions.services.growth import (
        conversions_by_source,
        donations_by_month,
        growth_by_day,
    )

    print(
        f"{'readers':>8} {'count(*) ms':>12} {'growth ms (x)':>16} {'donations ms (x)':>17} "
        f"{'conversions ms (x)':>19} {'charts ms (x)':>15}"
    )
    total = 0
    for size in sizes:
        _populate(size - total, offset=total)
        total = size
        reference = _median_ms(lambda: Subscriber.objects.count(), rounds)
        figures = [
            _median_ms(lambda: growth_by_day(), rounds),
            _median_ms(lambda: donations_by_month(), rounds),
            _median_ms(lambda: conversions_by_source(source_article_ids=range(1, 51)), rounds),
            _median_ms(lambda: growth_charts(), rounds),
        ]
        cells = [f"{ms:.1f} ({ms / reference:.1f})" for ms in figures]
        print(
            f"{size:>8} {reference:>12.1f} {cells[0]:>16} {cells[1]:>17} "
            f"{cells[2]:>19} {cells[3]:>15}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with schema_from_models():
        run(sizes=sizes, rounds=args.rounds)


if __name__ == "__main__":
    main()
