"""What a worker writes back at the end of a chunk: only about the deliveries it still
holds, never about those the sweeper or another worker has taken since."""

import threading
import time

import pytest
from django.db import DatabaseError
from django.db import connection as db_connection
from django.db.backends.signals import connection_created
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from newsletter.services.sending import marking
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def claimed():
    """A sending send of four readers, all claimed by one worker; and that claim."""
    readers = SubscriberFactory.create_batch(4)
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    email_send = EmailSend.objects.create(
        article=article,
        audience=Article.EmailAudience.EVERYONE,
        status=EmailSend.Status.SENDING,
        recipient_count=len(readers),
    )
    Delivery.objects.bulk_create(Delivery(send=email_send, subscriber=r) for r in readers)
    claim, deliveries, _ = sending.claim_chunk(email_send_id=email_send.pk)
    assert len(deliveries) == 4
    return claim, deliveries


def test_releasing_untried_deliveries_touches_only_those_this_worker_still_holds(claimed):
    claim, deliveries = claimed
    mine, swept, taken_over, sent = deliveries
    # The sweeper handed one back (its lease ran out); another worker claimed one again;
    # one went out and was marked.
    Delivery.objects.filter(pk=swept.pk).update(status=Delivery.Status.PENDING)
    Delivery.objects.filter(pk=taken_over.pk).update(claim_token=claim.token + 1)
    assert marking._mark_sent(pk=sent.pk, token=claim.token, provider_message_id="<m@x>")

    released = marking._release(deliveries, token=claim.token)

    assert released == 1
    rows = {
        d.pk: (d.status, d.attempts, d.claim_token)
        for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries])
    }
    assert rows == {
        # Back to pending, and the attempt it never had is not counted.
        mine.pk: (Delivery.Status.PENDING, 0, claim.token),
        # Already pending: its attempt stays counted (it is not released twice).
        swept.pk: (Delivery.Status.PENDING, 1, claim.token),
        taken_over.pk: (Delivery.Status.CLAIMED, 1, claim.token + 1),
        sent.pk: (Delivery.Status.SENT, 1, claim.token),
    }


def test_renewing_the_lease_extends_only_the_rows_this_worker_still_holds(claimed, settings):
    claim, deliveries = claimed
    mine, taken_over, sent, other = deliveries
    Delivery.objects.filter(pk=taken_over.pk).update(claim_token=claim.token + 1)
    assert marking._mark_sent(pk=sent.pk, token=claim.token, provider_message_id="<m@x>")
    before = dict(Delivery.objects.values_list("pk", "lease_expires_at"))
    keeper = marking._ClaimKeeper(claim=claim, pks=[mine.pk, taken_over.pk, sent.pk])
    assert keeper.inline  # the test's transaction: renewed on this connection

    keeper._renew()

    after = dict(Delivery.objects.values_list("pk", "lease_expires_at"))
    assert after[mine.pk] > before[mine.pk]
    # Another worker's lease is theirs to renew; a sent row has no lease to keep; and a
    # row of the chunk this keeper does not hold is left alone.
    assert after[taken_over.pk] == before[taken_over.pk]
    assert after[sent.pk] == before[sent.pk]
    assert after[other.pk] == before[other.pk]


def test_a_worker_stops_holding_its_chunk_once_another_worker_has_claimed_a_row_of_it(
    claimed,
):
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    keeper._renew()
    assert keeper.holds_claim()

    Delivery.objects.filter(pk=deliveries[2].pk).update(claim_token=claim.token + 1)
    keeper._renew()

    assert not keeper.holds_claim()


def test_a_sent_row_does_not_count_as_handed_on(claimed):
    claim, deliveries = claimed
    for delivery in deliveries[:2]:
        assert marking._mark_sent(pk=delivery.pk, token=claim.token, provider_message_id="<m>")
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])

    keeper._renew()

    assert keeper.holds_claim()


def test_a_lease_that_cannot_be_renewed_is_logged_and_the_worker_carries_on_until_it_is_old(
    claimed, monkeypatch, caplog
):
    from django.db import OperationalError

    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    keeper._renew()
    renewed_at = keeper._renewed_at

    def unreachable():
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(marking, "database_now", unreachable)
    with caplog.at_level("WARNING", logger="newsletter.services.sending.marking"):
        keeper._renew()

    assert [r.getMessage() for r in caplog.records] == [
        "The lease of a claimed chunk could not be renewed: "
        "server closed the connection unexpectedly"
    ]
    assert keeper._renewed_at == renewed_at  # not renewed...
    assert keeper.holds_claim()  # ...but not yet half a lease old
    # Inline (on the caller's transaction) the connection is left open for the caller.
    assert Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).count() == 4


