"""A real send survives `kill -9` of its worker: everyone gets the article exactly once.

Real components, started here: the pytest PostgreSQL database (transactional, so the
worker processes see the rows), Redis as the broker (database 4, flushed before and
after), `celery worker -B` subprocesses (the embedded beat runs the sweeper), and an
aiosmtpd server capturing every message.

Where the kill lands: the one window the design leaves for a duplicate is between the
mail server accepting a message and the worker committing it as sent (documented in
newsletter/services/sending.py). To test everything else deterministically, the SMTP
server holds every RCPT TO once enough mail is in, and the worker is killed while it
waits there, mid-chunk, with claimed deliveries outstanding.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from newsletter.models import Article, Delivery, EmailSend
from subscriptions.models import Subscriber
from tests import processes
from tests.factories import ArticleFactory, MembershipFactory
from tests.fakes.smtp import FakeSMTPServer

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REDIS_URL = processes.redis_database_url(4)
READERS = 2000
PROJECT_DIR = Path(settings.BASE_DIR)


@pytest.fixture
def redis_broker():
    with processes.flushed_redis(REDIS_URL) as url:
        yield url


@pytest.fixture
def smtp_server():
    server = FakeSMTPServer().start()
    yield server
    server.release()
    server.stop()


def _environment(tmp_path: Path, smtp: FakeSMTPServer, broker: str) -> dict[str, str]:
    return processes.worker_environment(
        var_dir=tmp_path / "var",
        broker_url=broker,
        EMAIL_URL=smtp.url,
        EMAIL_SEND_CHUNK_SIZE="50",
        EMAIL_SEND_PARALLELISM="2",
        EMAIL_CLAIM_TIMEOUT="3",
        EMAIL_SWEEP_INTERVAL="1",
        CELERY_VISIBILITY_TIMEOUT="10",
    )


def _start_worker(env: dict[str, str], log: Path, name: str) -> subprocess.Popen[bytes]:
    # Beat embedded in the worker runs the sweeper every EMAIL_SWEEP_INTERVAL seconds.
    return processes.start_celery_worker(
        env=env, log=log, hostname=f"{name}@%h", beat_schedule=log.with_suffix(".schedule")
    )


def _kill(worker: subprocess.Popen[bytes]) -> None:
    processes.kill(worker)  # the whole process group at once: kill -9 takes every child


def _wait(condition, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    tails = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
    pytest.fail(f"Timed out waiting for {what}.\n{tails}")


def test_every_eligible_reader_gets_the_article_once_when_a_worker_is_killed_mid_send(
    tmp_path, redis_broker, smtp_server
):
    Subscriber.objects.bulk_create(
        Subscriber(email=f"reader{i:04d}@example.com", status=Subscriber.Status.ACTIVE)
        for i in range(READERS - 50)
    )
    for i in range(50):
        MembershipFactory(subscriber__email=f"paid{i:02d}@example.com")
    ineligible = Subscriber.objects.bulk_create(
        Subscriber(email=f"{status}{i}@example.com", status=status)
        for status in ("pending", "unsubscribed", "bounced", "complained")
        for i in range(5)
    )
    article = ArticleFactory(
        slug="crash-test",
        body='<p>Free part.</p><hr class="paywall"><p>Paid part.</p>',
        visibility=Article.Visibility.PAID,
    )
    # The reader whose delivery is claimed last unsubscribes while the send runs.
    leaver = Subscriber.objects.filter(status=Subscriber.Status.ACTIVE).order_by("-pk").first()
    eligible = set(
        Subscriber.objects.filter(status=Subscriber.Status.ACTIVE).values_list("email", flat=True)
    )
    assert len(eligible) == READERS

    env = _environment(tmp_path, smtp_server, redis_broker)
    first_log, second_log = tmp_path / "worker1.log", tmp_path / "worker2.log"
    logs = [first_log, second_log]
    first = _start_worker(env, first_log, "first")
    second = None
    try:
        smtp_server.hold_after(700)
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from newsletter.models import Article; "
                "from newsletter.services.publishing import publish_article; "
                "publish_article(article=Article.objects.get(slug='crash-test'))",
            ],
            cwd=PROJECT_DIR,
            env=env,
            check=True,
            timeout=60,
        )
        email_send = EmailSend.objects.get(article=article)
        assert email_send.recipient_count == READERS

        _wait(lambda: smtp_server.received >= 200, 60, "the first 200 emails", logs)
        Subscriber.objects.filter(pk=leaver.pk).update(status=Subscriber.Status.UNSUBSCRIBED)
        unsubscribed_after = smtp_server.received

        # Mid-send: the server holds every sender before RCPT; once nothing has moved
        # for a while, every accepted message is committed as sent. Kill the worker.
        _wait(lambda: smtp_server.held >= 1, 60, "the worker to reach the hold", logs)
        quiet_since, last_seen = time.monotonic(), smtp_server.received
        while time.monotonic() - quiet_since < 0.5:
            if smtp_server.received != last_seen:
                quiet_since, last_seen = time.monotonic(), smtp_server.received
            time.sleep(0.02)
        _kill(first)
        received_before_kill = smtp_server.received
        assert received_before_kill < READERS - 1, "the send finished before the kill"
        claimed = Delivery.objects.filter(send=email_send, status=Delivery.Status.CLAIMED)
        assert claimed.exists(), "the killed worker held no claims"
        smtp_server.release()

        second = _start_worker(env, second_log, "second")
        _wait(
            lambda: EmailSend.objects.get(pk=email_send.pk).status == EmailSend.Status.SENT,
            60,
            "the send to finish after the restart",
            logs,
        )
    finally:
        _kill(first)
        if second is not None:
            _kill(second)

    for log in logs:  # every chunk task ran to its end, none raised
        assert "raised unexpected" not in log.read_text(errors="replace"), log.name

    received = collections.Counter(smtp_server.recipients())
    expected = eligible - {leaver.email}
    duplicates = {email: n for email, n in received.items() if n > 1}
    assert duplicates == {}
    assert set(received) == expected
    assert not set(received) & {s.email for s in ineligible}
    assert leaver.email not in received
    assert unsubscribed_after < received_before_kill

    email_send.refresh_from_db()
    assert email_send.sent_count == READERS - 1
    assert email_send.failed_count == 0
    statuses = collections.Counter(
        Delivery.objects.filter(send=email_send).values_list("status", flat=True)
    )
    assert statuses == {Delivery.Status.SENT: READERS - 1, Delivery.Status.SKIPPED: 1}

    # The paid readers got the whole article, the free readers only the free part.
    by_recipient = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    paid_text = by_recipient["paid00@example.com"].message.get_body(("plain",)).get_content()
    free_text = by_recipient["reader0000@example.com"].message.get_body(("plain",)).get_content()
    assert "Paid part." in paid_text
    assert "Paid part." not in free_text
    assert "Free part." in free_text
