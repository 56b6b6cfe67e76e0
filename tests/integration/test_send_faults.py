"""A real send through a mail-server outage and through lost database connections.

Real processes on production's configuration (pytest's PostgreSQL test database, Redis
database 4 of the tests' Redis server as broker): two `celery worker -B` processes and a
capturing SMTP server that answers each message's DATA after 5 ms, so chunks are in
flight when the fault lands.
"""

from __future__ import annotations

import collections
import time

import pytest
from django.db import connection

from tests import processes
from tests.fakes.smtp import FakeSMTPServer
from tests.integration.conftest import POSTGRESQL_REDIS, Stack, eligible_addresses, second_copies
from tests.integration.test_send_crash import PUBLISH, READERS, SETUP, SLUG

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ELIGIBLE = eligible_addresses(readers=READERS, paid=50)
CONNECTIONS = 2  # per chunk (of 50), two chunks in flight: one per worker process


@pytest.fixture
def postgresql_stack(tmp_path):
    with processes.flushed_redis(processes.redis_database_url(4)) as broker:
        built = Stack(POSTGRESQL_REDIS, tmp_path / "var", processes.current_database_url(), broker)
        yield built
        built.stop()


@pytest.fixture
def smtp_server():
    server = FakeSMTPServer().start()
    server.data_delay = 0.005
    yield server
    server.stop()


def _start(stack: Stack, smtp: FakeSMTPServer) -> None:
    env = stack.environment(
        EMAIL_URL=smtp.url,
        EMAIL_SEND_CHUNK_SIZE="50",
        EMAIL_SEND_PARALLELISM="2",
        EMAIL_SEND_CONNECTIONS=str(CONNECTIONS),
        EMAIL_CLAIM_TIMEOUT="3",
        EMAIL_SWEEP_INTERVAL="0.5",
        CELERY_VISIBILITY_TIMEOUT="10",
    )
    stack.shell(SETUP, env=env)
    stack.start_worker(name="first", env=env, concurrency=1)
    stack.start_worker(name="second", env=env, concurrency=1)
    stack.shell(PUBLISH, env=env)


def _attempts(stack: Stack) -> list[tuple[str, int, str]]:
    """(status, attempts, last_error) of every delivery of the send."""
    return stack.query(
        "SELECT d.status, d.attempts, d.last_error FROM newsletter_delivery d "  # noqa: S608
        "JOIN newsletter_emailsend s ON s.id = d.send_id "
        f"JOIN newsletter_article a ON a.id = s.article_id WHERE a.slug = '{SLUG}'"
    )


def test_a_mail_server_outage_spends_attempts_only_on_the_messages_actually_tried(
    postgresql_stack, smtp_server
):
    stack = postgresql_stack
    _start(stack, smtp_server)
    stack.wait(lambda: smtp_server.received >= READERS // 4, 60, "a quarter of the mail")

    smtp_server.go_down()  # every connection dropped mid-dialogue, new ones refused
    went_down = time.monotonic()
    time.sleep(4)  # several sweeps restart the send meanwhile; every try is refused
    # A moment with no chunk in flight: a restarted chunk holds its claims (an attempt
    # counted) until it finds the server down and hands them back uncharged.
    deadline = time.monotonic() + 3
    during = _attempts(stack)
    while any(row[0] == "claimed" for row in during) and time.monotonic() < deadline:
        time.sleep(0.02)
        during = _attempts(stack)
    smtp_server.come_back()
    # The messages dropped mid-dialogue wait for their first retry (a minute); let that
    # minute pass.
    stack.wait(
        lambda: (
            not stack.delivery_statuses(slug=SLUG).get("claimed")
            and stack.delivery_statuses(slug=SLUG).get("sent", 0)
            + len([row for row in _attempts(stack) if row[2]])
            >= READERS
        ),
        60,
        "every untried delivery to go out",
    )
    stack.execute("UPDATE newsletter_delivery SET next_attempt_at = NULL")
    stack.wait(lambda: stack.send_row(slug=SLUG)[0] == "sent", 60, "the send to finish")
    finished = time.monotonic() - went_down
    stack.stop()

    waiting = [row for row in during if row[0] != "sent"]
    tried = [row for row in waiting if row[2]]
    received = collections.Counter(smtp_server.recipients())
    duplicates = second_copies(received.elements())
    after = collections.Counter((status, attempts) for status, attempts, _ in _attempts(stack))
    print(
        f"mail-server outage: {READERS} readers, {len(waiting)} waiting during the outage, "
        f"{len(tried)} charged an attempt, missing {len(ELIGIBLE - set(received))}, "
        f"duplicated {len(duplicates)}, outage start to finished {finished:.1f} s"
    )
    assert len(waiting) > READERS // 4, "the outage came after most of the send"
    # Only the messages on the wire when the connections dropped (at most one per
    # connection: a pipelined envelope without its content goes back untried) were
    # charged; everything else waited, untried, at no cost.
    assert 1 <= len(tried) <= 2 * CONNECTIONS
    assert all(attempts == 0 for status, attempts, error in waiting if not error)
    assert all(attempts == 1 and status == "pending" for status, attempts, error in tried)
    assert set(received) == ELIGIBLE
    assert len(duplicates) <= len(tried)  # the server may have taken a dropped message
    assert after == {("sent", 1): READERS - len(tried), ("sent", 2): len(tried)}


def test_lost_database_connections_mid_send_cost_no_second_copies(postgresql_stack, smtp_server):
    stack = postgresql_stack
    _start(stack, smtp_server)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]
    # Every connection to this test run's database but the test's own: the workers'
    # sent-mark helpers, their main connections and the sweeper's.
    terminate = (
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
        f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> {own_pid}"
    )
    terminated = 0
    for share in (4, 2):  # at a quarter and at half of the send
        stack.wait(lambda s=share: smtp_server.received >= READERS // s, 60, "more mail")
        terminated += stack.query(terminate)[0][0]
    started = time.monotonic()
    stack.wait(lambda: stack.send_row(slug=SLUG)[0] == "sent", 90, "the send to finish")
    finished = time.monotonic() - started
    stack.stop()

    received = collections.Counter(smtp_server.recipients())
    duplicates = second_copies(received.elements())
    lost_marks = sum(
        log.read_text(errors="replace").count("could not be recorded as sent") for log in stack.logs
    )
    print(
        f"database connection loss: {READERS} readers, {terminated} connections terminated, "
        f"missing {len(ELIGIBLE - set(received))}, duplicated {len(duplicates)}, "
        f"lost marks {lost_marks}, last termination to finished {finished:.1f} s"
    )
    assert terminated >= 2
    assert set(received) == ELIGIBLE
    assert duplicates == {}
    assert stack.send_row(slug=SLUG) == ("sent", READERS, READERS, 0)