@pytest.mark.django_db(transaction=True)
def test_the_helper_thread_that_commits_the_marks_ends_cleanly(monkeypatch, settings):
    import threading

    settings.EMAIL_SEND_PARALLELISM = 0  # nothing queued at publish; this test runs it
    crashed: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    readers = SubscriberFactory.create_batch(3)
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    email_send = EmailSend.objects.create(
        article=article,
        audience=Article.EmailAudience.EVERYONE,
        status=EmailSend.Status.SENDING,
        recipient_count=3,
    )
    Delivery.objects.bulk_create(Delivery(send=email_send, subscriber=r) for r in readers)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 3
    assert crashed == []
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db(transaction=True)
def test_a_mark_that_arrives_while_the_lease_is_being_renewed_is_committed_with_the_rest(
    settings,
):
    """The helper thread renews the lease when its wait for marks runs out; a mark that
    arrives during that renewal is committed, and so is every mark after it.

    Another connection holds the claimed rows locked, so the renewal waits, for as long as
    the test needs, in the instant between the empty wait and the stop check."""
    import threading
    import time

    from django.db import connection, connections, transaction

    settings.EMAIL_CLAIM_TIMEOUT = 1  # a renewal every 0.2 s
    readers = SubscriberFactory.create_batch(3)
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    email_send = EmailSend.objects.create(
        article=article, audience=Article.EmailAudience.EVERYONE, status=EmailSend.Status.SENDING
    )
    Delivery.objects.bulk_create(Delivery(send=email_send, subscriber=r) for r in readers)
    claim, deliveries, _ = sending.claim_chunk(email_send_id=email_send.pk)
    first, second, untouched = deliveries
    locked, release = threading.Event(), threading.Event()

    def hold_the_rows() -> None:
        try:
            with transaction.atomic():
                list(Delivery.objects.select_for_update().filter(send=email_send))
                locked.set()
                release.wait(timeout=60)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_rows)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
        deadline = time.monotonic() + 30
        renewing = False
        while not renewing and time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                renewing = cursor.fetchone()[0] > 0
            time.sleep(0.02)
        assert renewing, "the helper thread never renewed the lease"
        keeper.mark(pk=first.pk, provider_message_id="<first@example.com>")
    finally:
        release.set()
        holder.join(timeout=60)
    keeper.mark(pk=second.pk, provider_message_id="<second@example.com>")

    assert keeper.finish() == 2
    rows = dict(email_send.deliveries.values_list("pk", "provider_message_id"))
    assert rows == {
        first.pk: "<first@example.com>",
        second.pk: "<second@example.com>",
        untouched.pk: "",
    }
    statuses = dict(email_send.deliveries.values_list("pk", "status"))
    assert statuses[untouched.pk] == Delivery.Status.CLAIMED


def test_a_thread_waiting_for_room_in_the_crash_window_gives_up_once_the_claim_is_lost(
    claimed, settings
):
    settings.EMAIL_SEND_MARK_BATCH = 2
    settings.EMAIL_CLAIM_TIMEOUT = 0.2  # held for half of it without a renewal
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    assert keeper.reserve()
    assert keeper.reserve()  # the window is full
    deadline = time.monotonic() + 5
    while keeper.holds_claim() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not keeper.holds_claim()
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(keeper.reserve()), daemon=True)
    try:
        waiting.start()
        # Room comes free only later: the deliveries may already be another worker's.
        time.sleep(0.5)
        keeper.unreserve()
        waiting.join(timeout=5)

        assert answers == [False]
    finally:
        keeper.unreserve(3)  # lets a thread still waiting finish
        waiting.join(timeout=5)


def test_a_batch_of_sent_marks_that_cannot_be_written_is_logged_with_its_error(
    claimed, monkeypatch, caplog
):
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    error = DatabaseError("could not extend file: No space left on device")

    def disk_full(marks, *, token, relaxed=False):
        raise error

    monkeypatch.setattr(marking, "_mark_sent_batch", disk_full)
    assert keeper.reserve()
    keeper.mark(pk=deliveries[0].pk, provider_message_id="<m@x>")
    with caplog.at_level("ERROR", logger="newsletter.services.sending.marking"):
        keeper.serve(0.01)

    failed = [(r.levelname, r.getMessage(), r.exc_info[1]) for r in caplog.records]
    assert failed == [("ERROR", "A batch of sent-marks could not be written.", error)]
    assert not keeper.holds_claim()  # nothing more could be recorded either: stop sending


