"""Load on the running product, on loopback: pages, a signup burst, webhook deliveries.

    .venv/bin/python bench/load.py [--duration 5] [--connections 32] [--rounds 3]
                                   [--signups 500] [--webhooks 1000]

Starts the same stack as the browser journeys (gunicorn, a celery worker, Redis db 7,
a capturing SMTP server, the Stripe stand-in) on a database of its own
(`bench_broadside_load`, created, migrated and dropped here) and prints:

1. requests/second for the home page, an article page and a signed-in paid reader's
   page of a paid article with a discussion (30 comments, 10 replies; its cookies are
   the session and the CSRF cookie the page set, as a browser sends), each as a ratio
   to a static file served by the same gunicorn, measured again just before each page
   (wrk when installed, else a small threaded client), and the median of the rounds;
2. a burst of concurrent signups from many loopback addresses (127.0.0.x) plus one
   address that goes over its limit: status codes, 5xx count, duplicate subscribers,
   confirmation emails per address, 429s where the limit says and nowhere else;
3. webhook deliveries with 20% duplicates, signed with the stripe library's scheme:
   answer latency, and whether every event was applied exactly once.

Figures are printed, never asserted; the exit code is non-zero only when the stack
cannot start or a correctness check (no 5xx, no duplicates, each event once) fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from http.client import HTTPConnection
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import harness  # noqa: E402

DATABASE = "bench_broadside_load"
FAILURES: list[str] = []


def check(condition: bool, message: str) -> None:
    print(f"  {'ok  ' if condition else 'FAIL'} {message}")
    if not condition:
        FAILURES.append(message)


# --- setup ------------------------------------------------------------------------------


def setup_django(env: dict[str, str]) -> None:
    for key in (
        "ENV_FILE",
        "DATABASE_URL",
        "SECRET_KEY",
        "DEBUG",
        "VAR_DIR",
        "STRIPE_WEBHOOK_SECRET",
    ):
        os.environ[key] = env[key]
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["CONN_MAX_AGE"] = "0"
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def seed_content() -> dict[str, str]:
    from django.utils import timezone

    from newsletter.models import Article, Author, Section
    from publication.models import Publication

    Publication.objects.update_or_create(
        pk=1,
        defaults={
            "name": "The Meridian",
            "tagline": "Geopolitics, weekly",
            "description": "Independent analysis of the world's flashpoints.",
        },
    )
    author = Author.objects.create(display_name="Ines Calloway", slug="ines-calloway")
    section = Section.objects.create(name="Global geopolitics", slug="global-geopolitics")
    paragraph = (
        "<p>Shipping through the strait fell by a third in a month, and insurers "
        "repriced war risk twice in a week. What follows is a close reading of who "
        "gains, who loses, and what the ministries are not saying in public.</p>"
    )
    slug = ""
    for number in range(12):
        article = Article.objects.create(
            title=f"Straits under pressure, part {number + 1}",
            slug=f"straits-under-pressure-{number + 1}",
            subtitle="Why the chokepoints matter again",
            body=paragraph * 20,
            section=section,
            status=Article.Status.PUBLISHED,
            published_at=timezone.now(),
        )
        article.authors.add(author)
        slug = article.slug
    paid = Article.objects.create(
        title="The members' briefing",
        slug="the-members-briefing",
        subtitle="For paid subscribers",
        body=paragraph * 4 + '<hr class="paywall">' + paragraph * 16,
        section=section,
        status=Article.Status.PUBLISHED,
        visibility=Article.Visibility.PAID,
        published_at=timezone.now(),
    )
    paid.authors.add(author)
    add_discussion(paid, comments=PAID_ARTICLE_COMMENTS)
    return {
        "article_path": f"/p/{slug}/",
        "paid_path": paid.get_absolute_url(),
        "paid_session": paid_reader_session(),
    }


# The paid article's discussion: the signed-in page shows it (and a reply form under
# each comment), so its rendering is part of what that page costs.
PAID_ARTICLE_COMMENTS = 30


def add_discussion(article, *, comments: int) -> None:
    """`comments` top-level comments by ten readers, a third of them with a reply."""
    from django.contrib.auth import get_user_model

    from newsletter.models import Comment

    readers = [
        get_user_model().objects.create_user(
            username=f"commenter{n}", email=f"commenter{n}@example.com", first_name=f"Reader {n}"
        )
        for n in range(10)
    ]
    top = Comment.objects.bulk_create(
        Comment(article=article, user=readers[n % 10], body=f"Remark {n}: " + "a point " * 30)
        for n in range(comments)
    )
    Comment.objects.bulk_create(
        Comment(article=article, user=readers[(n + 3) % 10], parent=top[n * 3], body="Agreed.")
        for n in range(comments // 3)
    )


def paid_reader_session() -> str:
    """A signed-in reader with an active paid membership: their session cookie's value."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from subscriptions.models import Membership, Plan, Subscriber

    user = get_user_model().objects.create_user(
        username="paid-reader", email="paid-reader@example.com"
    )
    plan = Plan.objects.create(
        name="Monthly", interval="month", amount=800, currency="usd", stripe_price_id="price_b"
    )
    subscriber = Subscriber.objects.create(
        email=user.email, user=user, status=Subscriber.Status.ACTIVE
    )
    Membership.objects.create(
        subscriber=subscriber,
        plan=plan,
        kind=Membership.Kind.STRIPE,
        stripe_subscription_id="sub_bench_paid_reader",
        status=Membership.Status.ACTIVE,
    )
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


