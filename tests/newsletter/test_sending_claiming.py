"""Claiming a chunk: which deliveries a worker takes, in what order, and what it
writes on them; readers re-checked at claim time, each by their own state."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from subscriptions.models import Membership, Subscriber
from tests.factories import ArticleFactory, MembershipFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


def make_send(*, audience=Article.EmailAudience.EVERYONE, status=EmailSend.Status.SENDING):
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    return EmailSend.objects.create(article=article, audience=audience, status=status)


def deliver(email_send, subscriber, segment=Delivery.Segment.FREE, **fields):
    return Delivery.objects.create(
        send=email_send, subscriber=subscriber, segment=segment, **fields
    )


def test_a_claimed_chunk_is_oldest_first_even_when_the_database_reads_it_in_storage_order():
    email_send = make_send()
    rows = [deliver(email_send, reader) for reader in SubscriberFactory.create_batch(4)]
    # An update writes a row's new version at the end of the table.
    Delivery.objects.filter(pk=rows[0].pk).update(last_error="touched")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # what a fresh table's plan does: no index
            cursor.execute("SET LOCAL enable_indexscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")

    _, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk, size=4)

    assert [d.pk for d in claimed] == [row.pk for row in rows]


def test_a_claim_takes_the_oldest_due_deliveries_of_that_send_up_to_its_size(settings):
    email_send, other = make_send(), make_send()
    readers = SubscriberFactory.create_batch(5)
    rows = [deliver(email_send, r) for r in readers]
    deliver(other, readers[0])
    now = sending.database_now()
    Delivery.objects.filter(pk=rows[0].pk).update(next_attempt_at=now + timedelta(minutes=1))
    Delivery.objects.filter(pk=rows[1].pk).update(next_attempt_at=now - timedelta(seconds=1))
    Delivery.objects.filter(pk=rows[2].pk).update(status=Delivery.Status.SENT)

    _, claimed, skipped = sending.claim_chunk(email_send_id=email_send.pk, size=2)

    # rows[0] is not due yet and rows[2] is sent: the next two due, oldest first.
    assert [d.pk for d in claimed] == [rows[1].pk, rows[3].pk]
    assert skipped == 0
    assert claimed[0].email == readers[1].email
    assert claimed[0].subscriber_id == readers[1].pk
    assert claimed[0].name == readers[1].name
    assert claimed[0].segment == Delivery.Segment.FREE
    assert set(other.deliveries.values_list("status", flat=True)) == {Delivery.Status.PENDING}


def test_a_retry_due_this_very_moment_is_claimed(settings):
    email_send = make_send()
    now = sending.database_now()
    row = deliver(email_send, SubscriberFactory(), next_attempt_at=now)

    _, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk, now=now)

    assert [d.pk for d in claimed] == [row.pk]


def test_a_claim_writes_the_workers_token_lease_and_attempt_on_each_row(settings):
    settings.EMAIL_CLAIM_TIMEOUT = 30
    email_send = make_send()
    rows = [
        deliver(email_send, r, attempts=n) for n, r in enumerate(SubscriberFactory.create_batch(2))
    ]
    untouched = deliver(email_send, SubscriberFactory())
    now = sending.database_now()

    claim, _, _ = sending.claim_chunk(email_send_id=email_send.pk, size=2, now=now)

    assert claim.at == now
    for n, row in enumerate(rows):
        row.refresh_from_db()
        assert row.status == Delivery.Status.CLAIMED
        assert (row.claim_token, row.claimed_at) == (claim.token, now)
        assert row.lease_expires_at == now + timedelta(seconds=30)
        assert row.attempts == n + 1
    untouched.refresh_from_db()
    assert (untouched.status, untouched.claim_token, untouched.attempts) == (
        Delivery.Status.PENDING,
        None,
        0,
    )
    email_send.refresh_from_db()
    assert email_send.last_activity_at == now


def test_the_chunk_size_defaults_to_the_setting(settings):
    settings.EMAIL_SEND_CHUNK_SIZE = 3
    email_send = make_send()
    for reader in SubscriberFactory.create_batch(5):
        deliver(email_send, reader)

    _, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)

    assert len(claimed) == 3


@pytest.mark.parametrize(
    "status", [EmailSend.Status.QUEUED, EmailSend.Status.PAUSED, EmailSend.Status.CANCELLED]
)
def test_nothing_is_claimed_from_a_send_that_is_not_sending(status):
    email_send = make_send(status=status)
    busy = make_send()  # another send, sending at the same time
    reader = SubscriberFactory()
    deliver(email_send, reader)
    deliver(busy, reader)

    _, claimed, skipped = sending.claim_chunk(email_send_id=email_send.pk)

    assert (claimed, skipped) == ([], 0)
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"pending"}
    assert set(busy.deliveries.values_list("status", flat=True)) == {"pending"}


def test_a_send_with_nothing_due_gives_nothing_and_skips_nothing():
    email_send = make_send()
    later, done = SubscriberFactory.create_batch(2)
    deliver(email_send, later, next_attempt_at=timezone.now() + timedelta(minutes=5))
    deliver(email_send, done, status=Delivery.Status.SENT)

    _, claimed, skipped = sending.claim_chunk(email_send_id=email_send.pk)

    assert (claimed, skipped) == ([], 0)


def test_readers_who_left_since_publishing_are_skipped_each_with_their_reason():
    email_send = make_send()
    staying = SubscriberFactory()
    left = {
        status: SubscriberFactory(status=status)
        for status in ("unsubscribed", "bounced", "complained")
    }
    rows = {"staying": deliver(email_send, staying)} | {
        status: deliver(email_send, reader) for status, reader in left.items()
    }

    _, claimed, skipped = sending.claim_chunk(email_send_id=email_send.pk)

    assert [d.pk for d in claimed] == [rows["staying"].pk]
    assert skipped == 3
    for status in left:
        row = Delivery.objects.get(pk=rows[status].pk)
        assert (row.status, row.last_error) == (Delivery.Status.SKIPPED, f"The reader is {status}.")
        assert row.attempts == 0
    assert Delivery.objects.get(pk=rows["staying"].pk).status == Delivery.Status.CLAIMED


def test_a_reader_whose_paid_access_ended_gets_the_free_email_and_the_others_keep_theirs():
    email_send = make_send()
    still_paid = MembershipFactory().subscriber
    lapsed = MembershipFactory(status=Membership.Status.CANCELED).subscriber
    free = SubscriberFactory()
    rows = {
        "still_paid": deliver(email_send, still_paid, Delivery.Segment.PAID),
        "lapsed": deliver(email_send, lapsed, Delivery.Segment.PAID),
        "free": deliver(email_send, free),
    }

    _, claimed, skipped = sending.claim_chunk(email_send_id=email_send.pk)

    assert skipped == 0
    segments = {d.pk: d.segment for d in claimed}
    assert segments == {
        rows["still_paid"].pk: Delivery.Segment.PAID,
        rows["lapsed"].pk: Delivery.Segment.FREE,
        rows["free"].pk: Delivery.Segment.FREE,
    }
    stored = dict(email_send.deliveries.values_list("pk", "segment"))
    assert stored == segments
    by_pk = {d.pk: d for d in claimed}
    assert by_pk[rows["lapsed"].pk].email == lapsed.email


def test_a_paid_only_send_skips_only_the_reader_whose_access_ended():
    email_send = make_send(audience=Article.EmailAudience.PAID)
    still_paid = MembershipFactory().subscriber
    lapsed = MembershipFactory(status=Membership.Status.CANCELED).subscriber
    unsubscribed = MembershipFactory(subscriber__status=Subscriber.Status.UNSUBSCRIBED).subscriber
    rows = {
        "still_paid": deliver(email_send, still_paid, Delivery.Segment.PAID),
        "lapsed": deliver(email_send, lapsed, Delivery.Segment.PAID),
        "unsubscribed": deliver(email_send, unsubscribed, Delivery.Segment.PAID),
    }

    _, claimed, skipped = sending.claim_chunk(email_send_id=email_send.pk)

    assert [(d.pk, d.segment) for d in claimed] == [(rows["still_paid"].pk, Delivery.Segment.PAID)]
    assert skipped == 2
    statuses = {
        pk: (status, error)
        for pk, status, error in email_send.deliveries.values_list("pk", "status", "last_error")
    }
    assert statuses == {
        rows["still_paid"].pk: (Delivery.Status.CLAIMED, ""),
        rows["lapsed"].pk: (Delivery.Status.SKIPPED, "The reader no longer has paid access."),
        rows["unsubscribed"].pk: (Delivery.Status.SKIPPED, "The reader is unsubscribed."),
    }
    assert email_send.deliveries.get(pk=rows["lapsed"].pk).segment == Delivery.Segment.PAID


def test_paid_access_is_judged_at_the_claims_own_time():
    """A claim made for a later moment (`now`) treats a membership that has ended by then
    as ended, and one that has not as still paid."""
    email_send = make_send()
    now = sending.database_now()
    ends_soon = MembershipFactory(
        kind=Membership.Kind.COMP, plan=None, expires_at=now + timedelta(hours=1)
    ).subscriber
    ends_later = MembershipFactory(
        kind=Membership.Kind.COMP, plan=None, expires_at=now + timedelta(hours=3)
    ).subscriber
    rows = {
        "ends_soon": deliver(email_send, ends_soon, Delivery.Segment.PAID),
        "ends_later": deliver(email_send, ends_later, Delivery.Segment.PAID),
    }

    _, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk, now=now + timedelta(hours=2))

    assert {d.pk: d.segment for d in claimed} == {
        rows["ends_soon"].pk: Delivery.Segment.FREE,
        rows["ends_later"].pk: Delivery.Segment.PAID,
    }


def test_claims_are_timed_by_the_database_clock_not_the_workers(monkeypatch):
    """A worker whose own clock runs an hour behind still claims at the database's time,
    so the sweeper (on another machine) does not take its lease for an old one."""
    from django.db import connection

    email_send = make_send()
    row = deliver(email_send, SubscriberFactory())
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        before = cursor.fetchone()[0]
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(hours=1))

    claim, _, _ = sending.claim_chunk(email_send_id=email_send.pk)

    monkeypatch.undo()
    row.refresh_from_db()
    assert before <= claim.at < before + timedelta(minutes=5)
    assert row.claimed_at == claim.at
