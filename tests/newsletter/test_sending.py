import smtplib
import threading
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends import locmem
from django.utils import timezone

from newsletter import tasks
from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from newsletter.services.publishing import publish_article
from newsletter.services.sending import handover, marking, refusals
from publication.models import Publication
from subscriptions.models import Membership, Subscriber
from tests.factories import ArticleFactory, MembershipFactory, SubscriberFactory
from tests.fakes.smtp import FakeSMTPServer

pytestmark = pytest.mark.django_db

PAYWALLED_BODY = '<p>Free opening.</p><hr class="paywall"><p>Paid analysis.</p>'


@pytest.fixture
def smtp_server(settings):
    server = FakeSMTPServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = server.host
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.stop()


@pytest.fixture
def readers():
    """Two free readers, one paid reader, and addresses that must never get email."""
    free = SubscriberFactory.create_batch(2)
    paid = MembershipFactory(subscriber__email="paid@example.com").subscriber
    ineligible = [
        SubscriberFactory(email=f"{status}@example.com", status=status)
        for status in ("pending", "unsubscribed", "bounced", "complained")
    ]
    return {"free": free, "paid": paid, "ineligible": ineligible}


def mark_sending(email_send):
    """What start_send does, without queueing chunk tasks (tests run chunks by hand)."""
    EmailSend.objects.filter(pk=email_send.pk).update(
        status=EmailSend.Status.SENDING, started_at=timezone.now()
    )


def publish(article, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = publish_article(article=article)
    return result, callbacks


def test_publishing_creates_one_pending_delivery_per_active_subscriber_with_its_segment(
    readers, django_capture_on_commit_callbacks
):
    article = ArticleFactory(body=PAYWALLED_BODY, visibility=Article.Visibility.PAID)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = publish_article(article=article)

    email_send = result.email_send
    assert email_send is not None
    assert email_send.status == EmailSend.Status.QUEUED
    assert email_send.recipient_count == 3
    segments = dict(email_send.deliveries.values_list("subscriber__email", "segment"))
    assert segments == {
        readers["free"][0].email: "free",
        readers["free"][1].email: "free",
        "paid@example.com": "paid",
    }
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"pending"}
    # The work is queued only once the transaction commits (the page cache's callback
    # renews its keys then too).
    queued = [c for c in callbacks if c.__module__ != "newsletter.services.page_cache"]
    assert len(queued) == 1


def test_paid_audience_narrows_the_send_to_paid_readers(readers):
    MembershipFactory(subscriber__email="lapsed@example.com", status=Membership.Status.CANCELED)
    article = ArticleFactory(email_audience=Article.EmailAudience.PAID)

    email_send = publish_article(article=article).email_send

    assert email_send is not None
    emails = list(email_send.deliveries.values_list("subscriber__email", flat=True))
    assert emails == ["paid@example.com"]


def test_publishing_without_email_creates_no_send(readers):
    article = ArticleFactory()
    result = publish_article(article=article, send_email=False)

    assert result.email_send is None
    assert not EmailSend.objects.exists()
    assert not Delivery.objects.exists()


def test_publishing_twice_never_creates_a_second_send(readers):
    article = ArticleFactory()
    first = publish_article(article=article).email_send
    assert first is not None

    publish_article(article=article)
    again = sending.create_email_send(article=Article.objects.get(pk=article.pk))

    assert EmailSend.objects.count() == 1
    assert again == first
    assert Delivery.objects.count() == 3


def test_a_send_to_an_empty_list_is_finished_at_once():
    before = timezone.now()
    email_send = publish_article(article=ArticleFactory()).email_send

    assert email_send is not None
    email_send.refresh_from_db()
    assert email_send.recipient_count == 0
    assert email_send.status == EmailSend.Status.SENT
    assert before <= email_send.finished_at <= timezone.now()


def test_publishing_emails_every_eligible_reader_once_and_finishes_the_send(
    readers, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_SEND_CHUNK_SIZE = 1  # several chunks, chained through the tasks
    article = ArticleFactory(body=PAYWALLED_BODY, visibility=Article.Visibility.PAID)

    result, _ = publish(article, django_capture_on_commit_callbacks)

    recipients = sorted(m.to[0] for m in mail.outbox)
    assert recipients == sorted([r.email for r in readers["free"]] + ["paid@example.com"])
    email_send = EmailSend.objects.get(pk=result.email_send.pk)
    assert email_send.status == EmailSend.Status.SENT
    assert (email_send.sent_count, email_send.failed_count) == (3, 0)
    assert email_send.started_at is not None and email_send.finished_at is not None
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}
    assert all(d.provider_message_id.startswith("<broadside.") for d in email_send.deliveries.all())


def test_free_readers_get_the_text_before_the_paywall_and_paid_readers_all_of_it(
    readers, django_capture_on_commit_callbacks, plans_on_sale
):
    article = ArticleFactory(body=PAYWALLED_BODY, visibility=Article.Visibility.PAID)
    publish(article, django_capture_on_commit_callbacks)

    by_recipient = {m.to[0]: m for m in mail.outbox}
    paid = by_recipient["paid@example.com"]
    free = by_recipient[readers["free"][0].email]
    for message in (paid, free):
        assert "Free opening." in message.body
        assert "Free opening." in message.alternatives[0][0]
    assert "Paid analysis." in paid.body
    assert "Paid analysis." in paid.alternatives[0][0]
    assert "Paid analysis." not in free.body
    assert "Paid analysis." not in free.alternatives[0][0]
    # The plain text, whose links are never rewritten (the html's go through /r/).
    assert "/upgrade/" in free.body
    assert "/upgrade/" not in paid.body


