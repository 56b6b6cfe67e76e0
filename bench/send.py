"""Email sending benchmark: real Celery workers against Postfix's smtp-sink and ESP stand-ins.

    .venv/bin/python bench/send.py                         # every scenario below
    .venv/bin/python bench/send.py --scenarios sink --sizes 10000,100000 --workers 1,2
    .venv/bin/python bench/send.py --scenarios latency --latency-ms 20
    .venv/bin/python bench/send.py --scenarios esp --esp-latency-ms 50

Needs PostgreSQL (DATABASE_URL's server; a `broadside_bench` database is created and
dropped), Redis (database 7 as the broker, flushed; BENCH_BROKER_URL to change it) and
Postfix's `smtp-sink` (Debian: `apt-get install postfix`, then `postfix stop`; only the
sink program is used, SMTP_SINK to point elsewhere).

Scenarios, each with its reference measured in the same run:
- sink: straight into smtp-sink. Reference: plain smtplib pushing one pre-built message
  per recipient over one connection. Also the time to publish (create the send and its
  deliveries) and the peak memory (VmHWM) of each worker process.
- latency: through bench/latency_proxy.py, which delays every reply of the sink by
  --latency-ms (a relay that far away). Reference: the same plain smtplib loop through
  the same proxy. 1 and 2 worker processes: here the sink is not the limit.
- esp: through the Mailgun and Postmark batch API stand-ins (tests/fakes/esp.py) with
  --esp-latency-ms per call. Reference: anymail sending one message per call (its
  ordinary path) to the same stand-in.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
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


SMTP_SINK = os.environ.get("SMTP_SINK", "/usr/sbin/smtp-sink")
# Postfix's C client: with as many sessions as a worker drives, the rate the sink itself
# can take, a reference faster than the worker (one smtplib connection no longer is).
SMTP_SOURCE = os.environ.get("SMTP_SOURCE", "/usr/sbin/smtp-source")
SOURCE_SESSIONS = 32  # EMAIL_SEND_CONNECTIONS' default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """Postfix's smtp-sink: accepts (PIPELINING, 8BITMIME) and discards, counting."""

    def __init__(self) -> None:
        if not Path(SMTP_SINK).exists():
            sys.exit(
                f"No smtp-sink at {SMTP_SINK}: apt-get install postfix (then postfix stop), "
                "or set SMTP_SINK."
            )
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        # Its counter goes to a file: a pipe nobody reads would fill and stop the sink.
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [SMTP_SINK, *user, "-c", f"127.0.0.1:{self.port}", "1024"],
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def stop(self) -> int:
        """Stop it; the number of messages it received."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        self.output.seek(0)
        output = self.output.read()
        self.output.close()
        counts = re.findall(rb"mesg=(\d+)", output)
        return int(counts[-1]) if counts else 0


class Helper:
    """A helper process that prints its port first (the latency proxy, an ESP stand-in)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def smtplib_rate(port: int, message: bytes, count: int) -> float:
    """Plain smtplib on one connection, one pre-built message per recipient."""
    client = smtplib.SMTP("127.0.0.1", port)
    started = time.perf_counter()
    for i in range(count):
        client.sendmail("letters@broadside.example", [f"baseline{i}@example.com"], message)
    elapsed = time.perf_counter() - started
    client.quit()
    return count / elapsed


def smtp_source_rate(port: int, message: bytes, count: int) -> float | None:
    """Postfix's smtp-source: SOURCE_SESSIONS parallel sessions, each kept open, pushing
    `count` messages of the same size in all. None where it is not installed."""
    if not Path(SMTP_SOURCE).exists():
        return None
    started = time.perf_counter()
    subprocess.run(
        [SMTP_SOURCE, "-s", str(SOURCE_SESSIONS), "-d", "-m", str(count), "-l", str(len(message)),
         "-f", "letters@broadside.example", "-t", "reference@example.com",
         f"127.0.0.1:{port}"],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return count / (time.perf_counter() - started)


def anymail_rate(env: dict[str, str], count: int) -> float:
    """anymail's ordinary path, one message per API call, to the same stand-in."""
    from django.core.mail import EmailMultiAlternatives, get_connection
    from django.test import override_settings

    anymail = {k.removeprefix("ANYMAIL_"): v for k, v in env.items() if k.startswith("ANYMAIL_")}
    with override_settings(EMAIL_BACKEND=env["EMAIL_BACKEND"], ANYMAIL=anymail):
        connection = get_connection()
        messages = []
        for i in range(count):
            message = EmailMultiAlternatives(
                "Sample", "text " * 500, "letters@broadside.example", [f"r{i}@example.com"]
            )
            message.attach_alternative("<p>html</p>" * 500, "text/html")
            messages.append(message)
        started = time.perf_counter()
        connection.send_messages(messages)
        return count / (time.perf_counter() - started)


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


def start_workers(count: int, env: dict[str, str], tmp: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "EMAIL_SEND_PARALLELISM": str(2 * count), "CONN_MAX_AGE": "600", **env}
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


def run_send(
    size: int, worker_count: int, env: dict[str, str], tmp: Path, label: str
) -> dict[str, float]:
    import redis
    from django.db.models import Max, Min

    from newsletter.models import Article, EmailSend
    from newsletter.services.publishing import publish_article

    redis.Redis.from_url(BROKER_URL).flushdb()
    EmailSend.objects.all().delete()
    Article.objects.all().delete()
    article = Article.objects.create(
        title=f"Bench {size} x{worker_count}",
        slug=f"bench-{label}-{size}-{worker_count}",
        body=BODY,
        visibility=Article.Visibility.PAID,
    )
    workers = start_workers(worker_count, env, tmp)
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
        "rate": email_send.sent_count / seconds if seconds else float("nan"),
        "wall_rate": email_send.sent_count / wall,
        "peak_mb": max(memory),
    }


