"""The progress an editor sees of a send (the admin's live view, `send_status`): counted
from the send's own deliveries, never another send's."""

from datetime import timedelta

import pytest
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)


def make_send(*, status=EmailSend.Status.SENDING, rows=(), title="The one in question", **extra):
    """A send with one delivery per (status, sent_at, last_error) row, each to its own reader."""
    article = ArticleFactory(title=title, status=Article.Status.PUBLISHED, published_at=NOW)
    email_send = EmailSend.objects.create(
        article=article,
        audience=Article.EmailAudience.EVERYONE,
        status=status,
        recipient_count=len(rows),
        **extra,
    )
    for status_, sent_at, error in rows:
        Delivery.objects.create(
            send=email_send,
            subscriber=SubscriberFactory(),
            status=status_,
            sent_at=sent_at,
            last_error=error,
        )
    return email_send


@pytest.fixture
def other_send():
    """Another article's send, busy at the same moment: none of it may be counted."""
    return make_send(
        title="Another article",
        rows=[
            (Delivery.Status.SENT, NOW - timedelta(seconds=5), ""),
            (Delivery.Status.SENT, NOW - timedelta(seconds=5), ""),
            (Delivery.Status.FAILED, None, "554 other send's error"),
            (Delivery.Status.PENDING, None, "451 other send's retry"),
            (Delivery.Status.SKIPPED, None, "The reader is unsubscribed."),
            (Delivery.Status.CLAIMED, None, ""),
        ],
    )


def test_progress_counts_each_status_of_this_send_only(other_send):
    email_send = make_send(
        rows=[
            (Delivery.Status.SENT, NOW - timedelta(seconds=10), ""),
            (Delivery.Status.SENT, NOW - timedelta(seconds=20), ""),
            (Delivery.Status.SENT, NOW - timedelta(seconds=30), ""),
            (Delivery.Status.FAILED, None, "550 Unknown user"),
            (Delivery.Status.SKIPPED, None, "The reader is unsubscribed."),
            (Delivery.Status.SKIPPED, None, "The reader is bounced."),
            (Delivery.Status.PENDING, None, ""),
            (Delivery.Status.CLAIMED, None, ""),
            (Delivery.Status.CLAIMED, None, ""),
        ],
    )

    progress = sending.send_progress(email_send=email_send, now=NOW)

    assert progress.email_send_id == email_send.pk
    assert progress.article_title == "The one in question"
    assert progress.status == EmailSend.Status.SENDING
    assert progress.recipients == 9
    counts = (progress.sent, progress.failed, progress.skipped, progress.pending, progress.claimed)
    assert counts == (3, 1, 2, 1, 2)
    assert progress.done == 6
    assert progress.percent == pytest.approx(100 * 6 / 9)
    assert progress.last_sent_at == NOW - timedelta(seconds=10)


def test_while_sending_the_rate_is_the_messages_sent_in_the_last_minute(other_send):
    email_send = make_send(
        rows=[
            (Delivery.Status.SENT, NOW, ""),
            (Delivery.Status.SENT, NOW - timedelta(seconds=59), ""),
            (Delivery.Status.SENT, NOW - timedelta(minutes=1), ""),  # a minute ago: counts
            (Delivery.Status.SENT, NOW - timedelta(seconds=61), ""),
            (Delivery.Status.SENT, NOW - timedelta(minutes=10), ""),
        ],
    )

    progress = sending.send_progress(email_send=email_send, now=NOW)

    assert progress.rate_per_minute == 3.0


def test_a_finished_sends_rate_is_its_average_from_first_to_last_message(other_send):
    email_send = make_send(
        status=EmailSend.Status.SENT,
        rows=[
            (Delivery.Status.SENT, NOW - timedelta(minutes=30), ""),
            (Delivery.Status.SENT, NOW - timedelta(minutes=29), ""),
            (Delivery.Status.SENT, NOW - timedelta(minutes=28), ""),
            (Delivery.Status.SENT, NOW - timedelta(minutes=26), ""),
            (Delivery.Status.FAILED, None, "550 Unknown user"),
        ],
    )

    progress = sending.send_progress(email_send=email_send, now=NOW)

    # Four messages over the four minutes from the first to the last.
    assert progress.rate_per_minute == pytest.approx(1.0)
    assert progress.last_sent_at == NOW - timedelta(minutes=26)


def test_a_finished_send_whose_messages_all_went_out_in_one_instant_counts_them_per_second():
    email_send = make_send(
        status=EmailSend.Status.SENT,
        rows=[(Delivery.Status.SENT, NOW - timedelta(hours=1), "")] * 2,
    )

    progress = sending.send_progress(email_send=email_send, now=NOW)

    # Two messages in (at most) a second: 120 a minute, not a division by zero.
    assert progress.rate_per_minute == pytest.approx(120.0)