def test_unsubscribe_mid_send_skips_the_readers_remaining_delivery(readers):
    email_send = publish_article(article=ArticleFactory()).email_send
    leaver = readers["free"][1]
    Subscriber.objects.filter(pk=leaver.pk).update(status=Subscriber.Status.UNSUBSCRIBED)
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.skipped) == (2, 1)
    assert leaver.email not in [m.to[0] for m in mail.outbox]
    skipped = Delivery.objects.get(send=email_send, subscriber=leaver)
    assert skipped.status == Delivery.Status.SKIPPED
    assert "unsubscribed" in skipped.last_error


def test_a_reader_whose_paid_access_ended_mid_send_gets_the_free_email(readers):
    article = ArticleFactory(body=PAYWALLED_BODY, visibility=Article.Visibility.PAID)
    email_send = publish_article(article=article).email_send
    Membership.objects.filter(subscriber=readers["paid"]).update(status=Membership.Status.CANCELED)
    mark_sending(email_send)

    sending.send_chunk(email_send_id=email_send.pk)

    by_recipient = {m.to[0]: m for m in mail.outbox}
    assert len(by_recipient) == 3
    lapsed = by_recipient["paid@example.com"]
    assert "Free opening." in lapsed.body
    assert "Paid analysis." not in lapsed.body
    assert "Paid analysis." not in lapsed.alternatives[0][0]
    delivery = Delivery.objects.get(send=email_send, subscriber=readers["paid"])
    assert (delivery.segment, delivery.status) == (Delivery.Segment.FREE, Delivery.Status.SENT)


def test_a_paid_only_send_skips_a_reader_whose_paid_access_ended_mid_send(readers):
    article = ArticleFactory(email_audience=Article.EmailAudience.PAID)
    email_send = publish_article(article=article).email_send
    Membership.objects.filter(subscriber=readers["paid"]).update(status=Membership.Status.CANCELED)
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.skipped) == (0, 1)
    assert mail.outbox == []
    delivery = Delivery.objects.get(send=email_send)
    assert delivery.status == Delivery.Status.SKIPPED
    assert "paid access" in delivery.last_error


def test_a_chunk_goes_out_over_one_smtp_connection(readers, smtp_server):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 3
    assert smtp_server.received == 3
    assert smtp_server.connections == 1


def test_recipients_the_server_refuses_permanently_fail_and_the_rest_are_delivered(
    readers, smtp_server
):
    refused = readers["free"][0].email
    smtp_server.refuse(refused, code=550, text="No such mailbox")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)
    sending.continue_send(email_send_id=email_send.pk, result=result)

    assert (result.sent, result.failed) == (2, 1)
    assert sorted(smtp_server.recipients()) == sorted(
        [readers["free"][1].email, "paid@example.com"]
    )
    failed = Delivery.objects.get(send=email_send, subscriber__email=refused)
    assert failed.status == Delivery.Status.FAILED
    assert failed.last_error.startswith("550")
    assert "No such mailbox" in failed.last_error
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENT
    assert (email_send.sent_count, email_send.failed_count) == (2, 1)


def test_a_refused_recipient_does_not_cost_the_chunk_its_connection(readers, smtp_server):
    smtp_server.refuse(readers["free"][0].email, code=550)
    smtp_server.refuse(readers["free"][1].email, code=452)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (1, 1, 1)
    assert smtp_server.connections == 1


def test_a_421_answer_reconnects_and_the_rest_of_the_chunk_goes_out(readers, smtp_server):
    # smtplib closes the connection on 421 (service closing the channel, RFC 5321).
    closing = readers["free"][0].email  # the first in claim order: two follow it
    smtp_server.refuse(closing, code=421, text="Too many messages, closing", times=1)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.retrying, result.failed) == (2, 1, 0)
    assert smtp_server.connections == 2
    assert Delivery.objects.get(subscriber__email=closing).status == Delivery.Status.PENDING


def test_a_temporary_refusal_is_retried_with_backoff_and_then_delivered(readers, smtp_server):
    greylisted = readers["free"][0].email
    smtp_server.refuse(greylisted, code=451, text="Greylisted, try later", times=1)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    first = sending.send_chunk(email_send_id=email_send.pk)

    assert (first.sent, first.retrying, first.failed) == (2, 1, 0)
    waiting = Delivery.objects.get(send=email_send, subscriber__email=greylisted)
    assert waiting.status == Delivery.Status.PENDING
    assert waiting.attempts == 1
    assert "451" in waiting.last_error
    assert waiting.next_attempt_at > timezone.now() + timedelta(seconds=30)
    # Not due yet: nothing is claimed and the send is not finished.
    assert sending.send_chunk(email_send_id=email_send.pk).claimed == 0
    assert not sending.finish_send_if_done(email_send_id=email_send.pk)

    # When it comes due, the sweeper restarts the send and the retry goes out.
    later = timezone.now() + timedelta(minutes=2)
    EmailSend.objects.filter(pk=email_send.pk).update(last_activity_at=later - timedelta(hours=1))
    swept = sending.sweep_email_sends(now=later)
    assert swept.restarted == [email_send.pk]
    Delivery.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now())
    tasks.send_email_chunk.delay(email_send.pk)

    waiting.refresh_from_db()
    assert waiting.status == Delivery.Status.SENT
    assert waiting.attempts == 2
    assert smtp_server.recipients().count(greylisted) == 1
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENT


def test_a_mail_server_that_is_down_hands_the_chunk_back_untried_without_spending_attempts(
    readers, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = 9  # nothing listens on the discard port
    settings.EMAIL_TIMEOUT = 2
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.retrying, result.released) == (0, 0, 3)
    assert "ConnectionRefusedError" in result.outage
    rows = list(email_send.deliveries.values_list("status", "attempts", "next_attempt_at"))
    assert rows == [(Delivery.Status.PENDING, 0, None)] * 3
    # The chain stops instead of claiming the same deliveries again at once; the
    # sweeper restarts the send once it has been idle for a sweep interval.
    assert not sending.continue_send(email_send_id=email_send.pk, result=result)


def test_a_connection_dropped_mid_chunk_charges_the_message_tried_and_releases_the_rest(
    readers, smtp_server
):
    # The second message's connection is dropped and the server is gone for the reconnect.
    addresses = [r.email for r in readers["free"]] + ["paid@example.com"]  # claim order
    smtp_server.refuse(addresses[1], code=421, text="Shutting down")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    def connections():
        from django.core.mail import get_connection

        connection = get_connection()
        opened = 0
        original_open = connection.open

        def open_once():
            nonlocal opened
            opened += 1
            if opened > 1:
                raise ConnectionRefusedError(111, "Connection refused")
            return original_open()

        connection.open = open_once
        return connection

    result = sending.send_chunk(email_send_id=email_send.pk, connection_factory=connections)

    assert (result.sent, result.retrying, result.released) == (1, 1, 1)
    assert "Connection refused" in result.outage
    rows = dict(email_send.deliveries.values_list("subscriber__email", "attempts"))
    assert rows == {addresses[0]: 1, addresses[1]: 1, addresses[2]: 0}
    tried = Delivery.objects.get(send=email_send, subscriber__email=addresses[1])
    assert (tried.status, tried.last_error) == (Delivery.Status.PENDING, "421 Shutting down")
    assert tried.next_attempt_at is not None


def test_temporary_failures_become_permanent_after_the_last_attempt(readers, smtp_server):
    stubborn = readers["free"][0].email
    smtp_server.refuse(stubborn, code=452, text="Mailbox full")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    Delivery.objects.filter(subscriber__email=stubborn).update(attempts=sending.MAX_ATTEMPTS - 1)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.failed == 1
    delivery = Delivery.objects.get(subscriber__email=stubborn)
    assert delivery.status == Delivery.Status.FAILED
    assert delivery.attempts == sending.MAX_ATTEMPTS


def test_stale_claims_of_a_dead_worker_go_back_to_pending_and_are_sent_once(readers, settings):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    # A worker claims the chunk, then dies before sending anything.
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    assert len(claimed) == 3
    assert sending.send_chunk(email_send_id=email_send.pk).claimed == 0  # nothing left to claim

    lease = timedelta(seconds=settings.EMAIL_CLAIM_TIMEOUT)
    swept_early = sending.sweep_email_sends(now=claim.at + lease - timedelta(seconds=1))
    assert swept_early.released == 0
    later = claim.at + lease + timedelta(seconds=1)
    swept = sending.sweep_email_sends(now=later)

    assert swept.released == 3
    assert swept.restarted == [email_send.pk]
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        [r.email for r in readers["free"]] + ["paid@example.com"]
    )
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENT


def test_a_worker_whose_clock_runs_behind_keeps_its_claims_from_the_sweeper(readers, monkeypatch):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    an_hour_behind = timezone.now() - timedelta(hours=1)
    with monkeypatch.context() as patch:  # the worker's machine
        patch.setattr(timezone, "now", lambda: an_hour_behind)
        _, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    assert len(claimed) == 3

    swept = sending.sweep_email_sends()  # on a machine with the right time

    assert swept.released == 0
    assert email_send.deliveries.filter(status=Delivery.Status.CLAIMED).count() == 3


def test_a_worker_whose_claim_was_handed_on_does_not_record_it_as_its_own(readers):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    Delivery.objects.filter(send=email_send).update(claim_token=claim.token + 1)

    assert not marking._mark_sent(pk=claimed[0].pk, token=claim.token, provider_message_id="<x@y>")
    assert Delivery.objects.get(pk=claimed[0].pk).status == Delivery.Status.CLAIMED


def test_a_sent_mark_written_again_after_its_answer_was_lost_still_counts(readers):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)

    assert marking._mark_sent(pk=claimed[0].pk, token=claim.token, provider_message_id="<x@y>")
    assert marking._mark_sent(pk=claimed[0].pk, token=claim.token, provider_message_id="<x@y>")

    assert Delivery.objects.get(pk=claimed[0].pk).status == Delivery.Status.SENT


def test_a_slow_workers_mark_still_counts_when_its_swept_claim_was_not_taken_again(
    readers, settings
):
    settings.EMAIL_SEND_PARALLELISM = 0  # the sweeper queues no chunk that could reclaim
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    later = claim.at + timedelta(seconds=settings.EMAIL_CLAIM_TIMEOUT + 1)
    assert sending.sweep_email_sends(now=later).released == 3

    # The slow worker's message was accepted meanwhile: its mark must stop a second copy.
    assert marking._mark_sent(pk=claimed[0].pk, token=claim.token, provider_message_id="<a@b>")

    delivery = Delivery.objects.get(pk=claimed[0].pk)
    assert delivery.status == Delivery.Status.SENT
    _, reclaimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    assert {d.pk for d in reclaimed} == {d.pk for d in claimed[1:]}
    # Once claimed again, the first worker's late mark no longer counts.
    assert not marking._mark_sent(pk=claimed[1].pk, token=claim.token, provider_message_id="<c@d>")