def sample_message() -> bytes:
    """One real article email, as the workers send it."""
    from newsletter.models import Article, Delivery
    from newsletter.services.email_rendering import (
        Reader,
        personalised_bytes,
        render_article_email,
    )
    from publication.models import Publication

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


def report(
    label: str,
    count: int,
    figures: dict[str, float],
    reference: float,
    sink_limit: float | None = None,
) -> None:
    limit = f", {figures['rate'] / sink_limit:.2f} of smtp-source" if sink_limit else ""
    print(
        f"  {label}, {count} worker process(es): {figures['rate']:7.0f} msg/s "
        f"(ratio {figures['rate'] / reference:.2f}{limit}; {figures['wall_rate']:.0f} msg/s "
        f"publish-to-finish), sent {figures['sent']:.0f}, failed {figures['failed']:.0f}, "
        f"peak worker memory {figures['peak_mb']:.0f} MB"
    )


def scenario_sink(sizes: list[int], worker_counts: list[int], message: bytes, tmp: Path) -> None:
    print("\n== straight into smtp-sink")
    for size in sizes:
        make_readers(size)
        sink = Sink()
        baseline_count = min(size, BASELINE_MAX)
        baseline = smtplib_rate(sink.port, message, baseline_count)
        env = {"EMAIL_URL": f"smtp://127.0.0.1:{sink.port}"}
        print(f"{size} subscribers ({size // PAID_SHARE} paid)")
        print(f"  reference: smtplib, pre-built messages, 1 connection: {baseline:7.0f} msg/s "
              f"({baseline_count} messages)")  # fmt: skip
        sink_limit = smtp_source_rate(sink.port, message, baseline_count)
        if sink_limit:
            print(f"  reference: smtp-source (C), {SOURCE_SESSIONS} sessions: {sink_limit:7.0f} "
                  f"msg/s ({baseline_count} messages; what the sink can take)")  # fmt: skip
        publish = []
        for count in worker_counts:
            figures = run_send(size, count, env, tmp, "sink")
            report("Broadside", count, figures, baseline, sink_limit)
            publish.append(figures["publish_seconds"])
        received = sink.stop()
        expected = baseline_count * (2 if sink_limit else 1) + size * len(worker_counts)
        print(f"  publish (create {size} deliveries): {min(publish):.2f} s; "
              f"sink received {received} of {expected} messages")  # fmt: skip


def scenario_latency(
    size: int, worker_counts: list[int], delay_ms: float, message: bytes, tmp: Path
) -> None:
    print(f"\n== smtp-sink behind {delay_ms:g} ms of reply latency (bench/latency_proxy.py)")
    make_readers(size)
    sink = Sink()
    proxy = Helper(
        "bench/latency_proxy.py", "--upstream", f"127.0.0.1:{sink.port}", "--delay-ms",
        str(delay_ms),
    )  # fmt: skip
    try:
        baseline = smtplib_rate(proxy.port, message, 50)
        print(f"{size} subscribers")
        print(f"  reference: smtplib, pre-built messages, 1 connection: {baseline:7.1f} msg/s "
              "(50 messages)")  # fmt: skip
        env = {"EMAIL_URL": f"smtp://127.0.0.1:{proxy.port}"}
        for count in worker_counts:
            report("Broadside", count, run_send(size, count, env, tmp, "latency"), baseline)
    finally:
        proxy.stop()
        sink.stop()


def scenario_esp(size: int, delay_ms: float, tmp: Path) -> None:
    print(f"\n== ESP batch API stand-ins, {delay_ms:g} ms per call (tests/fakes/esp.py)")
    make_readers(size)
    for provider in ("mailgun", "postmark"):
        fake = Helper("-m", "tests.fakes.esp", provider, "--latency-ms", str(delay_ms))
        url = f"http://127.0.0.1:{fake.port}"
        if provider == "mailgun":
            env = {
                "EMAIL_BACKEND": "anymail.backends.mailgun.EmailBackend",
                "ANYMAIL_MAILGUN_API_KEY": "bench",
                "ANYMAIL_MAILGUN_API_URL": f"{url}/v3",
                "ANYMAIL_MAILGUN_SENDER_DOMAIN": "broadside.example",
            }
        else:
            env = {
                "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
                "ANYMAIL_POSTMARK_SERVER_TOKEN": "bench",
                "ANYMAIL_POSTMARK_API_URL": f"{url}/",
            }
        try:
            baseline = anymail_rate(env, 20)
            print(f"{provider}, {size} subscribers")
            print(f"  reference: anymail, one message per call: {baseline:7.1f} msg/s "
                  "(20 messages)")  # fmt: skip
            report("Broadside", 1, run_send(size, 1, env, tmp, provider), baseline)
        finally:
            fake.stop()


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", default="sink,latency,esp")
    parser.add_argument("--sizes", default="10000,100000", help="for the sink scenario")
    parser.add_argument("--workers", default="1,2", help="for the sink and latency scenarios")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--latency-size", type=int, default=20000)
    parser.add_argument("--esp-latency-ms", type=float, default=50.0)
    parser.add_argument("--esp-size", type=int, default=20000)
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
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
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        message = sample_message()
        print(f"message size: {len(message)} bytes")
        if "sink" in scenarios:
            scenario_sink(sizes, worker_counts, message, tmp)
        if "latency" in scenarios:
            scenario_latency(args.latency_size, worker_counts, args.latency_ms, message, tmp)
        if "esp" in scenarios:
            scenario_esp(args.esp_size, args.esp_latency_ms, tmp)
    finally:
        drop_database()
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
