"""A real send survives `kill -9` of its worker: everyone gets the article exactly once,
and the dead worker's readers get it within seconds of a new worker starting.

Real components, on both configurations (`stack`: PostgreSQL + Redis, SQLite + the
filesystem broker): `celery worker -B` subprocesses (the embedded beat runs the
sweeper), and an aiosmtpd server capturing every message.

Where the kill lands: the one window the design leaves for a duplicate is between the
mail server accepting a message and the worker committing it as sent (documented in
newsletter/services/sending/). To test everything else deterministically, the SMTP
server holds every RCPT TO once enough mail is in, and the worker is killed while it
waits there, mid-chunk, with claimed deliveries outstanding. Their lease (3 s here) is
then no longer renewed, and the sweeper hands them to the second worker.
"""

from __future__ import annotations

import time

import pytest

from tests import processes
from tests.fakes.smtp import FakeSMTPServer
from tests.integration.conftest import (
    audience_setup,
    eligible_addresses,
    publish_script,
    second_copies,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

READERS = 600
HOLD_AFTER = 300
LEASE = 3.0
SWEEP = 0.5
SLUG = "crash-test"

SETUP = audience_setup(readers=READERS, paid=50, slug=SLUG, ineligible_each=5)
PUBLISH = publish_script(SLUG)
# The reader whose delivery is claimed last unsubscribes while the send runs.
LEAVER = f"reader{READERS - 51:04d}@example.com"
UNSUBSCRIBE = (
    "UPDATE subscriptions_subscriber SET status = 'unsubscribed' "  # noqa: S608
    f"WHERE email = '{LEAVER}'"
)


@pytest.fixture
def smtp_server():
    server = FakeSMTPServer().start()
    yield server
    server.release()
    server.stop()


def test_every_eligible_reader_gets_the_article_once_when_a_worker_is_killed_mid_send(
    stack, smtp_server
):
    env = stack.environment(
        EMAIL_URL=smtp_server.url,
        EMAIL_SEND_CHUNK_SIZE="50",
        EMAIL_SEND_PARALLELISM="2",
        EMAIL_CLAIM_TIMEOUT=str(LEASE),
        EMAIL_SWEEP_INTERVAL=str(SWEEP),
        CELERY_VISIBILITY_TIMEOUT="10",
    )
    stack.shell(SETUP, env=env)
    first = stack.start_worker(name="first", env=env)
    smtp_server.hold_after(HOLD_AFTER)
    stack.shell(PUBLISH, env=env)
    assert stack.send_row(slug=SLUG)[1] == READERS

    stack.wait(lambda: smtp_server.received >= 200, 60, "the first 200 emails")
    stack.execute(UNSUBSCRIBE)
    unsubscribed_after = smtp_server.received

    # Mid-send: the server holds every sender before RCPT; once nothing has moved for a
    # while, every accepted message is committed as sent. Kill the worker.
    stack.wait(lambda: smtp_server.held >= 1, 60, "the worker to reach the hold")
    quiet_since, last_seen = time.monotonic(), smtp_server.received
    while time.monotonic() - quiet_since < 0.5:
        if smtp_server.received != last_seen:
            quiet_since, last_seen = time.monotonic(), smtp_server.received
        time.sleep(0.02)
    processes.kill(first)  # the whole process group at once: kill -9 takes every child
    killed_at = time.monotonic()
    received_before_kill = smtp_server.received
    assert received_before_kill < READERS - 1, "the send finished before the kill"
    assert stack.delivery_statuses(slug=SLUG).get("claimed"), "the killed worker held no claims"
    smtp_server.release()

    stack.start_worker(name="second", env=env)
    first_email_at = last_email_at = killed_at
    last_count = smtp_server.received

    def finished() -> bool:
        nonlocal first_email_at, last_email_at, last_count
        if smtp_server.received != last_count:
            last_email_at, last_count = time.monotonic(), smtp_server.received
            if first_email_at == killed_at:
                first_email_at = last_email_at
        return stack.send_row(slug=SLUG)[0] == "sent"

    stack.wait(finished, 60, "the send to finish after the restart")
    recovery, rest = first_email_at - killed_at, last_email_at - killed_at
    stack.stop()

    for log in stack.logs:  # every chunk task ran to its end, none raised
        assert "raised unexpected" not in log.read_text(errors="replace"), log.name

    received = smtp_server.recipients()
    eligible = eligible_addresses(readers=READERS, paid=50)
    duplicates = second_copies(received)
    print(
        f"{stack.name}: {READERS} readers, killed at {received_before_kill}, "
        f"missing {len(eligible - {LEAVER} - set(received))}, duplicated {len(duplicates)}, "
        f"kill to the next email {recovery:.1f} s, to the last {rest:.1f} s (lease {LEASE} s)"
    )
    assert duplicates == {}
    assert set(received) == eligible - {LEAVER}
    assert unsubscribed_after < received_before_kill
    # The dead worker's chunk is handed on within its lease, a sweep and the second
    # worker's start (a few seconds for Celery to boot), not minutes.
    assert recovery < LEASE + 8

    assert stack.send_row(slug=SLUG) == ("sent", READERS, READERS - 1, 0)
    assert stack.delivery_statuses(slug=SLUG) == {"sent": READERS - 1, "skipped": 1}

    # The paid readers got the whole article, the free readers only the free part.
    by_recipient = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    paid_text = by_recipient["paid00@example.com"].message.get_body(("plain",)).get_content()
    free_text = by_recipient["reader0000@example.com"].message.get_body(("plain",)).get_content()
    assert "Paid part." in paid_text
    assert "Paid part." not in free_text
    assert "Free part." in free_text


MARK_BATCH = 10


def test_a_kill_mid_batch_sends_at_most_one_batch_of_marks_twice(stack, smtp_server):
    # Marks wait up to 0.3 s for a batch of ten to fill, so the kill lands with some
    # accepted messages not yet marked: at most MARK_BATCH of them, however many
    # connections the worker process drives.
    smtp_server.data_delay = 0.005
    env = stack.environment(
        EMAIL_URL=smtp_server.url,
        EMAIL_SEND_CHUNK_SIZE="200",
        EMAIL_SEND_PARALLELISM="1",
        EMAIL_SEND_CONNECTIONS="4",
        EMAIL_SEND_MARK_BATCH=str(MARK_BATCH),
        EMAIL_SEND_MARK_INTERVAL="0.3",
        EMAIL_CLAIM_TIMEOUT=str(LEASE),
        EMAIL_SWEEP_INTERVAL=str(SWEEP),
        CELERY_VISIBILITY_TIMEOUT="10",
    )
    stack.shell(SETUP, env=env)
    first = stack.start_worker(name="first", env=env, concurrency=1)
    stack.shell(PUBLISH, env=env)
    stack.wait(lambda: smtp_server.received >= 250, 60, "the first 250 emails")
    processes.kill(first)  # no waiting for a quiet moment: wherever the batch stands
    received_before_kill = smtp_server.received
    assert received_before_kill < READERS, "the send finished before the kill"

    stack.start_worker(name="second", env=env, concurrency=1)
    stack.wait(lambda: stack.send_row(slug=SLUG)[0] == "sent", 60, "the send to finish")
    stack.stop()

    received = smtp_server.recipients()
    duplicates = second_copies(received)
    twice = sum(n - 1 for n in duplicates.values())
    print(
        f"{stack.name}: killed at {received_before_kill} of {READERS}, {twice} second copies "
        f"(batch {MARK_BATCH}, 4 connections)"
    )
    assert twice <= MARK_BATCH
    assert set(received) == eligible_addresses(readers=READERS, paid=50)
    assert stack.send_row(slug=SLUG) == ("sent", READERS, READERS, 0)
    # The pipelined connections shared the chunks: more than one was open at a time.
    assert smtp_server.pipelined > 0