def test_a_failure_on_a_claim_taken_over_is_not_counted_by_the_worker_that_lost_it(readers):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    refused = next(d for d in claimed if d.email == readers["free"][0].email)
    Delivery.objects.filter(pk=refused.pk).update(claim_token=claim.token + 1)
    result = sending.ChunkResult()

    marking._record_failures(
        [(refused, sending.PERMANENT, "554 5.7.1 x")], token=claim.token, result=result
    )

    assert (result.failed, result.retrying) == (0, 0)
    assert Delivery.objects.get(pk=refused.pk).status == Delivery.Status.CLAIMED


def test_a_worker_releases_what_it_cannot_send_before_its_claim_goes_stale(readers, settings):
    settings.EMAIL_CLAIM_TIMEOUT = 0
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.released) == (0, 3)
    assert mail.outbox == []
    pending = email_send.deliveries.filter(status=Delivery.Status.PENDING)
    assert pending.count() == 3
    assert set(pending.values_list("attempts", flat=True)) == {0}


def test_a_chunk_finishing_after_another_worker_closed_the_send_is_not_counted_twice(readers):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    for delivery in claimed:  # this worker's marks are committed...
        marking._mark_sent(pk=delivery.pk, token=claim.token, provider_message_id="<m@x>")
    # ...and another chain, finding nothing left, closes the send from the ledger
    assert sending.finish_send_if_done(email_send_id=email_send.pk)

    marking._record_chunk(email_send_id=email_send.pk, result=sending.ChunkResult(sent=3))

    email_send.refresh_from_db()
    assert (email_send.status, email_send.sent_count) == (EmailSend.Status.SENT, 3)


def test_pausing_stops_workers_claiming_and_resuming_finishes_the_send(
    readers, django_capture_on_commit_callbacks
):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    sending.pause_send(email_send=email_send)

    assert sending.send_chunk(email_send_id=email_send.pk).claimed == 0
    assert mail.outbox == []
    started_at = EmailSend.objects.get(pk=email_send.pk).started_at

    with django_capture_on_commit_callbacks(execute=True):
        sending.resume_send(email_send=email_send)

    assert len(mail.outbox) == 3
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENT
    assert email_send.started_at == started_at  # the send's start, not the resume's


def test_cancelling_skips_every_delivery_not_yet_sent(readers):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    sending.cancel_send(email_send=email_send)

    assert sending.send_chunk(email_send_id=email_send.pk).claimed == 0
    assert mail.outbox == []
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"skipped"}
    with pytest.raises(sending.SendError):
        sending.pause_send(email_send=email_send)


def test_deliveries_a_worker_hands_back_after_a_cancel_are_skipped_by_the_sweeper(
    readers, settings
):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk, size=2)
    sending.cancel_send(email_send=email_send)  # while that chunk is being sent
    # The worker records a temporary failure (back to pending); another one died.
    Delivery.objects.filter(pk=claimed[0].pk).update(status=Delivery.Status.PENDING)
    later = claim.at + timedelta(seconds=settings.EMAIL_CLAIM_TIMEOUT + 1)

    sending.sweep_email_sends(now=later)

    statuses = set(email_send.deliveries.values_list("status", flat=True))
    assert statuses == {Delivery.Status.SKIPPED}
    assert mail.outbox == []


def test_retrying_failed_deliveries_sends_them_again(
    readers, smtp_server, django_capture_on_commit_callbacks
):
    refused = readers["free"][0].email
    smtp_server.refuse(refused, code=554, text="5.7.1 Relay access denied", times=1)
    email_send = publish_article(article=ArticleFactory()).email_send
    with django_capture_on_commit_callbacks(execute=True):
        tasks.start_email_send.delay(email_send.pk)
    email_send.refresh_from_db()
    assert email_send.failed_count == 1

    with django_capture_on_commit_callbacks(execute=True):
        assert sending.retry_failed_deliveries(email_send=email_send) == 1

    assert smtp_server.recipients().count(refused) == 1
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENT
    assert (email_send.sent_count, email_send.failed_count) == (3, 0)


def test_progress_counts_the_ledger_and_reports_recent_errors(readers, smtp_server):
    smtp_server.refuse(readers["free"][0].email, code=550, text="Unknown user")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    sending.send_chunk(email_send_id=email_send.pk, size=2)

    progress = sending.send_progress(email_send=email_send)

    assert (progress.sent, progress.failed, progress.pending) == (1, 1, 1)
    assert progress.rate_per_minute == 1
    assert progress.recent_errors == [
        (readers["free"][0].email, "550 Unknown user (the reader is now marked bounced)")
    ]
    assert progress.as_dict()["percent"] == pytest.approx(66.7)


def test_test_email_goes_only_to_the_editor_with_the_whole_article(readers):
    article = ArticleFactory(body=PAYWALLED_BODY, visibility=Article.Visibility.PAID)

    sending.send_test_email(article=article, to_email="editor@example.com")

    assert [m.to for m in mail.outbox] == [["editor@example.com"]]
    assert mail.outbox[0].subject.startswith("[Test] ")
    assert "Paid analysis." in mail.outbox[0].body
    assert not EmailSend.objects.exists()
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_sent_marks_are_committed_by_a_helper_connection(readers, settings):
    settings.EMAIL_SEND_PARALLELISM = 0  # publishing queues no chunk; this test runs one
    email_send = publish_article(article=ArticleFactory()).email_send
    assert EmailSend.objects.get(pk=email_send.pk).status == EmailSend.Status.SENDING

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.claimed, result.sent) == (3, 3)
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}
    assert len(mail.outbox) == 3