@pytest.mark.django_db(transaction=True)
def test_the_helper_threads_sent_marks_commit_without_waiting_for_the_wal_flush(claimed):
    claim, deliveries = claimed
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    def watch(sender, connection, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            connection.execute_wrappers.append(record)

    connection_created.connect(watch)
    try:
        keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
        assert not keeper.inline
        assert keeper.reserve()
        keeper.mark(pk=deliveries[0].pk, provider_message_id="<m@x>")
        assert keeper.finish() == 1
    finally:
        connection_created.disconnect(watch)

    marks = [sql for sql in statements if sql.startswith("UPDATE") and "sent_at" in sql]
    assert len(marks) == 1
    assert "set_config('synchronous_commit', 'off', true)" in marks[0]


def _sent_mark_statements(run):
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with db_connection.execute_wrapper(record):
        run()
    return [sql for sql in statements if sql.startswith("UPDATE") and "sent_at" in sql]


def test_sent_marks_written_inside_a_transaction_wait_for_the_flush_as_usual(claimed):
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    assert keeper.inline
    assert keeper.reserve()
    keeper.mark(pk=deliveries[0].pk, provider_message_id="<m@x>")

    marks = _sent_mark_statements(keeper.finish)

    assert len(marks) == 1
    assert "synchronous_commit" not in marks[0]


def test_a_provider_message_id_longer_than_the_column_is_cut_to_fit(claimed):
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    long_id = "<" + "m" * 310 + "@x>"
    assert keeper.reserve()
    keeper.mark(pk=deliveries[0].pk, provider_message_id=long_id)

    assert keeper.finish() == 1
    row = Delivery.objects.get(pk=deliveries[0].pk)
    assert row.status == Delivery.Status.SENT
    assert row.provider_message_id == long_id[:300]


def test_marks_another_worker_took_over_are_counted_as_lost_across_batches(claimed, caplog):
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    first, second, third, _ = deliveries
    Delivery.objects.filter(pk__in=[first.pk, second.pk]).update(claim_token=claim.token + 1)
    for delivery in (first, second, third):
        assert keeper.reserve()
        keeper.mark(pk=delivery.pk, provider_message_id="<m@x>")
        keeper.serve(0.01)  # each mark is its own batch

    with caplog.at_level("ERROR", logger="newsletter.services.sending.marking"):
        assert keeper.finish() == 1

    assert [r.getMessage()[:60] for r in caplog.records] == [
        "2 messages were accepted by the mail server but could not be"
    ]


def test_all_marks_written_log_no_lost_messages(claimed, caplog):
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    for delivery in deliveries[:2]:
        assert keeper.reserve()
        keeper.mark(pk=delivery.pk, provider_message_id="<m@x>")

    with caplog.at_level("ERROR", logger="newsletter.services.sending.marking"):
        assert keeper.finish() == 2

    assert caplog.records == []


def test_marks_of_a_batch_that_cannot_be_written_are_all_counted_as_lost(
    claimed, monkeypatch, caplog
):
    claim, deliveries = claimed
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])

    def disk_full(marks, *, token, relaxed=False):
        raise DatabaseError("could not extend file: No space left on device")

    monkeypatch.setattr(marking, "_mark_sent_batch", disk_full)
    for delivery in deliveries[:2]:
        assert keeper.reserve()
        keeper.mark(pk=delivery.pk, provider_message_id="<m@x>")

    with caplog.at_level("ERROR", logger="newsletter.services.sending.marking"):
        assert keeper.finish() == 0

    assert caplog.records[-1].getMessage().startswith("2 messages were accepted")


def test_a_message_the_server_refused_frees_exactly_its_one_place_in_the_crash_window(
    claimed, settings
):
    claim, deliveries = claimed
    settings.EMAIL_SEND_MARK_BATCH = 1
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    settings.EMAIL_CLAIM_TIMEOUT = 0.4  # a full window gives up once the lease is old
    assert keeper.reserve()
    keeper.unreserve()
    assert keeper.reserve()
    assert not keeper.reserve()
