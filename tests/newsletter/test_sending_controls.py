"""The editors' controls of a send (pause, resume, cancel, the test email): each acts on
its own send only, says why when it cannot, and leaves every other send as it was."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.urls import resolve
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from subscriptions.services.tokens import read_unsubscribe_token
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

PAYWALLED_BODY = '<p>Free opening.</p><hr class="paywall"><p>Paid analysis.</p>'


def make_send(title: str, status: str, readers) -> EmailSend:
    article = ArticleFactory(
        title=title, status=Article.Status.PUBLISHED, published_at=timezone.now()
    )
    email_send = EmailSend.objects.create(
        article=article,
        audience=Article.EmailAudience.EVERYONE,
        status=status,
        recipient_count=len(readers),
    )
    Delivery.objects.bulk_create(Delivery(send=email_send, subscriber=r) for r in readers)
    return email_send


@pytest.fixture
def readers():
    return SubscriberFactory.create_batch(3)


@pytest.fixture
def sends(readers):
    """The send an editor acts on, and others (sending, paused) that must stay as they are."""
    return {
        "this": make_send("This one", EmailSend.Status.SENDING, readers),
        "sending": make_send("Another, sending", EmailSend.Status.SENDING, readers),
        "paused": make_send("Another, paused", EmailSend.Status.PAUSED, readers),
    }


def statuses(email_send: EmailSend) -> set[str]:
    return set(email_send.deliveries.values_list("status", flat=True))


def others_untouched(sends) -> None:
    assert EmailSend.objects.get(pk=sends["sending"].pk).status == EmailSend.Status.SENDING
    assert EmailSend.objects.get(pk=sends["paused"].pk).status == EmailSend.Status.PAUSED
    for key in ("sending", "paused"):
        assert statuses(sends[key]) == {Delivery.Status.PENDING}
        assert EmailSend.objects.get(pk=sends[key].pk).finished_at is None


def test_pausing_a_send_pauses_that_send_only(sends):
    paused = sending.pause_send(email_send=sends["this"])

    assert paused.status == EmailSend.Status.PAUSED
    assert EmailSend.objects.get(pk=sends["this"].pk).status == EmailSend.Status.PAUSED
    others_untouched(sends)


@pytest.mark.parametrize("status", [EmailSend.Status.SENT, EmailSend.Status.PAUSED])
def test_a_send_that_is_not_going_out_cannot_be_paused_and_says_what_it_is(sends, status):
    EmailSend.objects.filter(pk=sends["this"].pk).update(status=status)

    with pytest.raises(sending.SendError) as refused:
        sending.pause_send(email_send=EmailSend.objects.get(pk=sends["this"].pk))

    assert str(refused.value) == (
        f"Only a queued or sending send can be paused (this one is {status})."
    )
    assert EmailSend.objects.get(pk=sends["this"].pk).status == status
    others_untouched(sends)


def test_resuming_a_paused_send_queues_that_send_again_once_committed(
    sends, django_capture_on_commit_callbacks
):
    EmailSend.objects.filter(pk=sends["this"].pk).update(status=EmailSend.Status.PAUSED)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resumed = sending.resume_send(email_send=sends["this"])

    assert resumed.status == EmailSend.Status.QUEUED
    assert len(callbacks) == 1
    others_untouched(sends)


def test_a_send_that_is_not_paused_cannot_be_resumed(sends, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        pytest.raises(sending.SendError) as refused,
    ):
        sending.resume_send(email_send=sends["this"])

    assert str(refused.value) == "Only a paused send can be resumed."
    assert callbacks == []
    assert EmailSend.objects.get(pk=sends["this"].pk).status == EmailSend.Status.SENDING
    others_untouched(sends)


def test_cancelling_skips_what_is_still_waiting_in_that_send_only(sends, readers):
    this = sends["this"]
    claimed = this.deliveries.get(subscriber=readers[0])
    Delivery.objects.filter(pk=claimed.pk).update(status=Delivery.Status.CLAIMED)
    sent = this.deliveries.get(subscriber=readers[1])
    Delivery.objects.filter(pk=sent.pk).update(status=Delivery.Status.SENT)
    before = timezone.now()

    cancelled = sending.cancel_send(email_send=this)

    assert cancelled.status == EmailSend.Status.CANCELLED
    assert before <= cancelled.finished_at <= timezone.now()
    rows = {d.subscriber_id: (d.status, d.last_error) for d in this.deliveries.all()}
    assert rows == {
        # A worker is sending this one: it finishes (or the sweeper skips it later).
        readers[0].pk: (Delivery.Status.CLAIMED, ""),
        readers[1].pk: (Delivery.Status.SENT, ""),
        readers[2].pk: (Delivery.Status.SKIPPED, "The send was cancelled."),
    }
    others_untouched(sends)


def test_a_paused_send_can_be_cancelled(sends):
    paused = sends["paused"]

    assert sending.cancel_send(email_send=paused).status == EmailSend.Status.CANCELLED
    assert statuses(paused) == {Delivery.Status.SKIPPED}
    assert EmailSend.objects.get(pk=sends["sending"].pk).status == EmailSend.Status.SENDING
    assert statuses(sends["sending"]) == {Delivery.Status.PENDING}


@pytest.mark.parametrize(
    "status", [EmailSend.Status.SENT, EmailSend.Status.FAILED, EmailSend.Status.CANCELLED]
)
def test_a_finished_send_cannot_be_cancelled_and_its_deliveries_stay(sends, status):
    finished_at = timezone.now() - timedelta(days=1)
    EmailSend.objects.filter(pk=sends["this"].pk).update(status=status, finished_at=finished_at)

    with pytest.raises(sending.SendError) as refused:
        sending.cancel_send(email_send=sends["this"])

    assert str(refused.value) == "Only a queued, sending or paused send can be cancelled."
    email_send = EmailSend.objects.get(pk=sends["this"].pk)
    assert (email_send.status, email_send.finished_at) == (status, finished_at)
    assert statuses(sends["this"]) == {Delivery.Status.PENDING}
    others_untouched(sends)


def test_a_send_without_a_recipient_address_says_the_editor_has_none():
    article = ArticleFactory()

    with pytest.raises(sending.SendError) as refused:
        sending.send_test_email(article=article, to_email="")

    assert str(refused.value) == "Your user account has no email address to send the test to."
    assert mail.outbox == []


def unsubscribe_link_owner(list_unsubscribe: str) -> int:
    """Whose one-click link a List-Unsubscribe header carries ("<https://...>, <mailto:...>")."""
    one_click = list_unsubscribe.split(",")[0].strip(" <>")
    match = resolve(urlsplit(one_click).path)
    assert match.url_name == "unsubscribe"
    return read_unsubscribe_token(token=match.kwargs["token"])


def test_an_editor_who_reads_the_newsletter_gets_the_test_as_their_own_copy():
    SubscriberFactory(email="someone@example.com", name="Someone Else")
    editor = SubscriberFactory(email="editor@example.com", name="Edith")
    SubscriberFactory(email="another@example.com", name="Another")
    article = ArticleFactory(body=PAYWALLED_BODY, visibility=Article.Visibility.PAID)

    # The account's address as typed, in another case: still the same reader.
    sending.send_test_email(article=article, to_email="Editor@Example.com")

    [message] = mail.outbox
    assert message.to == ["Editor@Example.com"]
    assert "Hi Edith," in message.body
    assert "Hi Edith," in message.alternatives[0][0]
    assert unsubscribe_link_owner(message.extra_headers["List-Unsubscribe"]) == editor.pk
    # Never the Message-ID of a real send's copy to that reader.
    assert message.extra_headers["Message-ID"].startswith(f"<broadside.0.{editor.pk}.")


def test_an_editor_who_is_not_a_reader_gets_the_test_without_a_greeting_or_anyones_link():
    SubscriberFactory(email="someone@example.com", name="Someone Else")
    article = ArticleFactory(body=PAYWALLED_BODY, visibility=Article.Visibility.PAID)

    sending.send_test_email(article=article, to_email="editor@example.com")

    [message] = mail.outbox
    assert "Hi " not in message.body
    assert "Someone Else" not in message.body
    assert "/unsubscribe/" not in message.extra_headers["List-Unsubscribe"]
    assert message.extra_headers["Message-ID"].startswith("<broadside.0.None.")
    assert "Paid analysis." in message.body


def test_retrying_a_sends_failures_gives_them_a_fresh_start_in_that_send_only(
    sends, readers, django_capture_on_commit_callbacks
):
    this, other = sends["this"], sends["sending"]
    yesterday = timezone.now() - timedelta(days=1)
    EmailSend.objects.filter(pk=this.pk).update(
        status=EmailSend.Status.FAILED, finished_at=yesterday, failed_count=2
    )
    for email_send in (this, other):
        email_send.deliveries.filter(subscriber__in=readers[:2]).update(
            status=Delivery.Status.FAILED,
            attempts=sending.MAX_ATTEMPTS,
            next_attempt_at=yesterday,
            last_error="554 5.7.1 Relay access denied",
        )
    this.deliveries.filter(subscriber=readers[2]).update(status=Delivery.Status.SENT, attempts=1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert sending.retry_failed_deliveries(email_send=this) == 2

    assert len(callbacks) == 1  # the send is started again once this commits
    email_send = EmailSend.objects.get(pk=this.pk)
    assert (email_send.status, email_send.finished_at, email_send.failed_count) == (
        EmailSend.Status.QUEUED,
        None,
        0,
    )
    rows = {
        d.subscriber_id: (d.status, d.attempts, d.next_attempt_at) for d in this.deliveries.all()
    }
    assert rows == {
        readers[0].pk: (Delivery.Status.PENDING, 0, None),
        readers[1].pk: (Delivery.Status.PENDING, 0, None),
        readers[2].pk: (Delivery.Status.SENT, 1, None),
    }
    # Another send's failures are its own editor's to retry.
    assert set(other.deliveries.values_list("status", flat=True)) == {
        Delivery.Status.FAILED,
        Delivery.Status.PENDING,
    }
    assert other.deliveries.filter(status=Delivery.Status.FAILED).count() == 2
    assert EmailSend.objects.get(pk=other.pk).status == EmailSend.Status.SENDING


def test_retrying_a_send_without_failures_changes_nothing(
    sends, django_capture_on_commit_callbacks
):
    finished_at = timezone.now() - timedelta(hours=1)
    EmailSend.objects.filter(pk=sends["this"].pk).update(
        status=EmailSend.Status.SENT, finished_at=finished_at
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert sending.retry_failed_deliveries(email_send=sends["this"]) == 0

    assert callbacks == []
    email_send = EmailSend.objects.get(pk=sends["this"].pk)
    assert (email_send.status, email_send.finished_at) == (EmailSend.Status.SENT, finished_at)


@pytest.mark.parametrize("status", [EmailSend.Status.PAUSED, EmailSend.Status.CANCELLED])
def test_a_paused_or_cancelled_sends_failures_are_not_retried(sends, readers, status):
    EmailSend.objects.filter(pk=sends["this"].pk).update(status=status)
    sends["this"].deliveries.filter(subscriber=readers[0]).update(status=Delivery.Status.FAILED)

    with pytest.raises(sending.SendError) as refused:
        sending.retry_failed_deliveries(email_send=sends["this"])

    assert str(refused.value) == f"Resume the send first (it is {status})."
    assert sends["this"].deliveries.filter(status=Delivery.Status.FAILED).count() == 1