@pytest.mark.django_db(transaction=True)
def test_a_relaxed_sent_mark_leaves_synchronous_commit_as_it_was_on_the_connection(readers):
    from django.db import connection

    settings_before = _synchronous_commit(connection)
    email_send = EmailSend.objects.create(article=ArticleFactory())
    delivery = Delivery.objects.create(
        send=email_send,
        subscriber=readers["paid"],
        status=Delivery.Status.CLAIMED,
        claimed_at=timezone.now(),
        claim_token=12345,
    )

    assert marking._mark_sent(
        pk=delivery.pk, token=12345, provider_message_id="<m@x>", relaxed=True
    )

    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.SENT
    assert _synchronous_commit(connection) == settings_before == "on"


def _synchronous_commit(connection):
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.1.1 <x>: Recipient address rejected: User unknown"),
        (550, "5.1.0 Address rejected"),
        (550, "5.2.1 The email account that you tried to reach is disabled"),
        (553, "5.1.3 Bad recipient address syntax"),
        (550, "Mailbox unavailable"),
        (551, "User not local"),
    ],
)
def test_a_refusal_saying_the_mailbox_does_not_exist_marks_the_reader_bounced(
    readers, smtp_server, code, text
):
    gone = readers["free"][0]
    smtp_server.refuse(gone.email, code=code, text=text)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.bounced) == (2, 1, 1)
    gone.refresh_from_db()
    assert gone.status == Subscriber.Status.BOUNCED
    assert text in gone.status_reason
    delivery = Delivery.objects.get(send=email_send, subscriber=gone)
    assert delivery.status == Delivery.Status.FAILED
    assert delivery.last_error == f"{code} {text} (the reader is now marked bounced)"
    # The next article is not offered to that address.
    next_send = publish_article(article=ArticleFactory()).email_send
    assert not next_send.deliveries.filter(subscriber=gone).exists()


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.7.1 Message rejected as spam"),
        (550, "5.7.26 Unauthenticated email is not accepted from this domain"),
        (552, "5.2.2 Mailbox full"),
        (552, "5.3.4 Message too big"),
        (550, "5.1.8 Bad sender's system address"),
    ],
)
def test_a_refusal_about_the_message_or_sender_fails_the_delivery_without_blaming_the_reader(
    readers, smtp_server, code, text
):
    reader = readers["free"][0]
    smtp_server.refuse(reader.email, code=code, text=text)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.bounced) == (2, 1, 0)
    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.ACTIVE
    delivery = Delivery.objects.get(send=email_send, subscriber=reader)
    assert (delivery.status, delivery.last_error) == (Delivery.Status.FAILED, f"{code} {text}")


def test_a_refused_message_at_data_is_not_taken_for_a_missing_mailbox():
    kind, error = refusals._classify(smtplib.SMTPDataError(550, b"Message content rejected"))
    assert (kind, error) == (sending.PERMANENT, "550 Message content rejected")
    refused_sender = smtplib.SMTPSenderRefused(553, b"5.1.1 Sender unknown", "news@x.test")
    assert refusals._classify(refused_sender)[0] == sending.PERMANENT


def test_an_expired_lease_goes_back_to_pending_and_a_renewed_one_stays(readers, settings):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    expiring, _, _ = sending.claim_chunk(email_send_id=email_send.pk, size=1)
    renewed, _, _ = sending.claim_chunk(email_send_id=email_send.pk, size=1)
    lease = timedelta(seconds=settings.EMAIL_CLAIM_TIMEOUT)
    later = expiring.at + lease + timedelta(seconds=1)
    Delivery.objects.filter(claim_token=renewed.token).update(lease_expires_at=later + lease)

    swept = sending.sweep_email_sends(now=later)

    assert swept.released == 1
    statuses = dict(email_send.deliveries.values_list("claim_token", "status"))
    assert statuses[expiring.token] == Delivery.Status.PENDING
    assert statuses[renewed.token] == Delivery.Status.CLAIMED


@pytest.mark.django_db(transaction=True)
def test_a_live_worker_renews_its_lease_while_it_waits_on_a_slow_mail_server(readers, settings):
    settings.EMAIL_CLAIM_TIMEOUT = 1
    settings.EMAIL_SEND_PARALLELISM = 0
    email_send = publish_article(article=ArticleFactory()).email_send
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in claimed])
    try:
        time.sleep(1.6)  # longer than the lease, as one slow SMTP dialogue could take

        assert sending.sweep_email_sends().released == 0
        assert keeper.holds_claim()
        leases = set(email_send.deliveries.values_list("lease_expires_at", flat=True))
        assert min(leases) > claim.at + timedelta(seconds=1)
    finally:
        keeper.finish()
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"claimed"}


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_lease_was_handed_on_stops_sending_from_the_chunk(readers, settings):
    settings.EMAIL_CLAIM_TIMEOUT = 1
    settings.EMAIL_SEND_PARALLELISM = 0
    email_send = publish_article(article=ArticleFactory()).email_send
    claim, claimed, _ = sending.claim_chunk(email_send_id=email_send.pk)
    keeper = marking._ClaimKeeper(claim=claim, pks=[d.pk for d in claimed])
    try:
        # The sweeper took one delivery back (the worker had stalled past its lease).
        Delivery.objects.filter(pk=claimed[0].pk).update(status=Delivery.Status.PENDING)
        deadline = time.monotonic() + 2
        while keeper.holds_claim() and time.monotonic() < deadline:
            time.sleep(0.05)

        assert not keeper.holds_claim()
    finally:
        keeper.finish()