def test_a_paused_send_is_rated_over_its_whole_send_and_one_without_messages_at_zero():
    paused = make_send(
        status=EmailSend.Status.PAUSED,
        rows=[
            (Delivery.Status.SENT, NOW - timedelta(minutes=12), ""),
            (Delivery.Status.SENT, NOW - timedelta(minutes=10), ""),
            (Delivery.Status.PENDING, None, ""),
        ],
    )
    nothing_yet = make_send(
        status=EmailSend.Status.SENT, rows=[(Delivery.Status.FAILED, None, "x")]
    )

    assert sending.send_progress(email_send=paused, now=NOW).rate_per_minute == pytest.approx(1.0)
    assert sending.send_progress(email_send=nothing_yet, now=NOW).rate_per_minute == 0.0


def test_recent_errors_are_this_sends_failures_and_retries_newest_first(other_send):
    email_send = make_send(
        rows=[
            (Delivery.Status.FAILED, None, "550 first failure"),
            (Delivery.Status.PENDING, None, "451 waiting to retry"),
            (Delivery.Status.SKIPPED, None, "The reader is unsubscribed."),
            (Delivery.Status.SENT, NOW, ""),
            (Delivery.Status.PENDING, None, ""),
            (Delivery.Status.FAILED, None, "554 latest failure"),
        ],
    )
    emails = dict(email_send.deliveries.values_list("last_error", "subscriber__email"))

    progress = sending.send_progress(email_send=email_send, now=NOW)

    assert progress.recent_errors == [
        (emails["554 latest failure"], "554 latest failure"),
        (emails["451 waiting to retry"], "451 waiting to retry"),
        (emails["550 first failure"], "550 first failure"),
    ]


def test_recent_errors_stop_at_the_last_ten():
    email_send = make_send(
        rows=[(Delivery.Status.FAILED, None, f"550 failure {n}") for n in range(12)],
    )

    errors = sending.send_progress(email_send=email_send, now=NOW).recent_errors

    assert [error for _, error in errors] == [f"550 failure {n}" for n in range(11, 1, -1)]


def test_a_send_to_nobody_is_complete():
    email_send = make_send(status=EmailSend.Status.SENT, rows=[])

    progress = sending.send_progress(email_send=email_send, now=NOW)

    assert (progress.done, progress.percent) == (0, 100.0)
    assert progress.as_dict()["percent"] == 100.0


def test_the_progress_as_json_names_every_count_and_time(other_send):
    started = NOW - timedelta(minutes=5)
    email_send = make_send(
        rows=[
            (Delivery.Status.SENT, NOW - timedelta(seconds=1), ""),
            (Delivery.Status.SENT, NOW - timedelta(seconds=2), ""),
            (Delivery.Status.FAILED, None, "550 Unknown user"),
            (Delivery.Status.SKIPPED, None, "The reader is bounced."),
            (Delivery.Status.PENDING, None, ""),
            (Delivery.Status.CLAIMED, None, ""),
        ],
        started_at=started,
    )
    failed_email = email_send.deliveries.get(status=Delivery.Status.FAILED).subscriber.email

    assert sending.send_progress(email_send=email_send, now=NOW).as_dict() == {
        "id": email_send.pk,
        "status": "sending",
        "recipients": 6,
        "pending": 1,
        "claimed": 1,
        "sent": 2,
        "failed": 1,
        "skipped": 1,
        "percent": 66.7,
        "rate_per_minute": 2.0,
        "started_at": started.isoformat(),
        "finished_at": None,
        "recent_errors": [{"email": failed_email, "error": "550 Unknown user"}],
    }


def test_a_finished_sends_json_has_its_finish_time_and_a_rounded_rate():
    finished = NOW - timedelta(minutes=1)
    email_send = make_send(
        status=EmailSend.Status.SENT,
        rows=[
            (Delivery.Status.SENT, NOW - timedelta(minutes=4), ""),
            (Delivery.Status.SENT, NOW - timedelta(minutes=1), ""),
        ],
        started_at=None,
        finished_at=finished,
    )

    as_json = sending.send_progress(email_send=email_send, now=NOW).as_dict()

    assert as_json["finished_at"] == finished.isoformat()
    assert as_json["started_at"] is None
    assert as_json["rate_per_minute"] == 0.7  # two messages in three minutes
    assert as_json["percent"] == 100.0


def test_the_percent_is_rounded_to_one_decimal():
    email_send = make_send(
        rows=[(Delivery.Status.SENT, NOW, "")] + [(Delivery.Status.PENDING, None, "")] * 2,
    )

    as_json = sending.send_progress(email_send=email_send, now=NOW).as_dict()

    assert as_json["percent"] == 33.3
    assert as_json["rate_per_minute"] == 1.0