# --- 1. pages -----------------------------------------------------------------------------


def wrk(
    url: str, *, duration: int, connections: int, threads: int, cookie: str = ""
) -> tuple[float, int, int]:
    """(requests/second, requests, non-2xx/3xx responses) measured by wrk."""
    headers = ["-H", f"Cookie: {cookie}"] if cookie else []
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", *headers, url],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", result.stdout).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result.stdout)
    return rate, total, int(bad.group(1)) if bad else 0


def python_load(
    url: str, *, duration: int, connections: int, threads: int, cookie: str = ""
) -> tuple[float, int, int]:
    """The same measurement without wrk: keep-alive connections, one per thread."""
    parts = urlsplit(url)
    counts = Counter[str]()
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def run() -> None:
        conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
        done = bad = 0
        while time.monotonic() < stop_at:
            conn.request("GET", parts.path or "/", headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
            response.read()
            done += 1
            bad += response.status >= 400
        conn.close()
        with lock:
            counts["done"] += done
            counts["bad"] += bad

    started = time.monotonic()
    workers = [threading.Thread(target=run) for _ in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    return counts["done"] / elapsed, counts["done"], counts["bad"]


def measure_pages(
    site_url: str,
    paths: dict[str, str],
    *,
    duration: int,
    connections: int,
    use_wrk: bool,
    rounds: int,
) -> None:
    tool = wrk if use_wrk and shutil.which("wrk") else python_load
    print(
        f"\n1. Pages ({tool.__name__}, {connections} connections, {duration}s each, "
        f"{rounds} rounds)"
    )
    static_path = "/static/css/site.css"
    with urllib.request.urlopen(f"{site_url}/") as response:  # warm up, and find the file
        html = response.read().decode()
    hashed = re.search(r'href="(/static/css/site\.[0-9a-f]+\.css)"', html)
    if hashed:
        static_path = hashed.group(1)
    session = f"sessionid={paths['paid_session']}"
    with urllib.request.urlopen(
        urllib.request.Request(f"{site_url}{paths['paid_path']}", headers={"Cookie": session})
    ) as response:
        full = response.read().decode().count("Shipping through the strait") >= 20
        check(full, "the paid reader is signed in and gets the whole article")
        # The CSRF cookie the page sets (for its comment form), sent back as a browser
        # does on every later visit: without it each request would mint a new secret.
        jar = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            jar.load(header)
    if "csrftoken" in jar:
        session += f"; csrftoken={jar['csrftoken'].value}"
    check("csrftoken" in jar, "the paid reader's page sets the CSRF cookie a browser keeps")
    pages = ("home", "article", "paid, signed in")
    ratios: dict[str, list[float]] = {name: [] for name in pages}
    # Each page is measured right after the static file it is a ratio to: on a machine
    # shared with other work (or a noisy virtual one) the rates drift within seconds, so
    # a reference taken a whole round earlier says little.
    targets = {
        "home": ("/", ""),
        "article": (paths["article_path"], ""),
        "paid, signed in": (paths["paid_path"], session),
    }
    for number in range(1, rounds + 1):
        print(f"  round {number}")
        for name, (path, cookie) in targets.items():
            results = {}
            for label, url_path, sent in (("static file", static_path, ""), (name, path, cookie)):
                rate, total, bad = tool(
                    f"{site_url}{url_path}",
                    duration=duration,
                    connections=connections,
                    threads=2,
                    cookie=sent,
                )
                results[label] = rate
                print(
                    f"    {label:<16} {url_path:<41} {rate:9.1f} req/s  "
                    f"({total} requests, {bad} errors)"
                )
                check(bad == 0, f"{label}: every response was 2xx/3xx")
            ratios[name].append(results[name] / results["static file"])
        print(
            "    ratios to the static file measured just before each: "
            + ", ".join(f"{name} {ratios[name][-1]:.3f}" for name in pages)
        )
    for name in pages:
        rounds_text = ", ".join(f"{ratio:.3f}" for ratio in ratios[name])
        print(
            f"  {name} / static file ratio: median {statistics.median(ratios[name]):.3f} "
            f"(rounds: {rounds_text})"
        )
    print(f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


# --- 2. signup burst ---------------------------------------------------------------------


async def signup_burst(
    site_url: str, *, total: int, per_ip_limit: int, over_limit: int
) -> tuple[Counter[int], dict[str, list[int]], float]:
    """`total` signups at once: most from addresses within the limit, some from one over it."""
    import httpx

    within = total - over_limit
    ips_within = max(1, -(-within // per_ip_limit))  # ceil
    plan: list[tuple[str, str]] = []  # (source ip, email)
    distinct = int(within * 0.8)
    emails = [f"reader{n}@burst.example" for n in range(distinct)]
    # One in five repeats an address already in the burst, in other letter case.
    emails += [random.choice(emails[:distinct]).upper() for _ in range(within - distinct)]
    random.shuffle(emails)
    for index, email in enumerate(emails):
        plan.append((f"127.0.1.{index // per_ip_limit + 1}", email))
    assert ips_within < 250
    plan += [("127.0.2.1", f"eager{n}@burst.example") for n in range(over_limit)]

    clients: dict[str, httpx.AsyncClient] = {}
    limits = httpx.Limits(max_connections=per_ip_limit + over_limit)
    for ip in {ip for ip, _ in plan}:
        client = httpx.AsyncClient(
            base_url=site_url,
            transport=httpx.AsyncHTTPTransport(local_address=ip, limits=limits),
            timeout=120,
        )
        # The signup form carries no CSRF token (it sits on shared, cached pages).
        clients[ip] = client

    async def post(ip: str, email: str) -> tuple[str, int]:
        response = await clients[ip].post(
            "/subscribe/",
            data={"email": email},
            headers={"Referer": f"{site_url}/subscribe/"},
        )
        return ip, response.status_code

    started = time.monotonic()
    answers = await asyncio.gather(*(post(ip, email) for ip, email in plan))
    elapsed = time.monotonic() - started
    for client in clients.values():
        await client.aclose()
    statuses = Counter(status for _, status in answers)
    by_ip: dict[str, list[int]] = {}
    for ip, status in answers:
        by_ip.setdefault(ip, []).append(status)
    return statuses, by_ip, elapsed


def measure_signups(site_url: str, mail: harness.CapturedMail, *, total: int) -> None:
    from django.db import connection

    from subscriptions.models import Subscriber
    from subscriptions.views.signup import SIGNUPS_PER_IP

    over_limit = max(SIGNUPS_PER_IP * 3, total // 10)
    print(
        f"\n2. Signup burst: {total} POST /subscribe/ at once, {total - over_limit} from "
        f"addresses within the limit ({SIGNUPS_PER_IP} per address), {over_limit} from one "
        "address; one in five repeats an address"
    )
    harness.clear_cache_keys()
    statuses, by_ip, elapsed = asyncio.run(
        signup_burst(site_url, total=total, per_ip_limit=SIGNUPS_PER_IP, over_limit=over_limit)
    )
    print(f"  answered in {elapsed:.2f}s ({total / elapsed:.1f} signups/s): {dict(statuses)}")
    errors = sum(count for status, count in statuses.items() if status >= 500)
    check(errors == 0, f"no 5xx answers ({errors})")
    eager = by_ip.pop("127.0.2.1")
    check(
        eager.count(429) == over_limit - SIGNUPS_PER_IP and eager.count(200) == SIGNUPS_PER_IP,
        f"the address over its limit got {eager.count(200)} x 200 and {eager.count(429)} x 429 "
        f"(limit {SIGNUPS_PER_IP})",
    )
    others_429 = sum(statuses.count(429) for statuses in by_ip.values())
    check(others_429 == 0, f"addresses within the limit got no 429 ({others_429})")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT lower(email) FROM subscriptions_subscriber "
            "GROUP BY lower(email) HAVING count(*) > 1) AS dupes"
        )
        duplicates = cursor.fetchone()[0]
    accepted = Subscriber.objects.filter(email__endswith="@burst.example").count()
    print(f"  subscribers stored: {accepted}")
    check(duplicates == 0, f"no duplicate subscribers ({duplicates})")
    harness.wait_until(lambda: mail.count() >= accepted, timeout=60, what="the confirmation emails")
    per_address = Counter(rcpt.lower() for rcpts, _ in mail.all() for rcpt in rcpts)
    check(
        len(per_address) == accepted and max(per_address.values()) == 1,
        f"one confirmation email per stored subscriber ({mail.count()} emails, "
        f"{len(per_address)} addresses, at most {max(per_address.values())} each)",
    )


# --- 3. webhooks ---------------------------------------------------------------------------


def donation_events(stripe_api, count: int) -> list[dict]:
    """`count` paid one-off donations, each a completed Checkout Session and its event."""
    import stripe

    client = stripe.StripeClient(harness.STRIPE_SECRET_KEY, base_addresses={"api": stripe_api.url})
    events = []
    for number in range(count):
        session = client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "success_url": "http://127.0.0.1/donate/thanks/",
                "customer_email": f"donor{number}@bench.example",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": 500 + number,
                            "product_data": {"name": "Donation"},
                        },
                    }
                ],
            }
        )
        completed = stripe_api.complete_checkout(session.id)
        completed = {k: v for k, v in completed.items() if not k.startswith("_")}
        events.append(stripe_api.event("checkout.session.completed", completed))
    return events


