"""Email sending benchmark: real Celery workers against a local SMTP sink.

    .venv/bin/python bench/send.py                      # 10k and 100k, 1 and 2 workers
    .venv/bin/python bench/send.py --sizes 10000 --workers 1

Needs PostgreSQL (DATABASE_URL's server; a `broadside_bench` database is created and
dropped) and Redis (database 7 as the broker, flushed; BENCH_BROKER_URL to change it).
For each list size it prints: the time to publish (create the send and its
deliveries), then for each number of worker processes the messages per second handed
to the sink, as a ratio to plain smtplib pushing pre-built messages to the same sink
in the same run, and the peak memory (VmHWM) of each worker process.
"""

from __future__ import annotations

import argparse
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_URL = os.environ.get("BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE_URL = f"{SERVER_URL}/broadside_bench"
# Not database 4: the kill -9 send test flushes that one, and the two must run side by side.
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/7")
PAID_SHARE = 10  # one reader in ten is paid
BASELINE_MAX = 20000  # smtplib's rate does not depend on the list size

BODY = (
    "".join(f"<p>Paragraph {i} of the free part, with a few sentences of analysis. " * 3 + "</p>"
            for i in range(6))
    + '<hr class="paywall">'
    + "".join(f"<p>Paragraph {i} for paid readers, longer and denser with detail. " * 4 + "</p>"
              for i in range(14))
)  # fmt: skip


def configure_environment(tmp: Path) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        ENV_FILE="",  # never a developer's .env (its Telegram token, its database)
        DATABASE_URL=DATABASE_URL,
        CELERY_BROKER_URL=BROKER_URL,
        SECRET_KEY=os.environ.get("SECRET_KEY", "bench-secret-key-0123456789abcdefghijklmnop"),
        DEBUG="false",
        SITE_URL="https://broadside.example",
        VAR_DIR=str(tmp),
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("EMAIL_BACKEND", None)


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS broadside_bench")
        conn.execute("CREATE DATABASE broadside_bench")


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS broadside_bench WITH (FORCE)")


class Sink:
    """tests/fakes/smtp.py in its own process, counting messages."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.smtp", "--count-only"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.port = int(self.process.stdout.readline())

    def count(self) -> int:
        assert self.process.stdout is not None and self.process.stdin is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


def smtplib_rate(port: int, message: bytes, count: int) -> float:
    """Plain smtplib on one connection, one pre-built message per recipient."""
    client = smtplib.SMTP("127.0.0.1", port)
    started = time.perf_counter()
    for i in range(count):
        client.sendmail("letters@broadside.example", [f"baseline{i}@example.com"], message)
    elapsed = time.perf_counter() - started
    client.quit()
    return count / elapsed


def make_readers(size: int) -> None:
    from newsletter.models import Article, Delivery, EmailSend
    from subscriptions.models import Membership, Subscriber

    Delivery.objects.all().delete()
    EmailSend.objects.all().delete()
    Article.objects.all().delete()
    Membership.objects.all().delete()
    Subscriber.objects.all().delete()
    batch = 10000
    for start in range(0, size, batch):
        Subscriber.objects.bulk_create(
            Subscriber(email=f"reader{i}@example.com", name=f"Reader {i}", status="active")
            for i in range(start, min(start + batch, size))
        )
    paid = Subscriber.objects.order_by("pk").values_list("pk", flat=True)[::PAID_SHARE]
    Membership.objects.bulk_create(
        Membership(subscriber_id=pk, kind=Membership.Kind.COMP, status=Membership.Status.ACTIVE)
        for pk in paid
    )


def start_workers(count: int, port: int, tmp: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "EMAIL_URL": f"smtp://127.0.0.1:{port}",
        "EMAIL_SEND_PARALLELISM": str(2 * count),
        "CONN_MAX_AGE": "600",
    }
    workers = []
    for i in range(count):
        log = (tmp / f"worker{i}.log").open("wb")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--pool",
                    "solo",
                    "--loglevel",
                    "WARNING",
                    "--hostname",
                    f"bench{i}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    time.sleep(4)  # let them connect to the broker before the send is queued
    return workers


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_send(size: int, worker_count: int, sink: Sink, tmp: Path) -> dict[str, float]:
    import redis
    from django.db.models import Max, Min

    from newsletter.models import Article, EmailSend
    from newsletter.services.publishing import publish_article

    redis.Redis.from_url(BROKER_URL).flushdb()
    EmailSend.objects.all().delete()
    Article.objects.all().delete()
    article = Article.objects.create(
        title=f"Bench {size} x{worker_count}",
        slug=f"bench-{size}-{worker_count}",
        body=BODY,
        visibility=Article.Visibility.PAID,
    )
    workers = start_workers(worker_count, sink.port, tmp)
    received_before = sink.count()
    try:
        started = time.perf_counter()
        result = publish_article(article=article)
        publish_seconds = time.perf_counter() - started
        email_send = result.email_send
        assert email_send is not None and email_send.recipient_count == size
        progress_at, last_count = time.monotonic(), -1
        while True:
            email_send.refresh_from_db()
            if email_send.status in (EmailSend.Status.SENT, EmailSend.Status.FAILED):
                break
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(f"A worker exited; see {tmp}/worker*.log")
            count = email_send.deliveries.filter(status="sent").count()
            if count != last_count:
                progress_at, last_count = time.monotonic(), count
            elif time.monotonic() - progress_at > 60:
                raise RuntimeError(f"The send stalled at {count}; see {tmp}/worker*.log")
            time.sleep(1)
        wall = time.perf_counter() - started
        memory = [peak_memory_mb(w.pid) for w in workers]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
    window = email_send.deliveries.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    seconds = (window["last"] - window["first"]).total_seconds()
    return {
        "publish_seconds": publish_seconds,
        "sent": email_send.sent_count,
        "failed": email_send.failed_count,
        "received": sink.count() - received_before,
        "rate": email_send.sent_count / seconds if seconds else float("nan"),
        "wall_rate": email_send.sent_count / wall,
        "peak_mb": max(memory),
    }


def sample_message() -> bytes:
    """One real article email, as the workers send it."""
    from newsletter.models import Article, Delivery, Publication
    from newsletter.services.email_rendering import (
        Reader,
        personalised_bytes,
        render_article_email,
    )

    article = Article(title="Sample", slug="sample", body=BODY, visibility="paid")
    rendered = render_article_email(
        article=article, segment=Delivery.Segment.PAID, publication=Publication.load()
    )
    prepared = personalised_bytes(
        rendered=rendered,
        reader=Reader(subscriber_id=1, email="reader1@example.com", name="Reader 1"),
        send_id=1,
    )
    assert prepared is not None
    return prepared[0]


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]

    tmp = Path(os.environ.get("BENCH_TMP", "/tmp/broadside-bench"))
    tmp.mkdir(parents=True, exist_ok=True)
    configure_environment(tmp)
    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    sink = Sink()
    try:
        message = sample_message()
        print(f"message size: {len(message)} bytes; sink: aiosmtpd on port {sink.port}")
        for size in sizes:
            make_readers(size)
            baseline_count = min(size, BASELINE_MAX)
            baseline = smtplib_rate(sink.port, message, baseline_count)
            print(f"\n{size} subscribers ({size // PAID_SHARE} paid)")
            print(f"  smtplib, pre-built messages, 1 connection: {baseline:7.0f} msg/s "
                  f"({baseline_count} messages)")  # fmt: skip
            for count in worker_counts:
                figures = run_send(size, count, sink, tmp)
                print(
                    f"  {count} worker process(es): {figures['rate']:7.0f} msg/s "
                    f"(ratio {figures['rate'] / baseline:.2f}; {figures['wall_rate']:.0f} msg/s "
                    f"publish-to-finish), sent {figures['sent']:.0f}, failed "
                    f"{figures['failed']:.0f}, sink got {figures['received']:.0f}, "
                    f"peak worker memory {figures['peak_mb']:.0f} MB"
                )
                print(f"  publish (create {size} deliveries): {figures['publish_seconds']:.2f} s")
    finally:
        sink.stop()
        drop_database()


if __name__ == "__main__":
    main()
