"""The sweeper: what it hands back, restarts and closes, send by send, leaving alone
every send and delivery that does not need it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from newsletter import tasks
from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()


@pytest.fixture
def queued(monkeypatch):
    """The chunk tasks the sweeper queues (by send id), instead of run."""
    calls: list[int] = []
    monkeypatch.setattr(tasks.send_email_chunk, "delay", calls.append)
    return calls


def make_send(status=EmailSend.Status.SENDING, rows=(), **extra) -> EmailSend:
    """A send with one delivery per row: a status, or (status, field overrides)."""
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=NOW)
    email_send = EmailSend.objects.create(
        article=article,
        audience=Article.EmailAudience.EVERYONE,
        status=status,
        recipient_count=len(rows),
    )
    if extra:
        EmailSend.objects.filter(pk=email_send.pk).update(**extra)
        email_send.refresh_from_db()
    for row in rows:
        status_, fields = (row, {}) if isinstance(row, str) else row
        Delivery.objects.create(
            send=email_send, subscriber=SubscriberFactory(), status=status_, **fields
        )
    return email_send


def statuses(email_send):
    return sorted(email_send.deliveries.values_list("status", flat=True))


def idle_for(settings, extra_seconds: int) -> dict:
    return {
        "last_activity_at": NOW - timedelta(seconds=settings.EMAIL_SWEEP_INTERVAL + extra_seconds)
    }


def test_a_queued_send_whose_start_was_lost_is_started_and_a_new_one_is_left(settings, queued):
    interval = timedelta(seconds=settings.EMAIL_SWEEP_INTERVAL)
    lost = make_send(
        status=EmailSend.Status.QUEUED,
        rows=[Delivery.Status.PENDING],
        created_at=NOW - interval - timedelta(seconds=1),
    )
    fresh = make_send(
        status=EmailSend.Status.QUEUED,
        rows=[Delivery.Status.PENDING],
        created_at=NOW - interval + timedelta(seconds=5),
    )

    result = sending.sweep_email_sends(now=NOW)

    assert result.restarted == [lost.pk]
    assert queued == [lost.pk]
    assert EmailSend.objects.get(pk=lost.pk).status == EmailSend.Status.SENDING
    assert EmailSend.objects.get(pk=fresh.pk).status == EmailSend.Status.QUEUED


def test_an_idle_send_with_due_deliveries_is_restarted_and_a_busy_one_is_left(settings, queued):
    settings.EMAIL_SEND_CHUNK_SIZE = 1
    settings.EMAIL_SEND_PARALLELISM = 2
    idle = make_send(rows=[Delivery.Status.PENDING] * 3, **idle_for(settings, 1))
    never_active = make_send(rows=[Delivery.Status.PENDING], last_activity_at=None)
    busy = make_send(rows=[Delivery.Status.PENDING], **idle_for(settings, -5))
    not_due = make_send(
        rows=[(Delivery.Status.PENDING, {"next_attempt_at": NOW + timedelta(minutes=3)})],
        **idle_for(settings, 1),
    )

    result = sending.sweep_email_sends(now=NOW)

    assert sorted(result.restarted) == sorted([idle.pk, never_active.pk])
    # As many chains as the due deliveries need, up to the parallelism.
    assert sorted(queued) == sorted([idle.pk, idle.pk, never_active.pk])
    assert result.finished == []
    for email_send in (busy, not_due):
        assert EmailSend.objects.get(pk=email_send.pk).status == EmailSend.Status.SENDING


def test_a_send_whose_dead_workers_claims_came_back_is_restarted_at_once(settings, queued):
    lease_over = {"lease_expires_at": NOW - timedelta(seconds=1)}
    email_send = make_send(
        rows=[(Delivery.Status.CLAIMED, lease_over)] * 2, **idle_for(settings, -5)
    )

    result = sending.sweep_email_sends(now=NOW)

    assert result.released == 2
    assert result.restarted == [email_send.pk]
    assert queued == [email_send.pk]
    assert statuses(email_send) == [Delivery.Status.PENDING] * 2


def test_a_send_with_a_live_claim_is_left_to_its_worker(settings, queued):
    live = {"lease_expires_at": NOW + timedelta(seconds=5)}
    email_send = make_send(
        rows=[(Delivery.Status.CLAIMED, live), Delivery.Status.PENDING], **idle_for(settings, 60)
    )

    result = sending.sweep_email_sends(now=NOW)

    assert (result.released, result.restarted, result.finished) == (0, [], [])
    assert queued == []
    assert statuses(email_send) == [Delivery.Status.CLAIMED, Delivery.Status.PENDING]


def test_a_claim_without_a_lease_counts_as_expired(settings, queued):
    email_send = make_send(
        rows=[(Delivery.Status.CLAIMED, {"lease_expires_at": None})], **idle_for(settings, -5)
    )

    assert sending.sweep_email_sends(now=NOW).released == 1

    assert statuses(email_send) == [Delivery.Status.PENDING]


def test_a_send_with_nothing_left_is_closed_by_the_sweeper(settings, queued):
    done = make_send(rows=[Delivery.Status.SENT, Delivery.Status.FAILED])
    waiting = make_send(
        rows=[(Delivery.Status.PENDING, {"next_attempt_at": NOW + timedelta(minutes=3)})]
    )

    result = sending.sweep_email_sends(now=NOW)

    assert result.finished == [done.pk]
    assert EmailSend.objects.get(pk=done.pk).status == EmailSend.Status.SENT
    assert EmailSend.objects.get(pk=waiting.pk).status == EmailSend.Status.SENDING
    assert queued == []


def test_only_a_cancelled_sends_leftovers_are_skipped(settings, queued):
    expired = {"lease_expires_at": NOW - timedelta(seconds=1)}
    live = {"lease_expires_at": NOW + timedelta(seconds=5)}
    cancelled = make_send(
        status=EmailSend.Status.CANCELLED,
        rows=[
            Delivery.Status.PENDING,
            (Delivery.Status.CLAIMED, expired),
            (Delivery.Status.CLAIMED, live),  # its worker may still record it
            Delivery.Status.SENT,
        ],
    )
    paused = make_send(
        status=EmailSend.Status.PAUSED,
        rows=[Delivery.Status.PENDING, (Delivery.Status.CLAIMED, live)],
    )

    sending.sweep_email_sends(now=NOW)

    rows = list(cancelled.deliveries.order_by("pk").values_list("status", "last_error"))
    assert rows == [
        (Delivery.Status.SKIPPED, "The send was cancelled."),
        (Delivery.Status.SKIPPED, "The send was cancelled."),
        (Delivery.Status.CLAIMED, ""),
        (Delivery.Status.SENT, ""),
    ]
    assert statuses(paused) == [Delivery.Status.CLAIMED, Delivery.Status.PENDING]
    assert queued == []


def test_each_busy_send_whose_claims_came_back_is_restarted_and_counted(settings, queued):
    lease_over = {"lease_expires_at": NOW - timedelta(seconds=1)}
    live = {"lease_expires_at": NOW + timedelta(seconds=5)}
    first = make_send(rows=[(Delivery.Status.CLAIMED, lease_over)], **idle_for(settings, -5))
    second = make_send(rows=[(Delivery.Status.CLAIMED, lease_over)] * 2, **idle_for(settings, -5))
    # A third send's worker is alive and well: that does not hold the others back.
    make_send(rows=[(Delivery.Status.CLAIMED, live)], **idle_for(settings, -5))

    result = sending.sweep_email_sends(now=NOW)

    assert result.released == 3
    assert sorted(result.restarted) == sorted([first.pk, second.pk])


def test_a_send_idle_for_exactly_the_sweep_interval_is_not_yet_restarted(settings, queued):
    interval = timedelta(seconds=settings.EMAIL_SWEEP_INTERVAL)
    sending_send = make_send(rows=[Delivery.Status.PENDING], last_activity_at=NOW - interval)
    queued_send = make_send(
        status=EmailSend.Status.QUEUED, rows=[Delivery.Status.PENDING], created_at=NOW - interval
    )

    result = sending.sweep_email_sends(now=NOW)

    assert result.restarted == []
    assert queued == []
    assert EmailSend.objects.get(pk=queued_send.pk).status == EmailSend.Status.QUEUED
    assert EmailSend.objects.get(pk=sending_send.pk).status == EmailSend.Status.SENDING


def test_a_queued_send_does_not_stop_the_sweeper_looking_at_the_sends_after_it(settings, queued):
    before = make_send(rows=[Delivery.Status.PENDING], **idle_for(settings, 1))
    make_send(status=EmailSend.Status.QUEUED, rows=[Delivery.Status.PENDING])  # just queued
    after = make_send(rows=[Delivery.Status.PENDING], **idle_for(settings, 1))

    result = sending.sweep_email_sends(now=NOW)

    assert sorted(result.restarted) == sorted([before.pk, after.pk])