def test_a_server_that_drops_every_message_stops_the_chunk_after_two_tries(readers, smtp_server):
    # It accepts connections, then closes the channel on every message (421).
    for reader in [*readers["free"], readers["paid"]]:
        smtp_server.refuse(reader.email, code=421, text="4.3.2 Try again later")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.retrying, result.released) == (0, 2, 1)
    assert result.outage.startswith("421")
    attempts = sorted(email_send.deliveries.values_list("attempts", flat=True))
    assert attempts == [0, 1, 1]


def test_parallel_connections_share_a_chunk_without_sending_anything_twice(smtp_server, settings):
    settings.EMAIL_SEND_CONNECTIONS = 4
    readers = SubscriberFactory.create_batch(150)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk, size=150)

    assert result.sent == 150
    assert smtp_server.connections == 4
    received = smtp_server.recipients()
    assert sorted(received) == sorted(r.email for r in readers)  # each once
    # Pipelined: MAIL FROM, RCPT TO and DATA (and the previous content) in one write.
    assert smtp_server.pipelined >= 150 - 4
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}
    # Each reader's Message-ID is the one recorded on their delivery.
    ids = dict(email_send.deliveries.values_list("subscriber__email", "provider_message_id"))
    assert {m.rcpt_tos[0]: m.message["Message-ID"] for m in smtp_server.messages} == ids


def test_a_server_without_pipelining_gets_one_command_at_a_time(readers, settings):
    with FakeSMTPServer(offer_pipelining=False) as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
        email_send = publish_article(article=ArticleFactory()).email_send
        mark_sending(email_send)

        result = sending.send_chunk(email_send_id=email_send.pk)

        assert result.sent == 3
        assert server.pipelined == 0
        assert len(server.messages) == 3


def test_pipelined_refusals_are_recorded_per_reader_and_the_rest_go_out(smtp_server, settings):
    settings.EMAIL_SEND_CONNECTIONS = 1
    readers = SubscriberFactory.create_batch(6)
    smtp_server.refuse(readers[1].email, code=550, text="5.1.1 No such user")
    smtp_server.refuse(readers[3].email, code=451, text="4.3.0 Try later")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying, result.bounced) == (4, 1, 1, 1)
    assert smtp_server.pipelined > 0
    assert sorted(smtp_server.recipients()) == sorted(
        r.email for i, r in enumerate(readers) if i not in (1, 3)
    )
    statuses = dict(email_send.deliveries.values_list("subscriber__email", "status"))
    assert statuses[readers[1].email] == Delivery.Status.FAILED
    assert statuses[readers[3].email] == Delivery.Status.PENDING


def test_a_421_after_a_pipelined_message_hands_the_next_envelope_back_untried(
    smtp_server, settings
):
    settings.EMAIL_SEND_CONNECTIONS = 1
    readers = SubscriberFactory.create_batch(4)
    # The server closes the channel at the end of the second message's content, while
    # the third's envelope is already on its way.
    smtp_server.refuse(readers[1].email, code=421, text="4.3.2 Closing", times=1, at_data=True)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.retrying, result.released) == (3, 1, 0)
    assert smtp_server.connections == 2  # reconnected for the rest
    assert sorted(smtp_server.recipients()) == sorted(
        r.email for i, r in enumerate(readers) if i != 1
    )
    rows = dict(email_send.deliveries.values_list("subscriber__email", "status"))
    assert rows[readers[1].email] == Delivery.Status.PENDING
    assert rows[readers[2].email] == Delivery.Status.SENT


def test_a_reader_the_prepared_message_cannot_serve_gets_one_built_for_them_over_pipelining(
    smtp_server, settings
):
    settings.EMAIL_SEND_CONNECTIONS = 1
    plain = SubscriberFactory(name="Ann")
    # A line separator in the name: the prepared bytes cannot carry it, so this reader's
    # message is built field by field instead, on the same pipelined connection.
    unusual = SubscriberFactory(name="Bea\u2028Cole")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 2
    assert smtp_server.connections == 1
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert set(received) == {plain.email, unusual.email}
    ids = dict(email_send.deliveries.values_list("subscriber__email", "provider_message_id"))
    for reader in (plain, unusual):
        message = received[reader.email].message
        assert message["Message-ID"] == ids[reader.email]
        assert message["To"] == reader.email
        assert b"\r\n\r\n" in received[reader.email].data  # CRLF line ends on the wire
    assert ids[unusual.email].startswith(f"<broadside.{email_send.pk}.{unusual.pk}.")
    text = received[unusual.email].message.get_body(("plain",)).get_content()
    assert "Hi Bea" in text


def test_without_pipelining_each_reader_gets_their_own_message_and_id_prepared_or_built(
    settings,
):
    with FakeSMTPServer(offer_pipelining=False) as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
        settings.EMAIL_SEND_CONNECTIONS = 1
        plain = SubscriberFactory(name="Ann")
        unusual = SubscriberFactory(name="Bea\u2028Cole")  # not for the prepared bytes
        email_send = publish_article(article=ArticleFactory()).email_send
        mark_sending(email_send)

        result = sending.send_chunk(email_send_id=email_send.pk)

        assert result.sent == 2
        received = {m.rcpt_tos[0]: m.message for m in server.messages}
    ids = dict(email_send.deliveries.values_list("subscriber__email", "provider_message_id"))
    for reader in (plain, unusual):
        assert received[reader.email]["Message-ID"] == ids[reader.email]
        assert ids[reader.email].startswith(f"<broadside.{email_send.pk}.{reader.pk}.")
    assert "Hi Ann," in received[plain.email].get_body(("plain",)).get_content()
    assert "Hi Bea" in received[unusual.email].get_body(("plain",)).get_content()


