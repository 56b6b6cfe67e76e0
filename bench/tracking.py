"""Opens and clicks at scale: the pixel and redirect under gunicorn, and the figures.

    TEST_REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/tracking.py \
        [--duration 4] [--rounds 3] [--connections 16] [--deliveries 1000000] [--events 5000000]

On a database of its own (`bench_broadside_tracking`, created, migrated and dropped):

1. requests/second for the open pixel and the click redirect, each as a ratio to a
   static file served by the same gunicorn in the same run (the Procfile's web line:
   gthread, 2 workers x 4 threads; wrk, or a small threaded client without it), with
   Redis as the cache (hits pushed onto a list, written by the beat task in a worker
   beside it), then with the file cache of the embedded default (hits written in the
   request); and whether every hit reached the database once the load stopped;
2. the time to compute an article's figures (`article_engagement`, what the admin page
   and send_status show) with `--deliveries` deliveries and `--events` opens and clicks
   made with generate_series: after the daily roll-up, and with 20,000 events not yet
   rolled up; and how long rolling all of them up took;
3. what tracking adds to personalising one message on the workers' SMTP path.

Figures are printed, never asserted; the exit code is non-zero only when the stack
cannot start or a correctness check fails (every response as expected, every hit kept).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import FAILURES, check, python_load, setup_django, wrk  # noqa: E402
from tests.browser import harness  # noqa: E402

DATABASE = "bench_broadside_tracking"


def seed_hits() -> dict[str, str]:
    """One sent delivery and one tracked link: the paths of its pixel and redirect."""
    from datetime import timedelta

    from django.utils import timezone

    from newsletter.models import Article, Delivery, EmailSend, TrackedLink
    from newsletter.services import tracking
    from subscriptions.models import Subscriber

    article = Article.objects.create(
        title="Load", slug="load", status="published", published_at=timezone.now()
    )
    send = EmailSend.objects.create(article=article, audience="everyone", status="sent")
    reader = Subscriber.objects.create(email="reader@example.com", status="active")
    delivery = Delivery.objects.create(
        send=send, subscriber=reader, status="sent", sent_at=timezone.now() - timedelta(hours=1)
    )
    url = "https://example.org/the-report?utm=none"
    link = TrackedLink.objects.create(article=article, url=url, digest="load")
    part = tracking.delivery_token(delivery.pk)
    return {
        "pixel": f"/o/{part}.gif",
        "redirect": f"/r/{tracking.link_token(link_id=link.pk, url=url)}.{part}/",
    }


def events_in_database() -> int:
    from newsletter.models import ClickEvent, OpenEvent

    return OpenEvent.objects.count() + ClickEvent.objects.count()


def clear_events() -> None:
    from newsletter.models import ClickEvent, OpenEvent

    OpenEvent.objects.all().delete()
    ClickEvent.objects.all().delete()


def static_path(site_url: str) -> str:
    with urllib.request.urlopen(f"{site_url}/") as response:
        html = response.read().decode()
    import re

    hashed = re.search(r'href="(/static/css/site\.[0-9a-f]+\.css)"', html)
    return hashed.group(1) if hashed else "/static/css/site.css"


def measure_hits(
    *, label: str, workdir: Path, paths: dict[str, str], args: argparse.Namespace, redis: bool
) -> None:
    tool = wrk if not args.no_wrk and shutil.which("wrk") else python_load
    extra = {"CONN_MAX_AGE": "60", "TRACKING_FLUSH_INTERVAL": "1"}
    if not redis:
        extra["REDIS_URL"] = ""  # the file cache: hits are written in the request
    print(f"\n1{label}. Pixel and redirect ({tool.__name__}, {args.connections} connections)")
    clear_events()
    with harness.running_stack(
        database_name=DATABASE,
        workdir=workdir,
        web_workers=2,
        web_threads=4,
        worker_concurrency=1,
        extra_env=extra,
    ) as site:
        static = static_path(site.site_url)
        rates: dict[str, list[float]] = {"static file": [], "pixel": [], "redirect": []}
        answered = 0
        # Interleaved rounds: other work on the machine weighs on all three alike.
        for round_ in range(args.rounds):
            for name, path in (
                ("static file", static),
                ("pixel", paths["pixel"]),
                ("redirect", paths["redirect"]),
            ):
                rate, total, bad = tool(
                    f"{site.site_url}{path}",
                    duration=args.duration,
                    connections=args.connections,
                    threads=2,
                )
                rates[name].append(rate)
                if name != "static file":
                    answered += total
                print(
                    f"  round {round_ + 1} {name:<12} {rate:9.1f} req/s  "
                    f"({total} requests, {bad} errors)"
                )
                check(bad == 0, f"{label} {name}: every response was 2xx/3xx")
        for name in ("pixel", "redirect"):
            ratios = [r / s for r, s in zip(rates[name], rates["static file"], strict=True)]
            print(
                f"  {name} / static file ratio: {statistics.median(ratios):.3f} (median of "
                f"{args.rounds} rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
        print(f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        # wrk counts requests whose answers arrived; up to one per connection more may
        # have been answered as each run stopped. Every hit answered is in the database
        # once the buffer is flushed.
        started = time.monotonic()
        while time.monotonic() - started < 120 and events_in_database() < answered:
            time.sleep(0.5)
        stored = events_in_database()
        print(f"  hits in the database: {stored} of {answered} counted by the client")
        in_flight = 2 * args.rounds * args.connections
        check(answered <= stored <= answered + in_flight, f"{label}: every hit kept")
        site.check_alive()


def generate(*, deliveries: int, events: int) -> int:
    """The article with `deliveries` sent deliveries and `events` opens and clicks."""
    from datetime import timedelta

    from django.db import connection

    from newsletter.models import Article, EmailSend, TrackedLink

    article = Article.objects.create(
        title="At scale", slug="at-scale", status="published", published_at=_now()
    )
    send = EmailSend.objects.create(
        article=article, audience="everyone", status="sent", sent_count=deliveries
    )
    links = [
        TrackedLink.objects.create(article=article, url=f"https://example.org/{i}", digest=str(i))
        for i in range(20)
    ]
    opens = events * 3 // 5
    clicks = events - opens
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM subscriptions_subscriber")
        base = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO subscriptions_subscriber (id, email, name, status, consent_source, "
            "status_reason, imported_from, tracking_opt_out, created_at, updated_at) "
            "SELECT %s + g, 'r' || g || '@scale.example', '', 'active', '', '', '', false, "
            "now(), now() FROM generate_series(1, %s) g",
            [base, deliveries],
        )
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('subscriptions_subscriber', 'id'), %s)",
            [base + deliveries],
        )
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM newsletter_delivery")
        first_id = cursor.fetchone()[0] + 1
        # Every other reader opened (a person), one in ten clicked, all at t0; the
        # first events are those first opens and clicks, the rest repeats and machines'
        # fetches over the following days.
        t0 = _now() - timedelta(days=19)
        cursor.execute(
            "INSERT INTO newsletter_delivery (id, send_id, subscriber_id, segment, status, "
            "sent_at, attempts, provider_message_id, last_error, opened_at, clicked_at) "
            "SELECT %(first)s + i, %(send)s, %(base)s + i + 1, 'free', 'sent', "
            "%(t0)s - interval '1 hour', 1, '', '', "
            "CASE WHEN i %% 2 = 0 THEN %(t0)s END, CASE WHEN i %% 10 = 0 THEN %(t0)s END "
            "FROM generate_series(0, %(n)s - 1) i",
            {"first": first_id, "send": send.pk, "base": base, "t0": t0, "n": deliveries},
        )
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('newsletter_delivery', 'id'), %s)",
            [first_id + deliveries],
        )
        for table, count, every, machine in (("openevent", opens, 2, "apple_proxy"),
                                             ("clickevent", clicks, 10, "scanner")):  # fmt: skip
            # Only readers who opened (clicked) have a person's events: their first one
            # (in the first pass over the deliveries), then repeats; the rest machines'.
            human = f"((g %% %(n)s) %% {every} = 0 AND (g < %(n)s OR g %% 5 < 2))"
            first = f"(g < %(n)s AND g %% {every} = 0)"
            link = ", link_id, first_of_link" if table == "clickevent" else ""
            link_value = f", {links[0].pk} + (g %% 20), {first}" if table == "clickevent" else ""
            cursor.execute(
                f"INSERT INTO newsletter_{table} (delivery_id, article_id{link}, at, "  # noqa: S608
                "engagement, reason, first) "
                f"SELECT %(first)s + (g %% %(n)s), %(article)s{link_value}, "
                f"CASE WHEN {first} THEN %(t0)s "
                "ELSE %(t0)s + (g %% 1000 + 1) * interval '20 minutes' END, "
                f"CASE WHEN {human} THEN 'human' ELSE 'machine' END, "
                f"CASE WHEN {human} THEN '' ELSE '{machine}' END, {first} "
                "FROM generate_series(0, %(count)s - 1) g",
                {"first": first_id, "n": deliveries, "article": article.pk, "t0": t0,
                 "count": count},
            )  # fmt: skip
        cursor.execute("ANALYZE")
    print(
        f"  generated {deliveries:,} deliveries, {opens:,} opens and {clicks:,} clicks "
        f"in {time.monotonic() - started:.1f} s"
    )
    return article.pk


def _now():
    from django.utils import timezone

    return timezone.now()


def time_figures(article_id: int, *, repeats: int = 7) -> tuple[float, object]:
    from django.db import connection

    from newsletter.models import Article
    from newsletter.services.engagement import article_engagement

    article = Article.objects.get(pk=article_id)
    timings = []
    figures = None
    connection.ensure_connection()  # a kept connection, as requests have (CONN_MAX_AGE)
    for _ in range(repeats):
        started = time.perf_counter()
        figures = article_engagement(article=article)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), figures


def measure_figures(args: argparse.Namespace) -> None:
    from datetime import timedelta

    from newsletter.models import OpenEvent
    from newsletter.services.engagement import roll_up_events

    print(f"\n2. An article's figures ({args.deliveries:,} deliveries, {args.events:,} events)")
    article_id = generate(deliveries=args.deliveries, events=args.events)
    before, raw = time_figures(article_id, repeats=1)
    print(f"  figures from raw events only (nothing rolled up): {before:,.0f} ms")
    started = time.monotonic()
    rolled = roll_up_events(now=_now() + timedelta(minutes=5))
    print(f"  roll-up of {rolled:,} events: {time.monotonic() - started:.1f} s")
    median, figures = time_figures(article_id)
    print(f"  figures after the roll-up: {median:.1f} ms (median of 7)")
    check(figures == raw, "the rolled-up figures equal the ones counted from raw events")
    last = OpenEvent.objects.order_by("-id").first()
    assert last is not None
    OpenEvent.objects.bulk_create(
        OpenEvent(
            delivery_id=last.delivery_id,
            article_id=article_id,
            at=_now(),
            engagement="human",
            reason="",
        )
        for _ in range(20_000)
    )
    median, _ = time_figures(article_id)
    print(f"  figures with 20,000 events not rolled up yet: {median:.1f} ms (median of 7)")
    print(
        f"  ({figures.opened_readers:,} readers opened, {figures.machine_opens:,} machine opens, "  # type: ignore[attr-defined]
        f"{figures.clicked_readers:,} readers clicked)"  # type: ignore[attr-defined]
    )
    print("  target: under 200 ms")


def measure_personalising(repeats: int = 3000) -> None:
    """What tracking adds to each message on the workers' SMTP path: the same article
    (the send benchmark's body, 20 links added) personalised with and without it."""
    from bench.send import BODY
    from newsletter.models import Article, Delivery
    from newsletter.services.email_rendering import (
        Reader,
        personalised_bytes,
        render_article_email,
    )
    from publication.models import Publication

    links = "".join(
        f'<p><a href="https://example.org/source/{i}?a=1&amp;b=2">{i}</a></p>' for i in range(20)
    )
    article = Article.objects.create(title="Personalised", slug="personalised", body=BODY + links)
    print("\n3. Personalising one message (the SMTP fast path), 20 links")
    rendered = {
        tracked: render_article_email(
            article=article,
            segment=Delivery.Segment.PAID,
            publication=Publication.load(),
            tracked=tracked,
        )
        for tracked in (False, True)
    }
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(5):  # interleaved; the fastest of five runs each
        for tracked in (False, True):
            started = time.perf_counter()
            for i in range(repeats):
                reader = Reader(
                    subscriber_id=i + 1, email=f"r{i}@example.com", name="Reader", delivery_id=i + 1
                )
                prepared = personalised_bytes(rendered=rendered[tracked], reader=reader, send_id=1)
                assert prepared is not None
            runs[tracked].append((time.perf_counter() - started) / repeats * 1e6)
    timings = {tracked: min(values) for tracked, values in runs.items()}
    for tracked in (False, True):
        label = "tracked" if tracked else "untracked"
        print(f"  {label:<9} {timings[tracked]:7.1f} us per message")
    print(f"  tracked / untracked: {timings[True] / timings[False]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds per URL and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--no-wrk", action="store_true", help="use the Python client")
    parser.add_argument("--only-hits", action="store_true", help="skip the figures part")
    parser.add_argument("--only-figures", action="store_true", help="skip the gunicorn part")
    args = parser.parse_args()

    workdir = Path(os.environ.get("BENCH_WORKDIR", "/tmp")) / f"broadside-tracking-{os.getpid()}"
    print(
        f"Broadside opens and clicks on loopback: {os.cpu_count()} CPUs, PostgreSQL, "
        f"Redis ({harness.REDIS_URL})"
    )
    harness.create_database(DATABASE)
    try:
        with ExitStack():
            env = harness.stack_env(
                database_name=DATABASE, site_url="http://127.0.0.1", workdir=workdir
            )
            workdir.mkdir(parents=True, exist_ok=True)
            harness.migrate(env)
            setup_django(env)
            if not args.only_figures:
                paths = seed_hits()
                harness.forget_stack_keys()
                measure_hits(label="a", workdir=workdir, paths=paths, args=args, redis=True)
                measure_hits(label="b", workdir=workdir, paths=paths, args=args, redis=False)
            if not args.only_hits:
                measure_figures(args)
            measure_personalising()
    finally:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        harness.drop_database(DATABASE)
        harness.forget_stack_keys()
        shutil.rmtree(workdir, ignore_errors=True)
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed:", *FAILURES, sep="\n  ")
        return 1
    print("\nAll checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
