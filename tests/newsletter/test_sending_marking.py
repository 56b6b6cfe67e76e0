"""What a worker writes back at the end of a chunk: only about the deliveries it still
holds, never about those the sweeper or another worker has taken since."""

import threading
import time
from datetime import timedelta

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

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            "2 messages were accepted by the mail server but could not be recorded as sent "
            "(another worker had claimed them again, or the database stayed unreachable); "
            "those readers may get the email twice.",
        )
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


class _Clock:
    """Stands in for the `time` module in marking.py: a monotonic clock that moves only
    when told to, or by the seconds `sleep` is asked for (each recorded)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_write_whose_connection_dropped_is_tried_again_backing_off_until_its_time_is_up(
    monkeypatch, caplog
):
    from django.db import OperationalError

    clock = _Clock()
    monkeypatch.setattr(marking, "time", clock)
    tries = []

    def write():
        tries.append(clock.now)
        raise OperationalError("server closed the connection unexpectedly")

    with (
        caplog.at_level("WARNING", logger="newsletter.services.sending.marking"),
        pytest.raises(OperationalError),
    ):
        marking._reconnecting(write, retry_for=10.0)

    # Doubling from 50 ms up to 2 s; given up once the next wait would end past 10 s.
    assert clock.slept == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    assert len(tries) == 10
    assert clock.now - 1000.0 == pytest.approx(9.15)
    assert {(r.levelname, r.getMessage()) for r in caplog.records} == {
        (
            "WARNING",
            "Database connection lost (server closed the connection unexpectedly); writing again.",
        )
    }
    assert len(caplog.records) == 9


def test_a_write_that_succeeds_once_the_database_is_back_returns_its_answer(monkeypatch):
    from django.db import InterfaceError

    clock = _Clock()
    monkeypatch.setattr(marking, "time", clock)
    tries = []

    def write():
        tries.append(clock.now)
        if len(tries) == 1:
            raise InterfaceError("connection already closed")
        return 7

    assert marking._reconnecting(write, retry_for=1.0) == 7
    assert clock.slept == [0.05]


def test_a_write_is_tried_again_while_the_wait_ends_exactly_at_its_deadline(monkeypatch):
    from django.db import OperationalError

    clock = _Clock(now=0.0)
    monkeypatch.setattr(marking, "time", clock)
    tries = []

    def write():
        tries.append(clock.now)
        raise OperationalError("the database system is starting up")

    with pytest.raises(OperationalError):
        # The second wait (100 ms after the first 50) ends on the deadline itself.
        marking._reconnecting(write, retry_for=0.05 + 0.1)

    assert clock.slept == [0.05, 0.1]
    assert len(tries) == 3


def test_the_claim_is_held_until_half_the_lease_has_passed_since_the_last_renewal(
    claimed, monkeypatch, settings
):
    claim, deliveries = claimed
    settings.EMAIL_CLAIM_TIMEOUT = 10.0
    clock = _Clock()
    monkeypatch.setattr(marking, "time", clock)
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])

    clock.now = 1004.99
    assert keeper.holds_claim()
    clock.now = 1005.0
    assert not keeper.holds_claim()


def test_the_lease_is_renewed_every_fifth_of_its_length(claimed, monkeypatch, settings):
    claim, deliveries = claimed
    settings.EMAIL_CLAIM_TIMEOUT = 10.0
    clock = _Clock()
    monkeypatch.setattr(marking, "time", clock)
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])

    clock.now = 1001.9
    keeper.serve(0)  # not due yet
    clock.now = 1002.0
    keeper.serve(0)  # due: renewed now, so held until five seconds from here

    clock.now = 1006.99
    assert keeper.holds_claim()
    clock.now = 1007.0
    assert not keeper.holds_claim()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_claim_keeper_is_one_daemon_thread_named_claim_keeper():
    others = set(threading.enumerate())

    keeper = marking._ClaimKeeper(claim=sending.Claim(token=1, at=timezone.now()), pks=[])

    assert not keeper.inline
    [thread] = set(threading.enumerate()) - others
    assert thread.name == "claim-keeper"
    # A daemon: a worker that is shutting down is never held up by it.
    assert thread.daemon
    assert keeper.finish() == 0
    assert not thread.is_alive()


def test_marks_are_committed_in_batches_of_at_most_the_batch_size(claimed, settings):
    claim, deliveries = claimed

    def sent():
        return Delivery.objects.filter(status=Delivery.Status.SENT).count()

    settings.EMAIL_SEND_MARK_BATCH = 2
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    for delivery in deliveries[:3]:
        keeper.mark_many([(delivery.pk, f"<{delivery.pk}@x>")])

    assert len(_sent_mark_statements(lambda: keeper.serve(0.01))) == 1
    assert sent() == 2  # the first two; the third waits for the next batch
    assert len(_sent_mark_statements(lambda: keeper.serve(0.01))) == 1
    assert sent() == 3

    assert keeper.finish() == 3


def test_a_batch_size_of_one_commits_each_mark_on_its_own(claimed, settings):
    claim, deliveries = claimed
    settings.EMAIL_SEND_MARK_BATCH = 1
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    for delivery in deliveries[:2]:
        keeper.mark_many([(delivery.pk, f"<{delivery.pk}@x>")])

    keeper.serve(0.01)

    assert Delivery.objects.filter(status=Delivery.Status.SENT).count() == 1
    assert keeper.finish() == 2


def test_a_batch_does_not_wait_for_marks_that_come_after_its_linger(claimed, settings):
    claim, deliveries = claimed
    settings.EMAIL_SEND_MARK_INTERVAL = 0.0
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    first, second = deliveries[:2]
    keeper.mark_many([(first.pk, "<1@x>")])
    late = threading.Timer(0.3, keeper.mark_many, args=([(second.pk, "<2@x>")],))
    late.start()
    try:
        keeper.serve(0)
        assert set(Delivery.objects.filter(status=Delivery.Status.SENT)) == {
            Delivery.objects.get(pk=first.pk)
        }
    finally:
        late.join()
    assert keeper.finish() == 2


def test_a_refusal_is_not_recorded_on_a_row_the_sweeper_has_handed_back(claimed):
    from newsletter.services.sending.refusals import PERMANENT

    claim, deliveries = claimed
    swept, mine = deliveries[:2]
    # The lease ran out: the sweeper made it pending again (the token stays until the
    # next claim), so its outcome is no longer this worker's to write.
    Delivery.objects.filter(pk=swept.pk).update(status=Delivery.Status.PENDING)
    result = marking.ChunkResult()

    marking._record_failures(
        [(swept, PERMANENT, "550 5.7.1 Rejected"), (mine, PERMANENT, "550 5.7.1 Rejected")],
        token=claim.token,
        result=result,
    )

    assert result.failed == 1
    rows = dict(Delivery.objects.filter(pk__in=[swept.pk, mine.pk]).values_list("pk", "status"))
    assert rows == {swept.pk: Delivery.Status.PENDING, mine.pk: Delivery.Status.FAILED}
    assert Delivery.objects.get(pk=swept.pk).last_error == ""


def test_a_bounce_says_the_reader_is_now_marked_bounced_only_when_this_one_marked_them(
    claimed,
):
    from newsletter.services.sending.refusals import BOUNCED
    from subscriptions.models import Subscriber

    claim, deliveries = claimed
    first, again = deliveries[:2]
    # The same mailbox bounced on another send already: that reader is bounced before
    # this chunk records its refusal.
    Subscriber.objects.filter(pk=again.subscriber_id).update(status=Subscriber.Status.BOUNCED)
    result = marking.ChunkResult()

    marking._record_failures(
        [(first, BOUNCED, "550 5.1.1 No such user"), (again, BOUNCED, "550 5.1.1 No such user")],
        token=claim.token,
        result=result,
    )

    assert (result.failed, result.bounced) == (2, 1)
    errors = dict(
        Delivery.objects.filter(pk__in=[first.pk, again.pk]).values_list("pk", "last_error")
    )
    assert errors == {
        first.pk: "550 5.1.1 No such user (the reader is now marked bounced)",
        again.pk: "550 5.1.1 No such user",
    }


def test_a_chunks_outcome_moves_the_sends_last_activity_on(claimed):
    _, deliveries = claimed
    email_send = EmailSend.objects.get(deliveries__pk=deliveries[0].pk)
    long_ago = timezone.now() - timedelta(hours=3)
    EmailSend.objects.filter(pk=email_send.pk).update(last_activity_at=long_ago)

    marking._record_chunk(email_send_id=email_send.pk, result=marking.ChunkResult(sent=1))

    email_send.refresh_from_db()
    assert email_send.last_activity_at > long_ago + timedelta(hours=2)
    assert email_send.sent_count == 1


def test_a_batch_lingers_for_marks_that_come_within_the_interval(claimed, settings):
    claim, deliveries = claimed
    settings.EMAIL_SEND_MARK_INTERVAL = 1.0
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in deliveries])
    first, second = deliveries[:2]
    keeper.mark_many([(first.pk, "<1@x>")])
    soon = threading.Timer(0.1, keeper.mark_many, args=([(second.pk, "<2@x>")],))
    soon.start()
    try:
        statements = _sent_mark_statements(lambda: keeper.serve(0))
    finally:
        soon.join()

    assert len(statements) == 1  # one batch, both marks
    assert Delivery.objects.filter(status=Delivery.Status.SENT).count() == 2
    assert keeper.finish() == 2


@pytest.mark.django_db(transaction=True)
def test_a_claim_keeper_with_nothing_to_write_waits_without_spinning(settings):
    settings.EMAIL_CLAIM_TIMEOUT = 2.5  # a renewal every half second
    keeper = marking._ClaimKeeper(claim=sending.Claim(token=1, at=timezone.now()), pks=[])
    looks = []
    gather = keeper._gather

    def counted(timeout):
        looks.append(timeout)
        return gather(timeout)

    keeper._gather = counted  # seen by the helper thread from its next pass
    try:
        time.sleep(1.0)
    finally:
        keeper.finish()

    # Blocked on its queue until the next renewal is due: a pass or two per renewal,
    # where a spinning thread makes thousands.
    assert len(looks) < 20