def test_without_pipelining_refusals_are_recorded_per_reader_and_the_rest_go_out(settings):
    with FakeSMTPServer(offer_pipelining=False) as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
        settings.EMAIL_SEND_CONNECTIONS = 1
        readers = SubscriberFactory.create_batch(6)  # claimed in this order
        server.refuse(readers[0].email, code=550, text="5.1.1 No such user")
        server.refuse(readers[1].email, code=451, text="4.3.0 Try later")
        server.refuse(readers[3].email, code=421, text="4.3.2 Closing", times=1)
        email_send = publish_article(article=ArticleFactory()).email_send
        mark_sending(email_send)

        result = sending.send_chunk(email_send_id=email_send.pk)

        # The 421 closes the connection: one reconnect, and the rest go out.
        assert server.connections == 2
        assert sorted(server.recipients()) == sorted(
            r.email for r in readers[2:] if r != readers[3]
        )
    assert (result.sent, result.failed, result.retrying, result.bounced) == (3, 1, 2, 1)
    rows = {d.subscriber_id: (d.status, d.last_error) for d in email_send.deliveries.all()}
    assert rows[readers[0].pk] == (
        Delivery.Status.FAILED,
        "550 5.1.1 No such user (the reader is now marked bounced)",
    )
    assert rows[readers[1].pk] == (Delivery.Status.PENDING, "451 4.3.0 Try later")
    assert rows[readers[3].pk] == (Delivery.Status.PENDING, "421 4.3.2 Closing")
    assert {rows[r.pk] for r in (readers[2], readers[4], readers[5])} == {
        (Delivery.Status.SENT, "")
    }


def test_through_a_backend_without_smtp_each_message_carries_the_sends_id():
    readers = SubscriberFactory.create_batch(2)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 2
    ids = dict(email_send.deliveries.values_list("subscriber__email", "provider_message_id"))
    for reader in readers:
        [message] = [m for m in mail.outbox if m.to == [reader.email]]
        assert message.extra_headers["Message-ID"] == ids[reader.email]
        assert ids[reader.email].startswith(f"<broadside.{email_send.pk}.{reader.pk}.")


def test_a_connection_lost_at_ehlo_with_no_message_is_named_in_the_outage(readers, smtp_server):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    def connections():
        from django.core.mail import get_connection

        connection = get_connection()
        original_open = connection.open

        def open_then_lose_at_ehlo():
            opened = original_open()

            def reset():
                raise ConnectionResetError  # no text, as some TLS layers raise it

            connection.connection.ehlo_or_helo_if_needed = reset
            return opened

        connection.open = open_then_lose_at_ehlo
        return connection

    result = sending.send_chunk(email_send_id=email_send.pk, connection_factory=connections)

    assert (result.sent, result.retrying, result.released) == (0, 0, 3)
    assert result.outage == "ConnectionResetError"
    assert smtp_server.connections == 2  # reconnected once, then gave up


def test_an_address_the_server_cannot_take_fails_alone_and_the_rest_of_the_chunk_goes_out(
    smtp_server,
):
    # The server offers pipelining but not SMTPUTF8: this local part cannot be sent there.
    # (Signing up refuses such an address; this row was written by hand in the database.)
    unsendable = Subscriber.objects.create(
        email="jürgen@example.com", status=Subscriber.Status.ACTIVE, confirmed_at=timezone.now()
    )
    others = SubscriberFactory.create_batch(2)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.released) == (2, 0)
    assert sorted(smtp_server.recipients()) == sorted(r.email for r in others)
    tried = Delivery.objects.get(send=email_send, subscriber=unsendable)
    assert tried.status != Delivery.Status.SENT
    assert "SMTPUTF8" in tried.last_error


def test_a_backend_that_cannot_be_built_is_an_outage_named_by_its_error(readers, caplog):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    def cannot_be_built():
        raise ImproperlyConfigured("EMAIL_HOST names no mail server")

    with caplog.at_level("WARNING", logger="newsletter.services.sending.handover"):
        result = sending.send_chunk(email_send_id=email_send.pk, connection_factory=cannot_be_built)

    assert (result.sent, result.retrying, result.released) == (0, 0, 3)
    assert result.outage == "ImproperlyConfigured: EMAIL_HOST names no mail server"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"Send {email_send.pk}: the mail server cannot be used (ImproperlyConfigured: "
            "EMAIL_HOST names no mail server); 3 deliveries wait, untried, for the next chunk.",
        )
    ]


def test_each_connection_of_a_chunk_sends_from_a_daemon_thread_named_by_its_number(settings):
    settings.EMAIL_SEND_CONNECTIONS = 3
    SubscriberFactory.create_batch(41)  # three connections' worth (one per 20 readers)
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    threads = []

    def connection():
        threads.append(threading.current_thread())
        return locmem.EmailBackend()

    result = sending.send_chunk(email_send_id=email_send.pk, connection_factory=connection)

    assert result.sent == 41
    assert sorted(t.name for t in threads) == [
        "send-connection-0",
        "send-connection-1",
        "send-connection-2",
    ]
    # Daemons: a worker told to stop is never held up by a connection that hangs.
    assert all(t.daemon for t in threads)


class _DropsEveryMessageAndCannotClose(locmem.EmailBackend):
    """A backend that loses the connection on each message and then fails to close it:
    an error the sending code foresees nowhere."""

    def send_messages(self, messages):
        raise ConnectionResetError("reset by peer")

    def close(self):
        raise RuntimeError("the socket was already gone")