async def deliver_webhooks(
    site_url: str, deliveries: list[dict], *, concurrency: int
) -> tuple[Counter[int], list[float], int, float]:
    import httpx
    import stripe

    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses = Counter[int]()
    duplicates = 0

    async with httpx.AsyncClient(
        base_url=site_url, timeout=60, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def post(event: dict) -> None:
            nonlocal duplicates
            body = json.dumps(event)
            # Signed at delivery time, as Stripe signs each attempt.
            header = stripe.WebhookSignature.generate_signature_header(
                body, harness.STRIPE_WEBHOOK_SECRET
            )
            async with gate:
                started = time.perf_counter()
                response = await client.post(
                    "/stripe/webhook/",
                    content=body,
                    headers={"Content-Type": "application/json", "Stripe-Signature": header},
                )
                latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1
            if response.status_code == 200 and response.json().get("duplicate"):
                duplicates += 1

        started = time.monotonic()
        await asyncio.gather(*(post(event) for event in deliveries))
        elapsed = time.monotonic() - started
    return statuses, latencies, duplicates, elapsed


def measure_webhooks(site_url: str, stripe_api, mail: harness.CapturedMail, *, total: int) -> None:
    from subscriptions.models import Donation, StripeEvent

    unique = total - total // 5
    print(
        f"\n3. Webhooks: {total} signed checkout.session.completed deliveries, {unique} "
        f"distinct events (one-off donations) and {total - unique} duplicates"
    )
    mail.clear()
    events = donation_events(stripe_api, unique)
    deliveries = events + [random.choice(events) for _ in range(total - unique)]
    random.shuffle(deliveries)
    # The first tenth one at a time (the endpoint's own latency), the rest 20 at a time.
    split = total // 10
    statuses, latencies, duplicates, elapsed = Counter[int](), [], 0, 0.0
    for part, concurrency in ((deliveries[:split], 1), (deliveries[split:], 20)):
        part_statuses, part_latencies, part_duplicates, part_elapsed = asyncio.run(
            deliver_webhooks(site_url, part, concurrency=concurrency)
        )
        part_latencies.sort()
        print(
            f"  {len(part)} deliveries, {concurrency} at a time: {part_elapsed:.2f}s "
            f"({len(part) / part_elapsed:.0f}/s), latency p50 "
            f"{statistics.median(part_latencies) * 1000:.1f} ms, p95 "
            f"{part_latencies[int(len(part_latencies) * 0.95)] * 1000:.1f} ms, max "
            f"{part_latencies[-1] * 1000:.1f} ms"
        )
        statuses += part_statuses
        latencies += part_latencies
        duplicates += part_duplicates
        elapsed += part_elapsed
    print(f"  answers: {dict(statuses)}")
    check(statuses == Counter({200: total}), "every delivery answered 200")
    check(
        duplicates == total - unique,
        f"the duplicates were recognised as such ({duplicates} of {total - unique})",
    )
    started = time.monotonic()
    harness.wait_until(
        lambda: (
            StripeEvent.objects.filter(processed_at__isnull=False).count() >= unique
            or StripeEvent.objects.exclude(error="").exists()
        ),
        timeout=600,
        interval=0.5,
        what="the worker to process every event",
    )
    drained = time.monotonic() - started
    print(
        f"  the worker applied them {drained:.1f}s after the last answer "
        f"({unique / (elapsed + drained):.0f} events/s end to end)"
    )
    check(StripeEvent.objects.count() == unique, f"one StripeEvent per event ({unique})")
    errors = list(StripeEvent.objects.exclude(error="").values_list("error", flat=True)[:3])
    check(not errors, f"no event failed {errors}")
    paid = Donation.objects.filter(status=Donation.Status.PAID).count()
    check(
        paid == unique and Donation.objects.count() == unique,
        f"each event applied once: {paid} paid donations, {Donation.objects.count()} in all",
    )
    harness.wait_until(lambda: mail.count() >= unique, timeout=120, what="thank-you emails")
    time.sleep(1)  # anything extra would arrive now
    per_donor = Counter(rcpt.lower() for rcpts, _ in mail.all() for rcpt in rcpts)
    check(
        len(per_donor) == unique and max(per_donor.values()) == 1,
        f"one thank-you email per donation ({mail.count()} emails, {len(per_donor)} donors)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per page measured")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the page measurements")
    parser.add_argument("--signups", type=int, default=500)
    parser.add_argument("--webhooks", type=int, default=1000)
    # The Procfile's web line: gthread, 2 processes x 4 threads.
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=4, help="1: sync workers")
    parser.add_argument(
        "--only-pages", action="store_true", help="skip the signup and webhook parts"
    )
    parser.add_argument(
        "--no-wrk", action="store_true", help="measure pages with the Python client"
    )
    args = parser.parse_args()

    workdir = Path(os.environ.get("BENCH_WORKDIR", "/tmp")) / f"broadside-load-{os.getpid()}"
    print(
        f"Broadside load on loopback: {os.cpu_count()} CPUs, gunicorn with "
        f"{args.web_workers} workers x {args.web_threads} threads, PostgreSQL, "
        f"Redis ({harness.REDIS_URL})"
    )
    harness.create_database(DATABASE)
    try:
        with ExitStack() as stack:
            smtp_port, mail = stack.enter_context(harness.capturing_smtp_server())
            from tests.fakes.stripe_api import FakeStripeAPI

            stripe_api = stack.enter_context(
                FakeStripeAPI(webhook_secret=harness.STRIPE_WEBHOOK_SECRET)
            )
            env = harness.stack_env(
                database_name=DATABASE,
                site_url="http://127.0.0.1",
                workdir=workdir,
                smtp_port=smtp_port,
                stripe_api_base=stripe_api.url,
            )
            workdir.mkdir(parents=True, exist_ok=True)
            harness.migrate(env)
            setup_django(env)
            paths = seed_content()
            harness.forget_stack_keys()
            site = stack.enter_context(
                harness.running_stack(
                    database_name=DATABASE,
                    workdir=workdir,
                    smtp_port=smtp_port,
                    stripe_api_base=stripe_api.url,
                    web_workers=args.web_workers,
                    web_threads=args.web_threads,
                    # Production's persistent connections (the harness's default is 0).
                    extra_env={"CONN_MAX_AGE": "60"},
                )
            )
            stripe_api.webhook_url = f"{site.site_url}/stripe/webhook/"
            measure_pages(
                site.site_url,
                paths,
                duration=args.duration,
                connections=args.connections,
                use_wrk=not args.no_wrk,
                rounds=args.rounds,
            )
            if not args.only_pages:
                measure_signups(site.site_url, mail, total=args.signups)
                measure_webhooks(site.site_url, stripe_api, mail, total=args.webhooks)
            site.check_alive()
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
