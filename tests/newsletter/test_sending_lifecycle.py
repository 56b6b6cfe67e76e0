"""A send's life between chunks: how many chunk chains start, when a chain goes on, and
when the send is closed, counted from its own deliveries only."""

import pytest
from django.utils import timezone

from newsletter import tasks
from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """The chunk tasks queued (by send id), instead of run: the tests count chains."""
    calls: list[int] = []
    monkeypatch.setattr(tasks.send_email_chunk, "delay", calls.append)
    return calls


def make_send(status=EmailSend.Status.SENDING, rows=(), **extra) -> EmailSend:
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    email_send = EmailSend.objects.create(
        article=article,
        audience=Article.EmailAudience.EVERYONE,
        status=status,
        recipient_count=len(rows),
        **extra,
    )
    Delivery.objects.bulk_create(
        Delivery(send=email_send, subscriber=SubscriberFactory(), status=s) for s in rows
    )
    return email_send


@pytest.fixture
def other_send():
    """Another send, still going: nothing of it may count for the send under test."""
    return make_send(rows=[Delivery.Status.PENDING, Delivery.Status.CLAIMED])


@pytest.mark.parametrize(
    ("deliveries", "chains"),
    [(1, 1), (10, 1), (11, 2), (25, 3), (31, 3), (200, 3)],
)
def test_a_send_starts_one_chain_per_chunk_up_to_the_parallelism(
    settings, queued, other_send, deliveries, chains
):
    settings.EMAIL_SEND_CHUNK_SIZE = 10
    settings.EMAIL_SEND_PARALLELISM = 3
    email_send = make_send(
        status=EmailSend.Status.QUEUED, rows=[Delivery.Status.PENDING] * deliveries
    )

    assert sending.start_send(email_send_id=email_send.pk) == chains

    assert queued == [email_send.pk] * chains
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENDING
    assert email_send.started_at is not None
    assert email_send.last_activity_at == email_send.started_at


def test_a_send_with_nothing_left_to_send_is_closed_when_started(queued, other_send):
    email_send = make_send(status=EmailSend.Status.QUEUED, rows=[Delivery.Status.SENT] * 2)

    assert sending.start_send(email_send_id=email_send.pk) == 0

    assert queued == []
    email_send.refresh_from_db()
    assert (email_send.status, email_send.sent_count) == (EmailSend.Status.SENT, 2)


@pytest.mark.parametrize(
    "status", [EmailSend.Status.PAUSED, EmailSend.Status.CANCELLED, EmailSend.Status.SENT]
)
def test_a_paused_cancelled_or_finished_send_is_not_started(queued, other_send, status):
    email_send = make_send(status=status, rows=[Delivery.Status.PENDING] * 3)

    assert sending.start_send(email_send_id=email_send.pk) == 0

    assert queued == []
    email_send.refresh_from_db()
    assert (email_send.status, email_send.started_at) == (status, None)


def test_starting_a_send_again_keeps_the_time_it_first_started(queued):
    first_start = timezone.now().replace(year=2025)
    email_send = make_send(
        status=EmailSend.Status.QUEUED, rows=[Delivery.Status.PENDING], started_at=first_start
    )

    sending.start_send(email_send_id=email_send.pk)

    email_send.refresh_from_db()
    assert email_send.started_at == first_start
    assert email_send.last_activity_at > first_start


def test_after_a_chunk_with_work_the_chain_goes_on(queued, other_send):
    email_send = make_send(rows=[Delivery.Status.PENDING])

    assert sending.continue_send(email_send_id=email_send.pk, result=sending.ChunkResult(claimed=5))

    assert queued == [email_send.pk]


def test_after_an_empty_chunk_the_chain_ends_and_a_finished_send_is_closed(queued, other_send):
    email_send = make_send(rows=[Delivery.Status.SENT, Delivery.Status.FAILED])

    assert not sending.continue_send(email_send_id=email_send.pk, result=sending.ChunkResult())

    assert queued == []
    assert EmailSend.objects.get(pk=email_send.pk).status == EmailSend.Status.SENT
    assert EmailSend.objects.get(pk=other_send.pk).status == EmailSend.Status.SENDING


def test_after_a_mail_server_outage_the_chain_ends_and_the_send_stays_open(queued):
    email_send = make_send(rows=[Delivery.Status.SENT, Delivery.Status.PENDING])
    result = sending.ChunkResult(claimed=3, released=3, outage="ConnectionRefusedError: ...")

    assert not sending.continue_send(email_send_id=email_send.pk, result=result)

    assert queued == []
    assert EmailSend.objects.get(pk=email_send.pk).status == EmailSend.Status.SENDING


@pytest.mark.parametrize(
    ("rows", "status", "sent", "failed"),
    [
        ([Delivery.Status.SENT, Delivery.Status.SENT, Delivery.Status.SKIPPED], "sent", 2, 0),
        ([Delivery.Status.SENT, Delivery.Status.FAILED], "sent", 1, 1),
        ([Delivery.Status.FAILED, Delivery.Status.FAILED, Delivery.Status.SKIPPED], "failed", 0, 2),
        ([Delivery.Status.SKIPPED], "sent", 0, 0),
    ],
)
def test_a_send_is_closed_with_its_own_counts_once_nothing_waits(
    other_send, rows, status, sent, failed
):
    email_send = make_send(rows=rows, sent_count=99, failed_count=99)

    assert sending.finish_send_if_done(email_send_id=email_send.pk)

    email_send.refresh_from_db()
    assert (email_send.status, email_send.sent_count, email_send.failed_count) == (
        status,
        sent,
        failed,
    )
    assert email_send.finished_at is not None
    assert EmailSend.objects.get(pk=other_send.pk).status == EmailSend.Status.SENDING


@pytest.mark.parametrize("waiting", [Delivery.Status.PENDING, Delivery.Status.CLAIMED])
def test_a_send_with_a_delivery_waiting_or_in_flight_stays_open(waiting):
    email_send = make_send(rows=[Delivery.Status.SENT, waiting])

    assert not sending.finish_send_if_done(email_send_id=email_send.pk)

    email_send.refresh_from_db()
    assert (email_send.status, email_send.finished_at) == (EmailSend.Status.SENDING, None)


@pytest.mark.parametrize("status", [EmailSend.Status.PAUSED, EmailSend.Status.QUEUED])
def test_only_a_sending_send_is_closed(status):
    email_send = make_send(status=status, rows=[Delivery.Status.SENT])

    assert not sending.finish_send_if_done(email_send_id=email_send.pk)

    assert EmailSend.objects.get(pk=email_send.pk).status == status


def test_closing_a_send_that_does_not_exist_does_nothing():
    assert not sending.finish_send_if_done(email_send_id=987654)


def test_with_chunks_of_one_reader_each_delivery_gets_a_chain_up_to_the_parallelism(
    settings, queued
):
    settings.EMAIL_SEND_CHUNK_SIZE = 1
    settings.EMAIL_SEND_PARALLELISM = 4
    email_send = make_send(status=EmailSend.Status.QUEUED, rows=[Delivery.Status.PENDING] * 3)

    assert sending.start_send(email_send_id=email_send.pk) == 3

    assert queued == [email_send.pk] * 3