def test_a_connection_failing_in_an_unforeseen_way_is_logged_and_named_in_the_outage(
    readers, caplog
):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    with caplog.at_level("ERROR", logger="newsletter.services.sending.handover"):
        result = sending.send_chunk(
            email_send_id=email_send.pk, connection_factory=_DropsEveryMessageAndCannotClose
        )

    assert result.outage == "RuntimeError: the socket was already gone"
    assert (result.sent, result.retrying + result.released) == (0, 3)
    [logged] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged.getMessage() == "A sending connection failed."
    assert logged.exc_info[0] is RuntimeError


def test_a_connection_that_cannot_be_closed_is_logged_for_debugging_only(readers, caplog):
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    class CannotClose(locmem.EmailBackend):
        def close(self):
            raise OSError("the socket was already gone")

    with caplog.at_level("DEBUG", logger="newsletter.services.sending.handover"):
        result = sending.send_chunk(email_send_id=email_send.pk, connection_factory=CannotClose)

    assert (result.sent, result.outage) == (3, "")
    logged = [
        (r.levelname, r.getMessage(), r.exc_info and r.exc_info[1])
        for r in caplog.records
        if r.name == "newsletter.services.sending.handover"
    ]
    assert [(level, message) for level, message, _ in logged] == [
        ("DEBUG", "Closing a sending connection failed.")
    ]
    assert str(logged[0][2]) == "the socket was already gone"


def test_a_publication_edited_between_two_chunks_of_a_send_shows_in_the_later_chunk():
    SubscriberFactory.create_batch(3)  # one segment: each chunk renders the same variant
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    assert sending.send_chunk(email_send_id=email_send.pk, size=1).sent == 1
    publication = Publication.load()
    publication.name = "The Renamed Dispatch"
    publication.save()

    assert sending.send_chunk(email_send_id=email_send.pk, size=10).sent == 2

    lists = [message.extra_headers["List-Id"] for message in mail.outbox]
    assert lists == [
        "Broadside <broadside.localhost>",
        "The Renamed Dispatch <the-renamed-dispatch.localhost>",
        "The Renamed Dispatch <the-renamed-dispatch.localhost>",
    ]


def test_a_worker_keeps_at_most_eight_renders_of_its_sends(monkeypatch):
    monkeypatch.setattr(handover, "_render_cache", {})
    publication = Publication.load()
    sends = [publish_article(article=ArticleFactory()).email_send for _ in range(3)]
    held = []
    for email_send in sends:
        for variant in (("free", False), ("free", True), ("paid", False), ("paid", True)):
            handover._rendered(email_send=email_send, variant=variant, publication=publication)
            held.append(len(handover._render_cache))

    assert held == [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4]


def test_a_chunks_refusals_are_each_counted_recorded_and_logged(smtp_server, caplog):
    refused = SubscriberFactory.create_batch(6)
    rejected = SubscriberFactory()  # the message, not the reader: failed, not bounced
    accepted = SubscriberFactory()
    for reader in refused:
        smtp_server.refuse(reader.email, code=550, text="5.1.1 No such user")
    smtp_server.refuse(rejected.email, code=554, text="5.7.1 Message rejected as spam")
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)
    # Two of them were tried before and wait for their retry; another reader has left
    # since the send began (skipped at claim time).
    Delivery.objects.filter(send=email_send, subscriber__in=[refused[0], rejected]).update(
        attempts=1, next_attempt_at=timezone.now() - timedelta(minutes=1)
    )
    gone = SubscriberFactory()
    Delivery.objects.create(send=email_send, subscriber=gone, segment=Delivery.Segment.FREE)
    Subscriber.objects.filter(pk=gone.pk).update(status=Subscriber.Status.UNSUBSCRIBED)

    with caplog.at_level("WARNING", logger="newsletter.services.sending.marking"):
        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.claimed, result.skipped) == (9, 1)
    assert (result.sent, result.failed, result.bounced) == (1, 7, 6)
    email_send.refresh_from_db()
    assert (email_send.sent_count, email_send.failed_count) == (1, 7)
    failed = Delivery.objects.filter(send=email_send, subscriber__in=[*refused, rejected])
    assert {(d.status, d.next_attempt_at) for d in failed} == {(Delivery.Status.FAILED, None)}
    assert Delivery.objects.get(send=email_send, subscriber=accepted).status == Delivery.Status.SENT
    [logged] = [r for r in caplog.records if r.msg.startswith("Send chunk had")]
    assert logged.msg == "Send chunk had %d failed deliveries: %s"
    count, first_five = logged.args
    assert count == 7
    assert len(first_five) == 5
    assert {entry.split(": ", 1)[1] for entry in first_five} <= {
        "550 5.1.1 No such user",
        "554 5.7.1 Message rejected as spam",
    }
    assert {entry.split(": ", 1)[0] for entry in first_five} < {
        r.email for r in [*refused, rejected]
    }


def test_inline_the_chunks_own_thread_keeps_renewing_the_lease_while_a_message_is_slow(
    readers, settings
):
    # A claim is held for 0.6 s after each renewal, renewed every 0.24 s; each message
    # takes 0.8 s to hand over. Inside a transaction the chunk's own thread renews
    # between its short waits for marks, so the whole chunk goes out.
    settings.EMAIL_CLAIM_TIMEOUT = 1.2
    email_send = publish_article(article=ArticleFactory()).email_send
    mark_sending(email_send)

    class Slow(locmem.EmailBackend):
        def send_messages(self, messages):
            time.sleep(0.8)
            return super().send_messages(messages)

    result = sending.send_chunk(email_send_id=email_send.pk, connection_factory=Slow)

    assert (result.sent, result.released) == (3, 0)
