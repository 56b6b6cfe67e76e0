"""A chunk through a provider's batch API (Mailgun, Postmark), against local stand-ins
of their HTTP APIs (tests/fakes/esp.py) driven by the real anymail backends."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.urls import resolve
from django.utils import timezone

from newsletter.models import Delivery, EmailSend
from newsletter.services import sending
from newsletter.services.publishing import publish_article
from subscriptions.services.tokens import read_unsubscribe_token
from tests.factories import ArticleFactory, MembershipFactory, SubscriberFactory
from tests.fakes.esp import FakeMailgun, FakePostmark

pytestmark = pytest.mark.django_db

PAYWALLED_BODY = '<p>Free opening.</p><hr class="paywall"><p>Paid analysis.</p>'


@pytest.fixture(params=["mailgun", "postmark"])
def provider(request, settings):
    if request.param == "mailgun":
        fake = FakeMailgun().start()
        settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
        settings.ANYMAIL = {
            "MAILGUN_API_KEY": "key-test",
            "MAILGUN_API_URL": f"{fake.url}/v3",
            "MAILGUN_SENDER_DOMAIN": "mg.example.com",
        }
    else:
        fake = FakePostmark().start()
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "token", "POSTMARK_API_URL": fake.url + "/"}
    yield fake
    fake.stop()


@pytest.fixture
def readers():
    free = [SubscriberFactory(name=f"Reader {i}") for i in range(30)]
    paid = [MembershipFactory().subscriber for _ in range(3)]
    SubscriberFactory(email="gone@example.com", status="unsubscribed")
    return {"free": free, "paid": paid}


def start(article):
    email_send = publish_article(article=article).email_send
    EmailSend.objects.filter(pk=email_send.pk).update(
        status=EmailSend.Status.SENDING, started_at=timezone.now()
    )
    return email_send


def unsubscribe_link_owner(url: str) -> int:
    match = resolve(urlsplit(url).path)
    assert match.url_name == "unsubscribe"
    return read_unsubscribe_token(token=match.kwargs["token"])


def test_a_chunk_goes_out_in_one_call_per_segment_each_reader_with_their_own_link(
    provider, readers
):
    email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.claimed, result.sent, result.failed) == (33, 33, 0)
    assert sorted(provider.calls) == [3, 30]  # free and paid readers: two calls
    subscribers = {s.email: s for s in [*readers["free"], *readers["paid"]]}
    assert sorted(provider.recipients()) == sorted(subscribers)
    for copy in provider.copies:
        owner = subscribers[copy.to]
        # Their own link in the text, the html and the List-Unsubscribe header.
        text_link = next(w for w in copy.text.split() if "/unsubscribe/" in w)
        assert unsubscribe_link_owner(text_link) == owner.pk
        assert text_link in copy.html
        one_click = copy.headers["List-Unsubscribe"].split(",")[0].strip("<> ")
        assert unsubscribe_link_owner(one_click) == owner.pk
        assert copy.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert owner.email in copy.html and owner.email in copy.text
        if owner.name:
            assert f"Hi {owner.name}," in copy.text
        paid = owner in readers["paid"]
        assert ("Paid analysis." in copy.text) is paid
    # Each delivery records the provider's message id for its reader.
    ids = dict(email_send.deliveries.values_list("subscriber__email", "provider_message_id"))
    assert all(ids.values())
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}


def test_a_call_refused_for_now_is_retried_later_for_its_readers(provider, readers, settings):
    email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))
    provider.fail_calls(503, times=1)  # the first call (either segment) is throttled

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.retrying in (3, 30)
    assert result.sent == 33 - result.retrying
    waiting = email_send.deliveries.filter(status=Delivery.Status.PENDING)
    assert waiting.count() == result.retrying
    assert all(d.attempts == 1 and d.next_attempt_at for d in waiting)
    assert "503" in waiting.first().last_error
    # Once the retry is due, they go out, and nobody got a second copy.
    waiting.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    again = sending.send_chunk(email_send_id=email_send.pk)
    assert again.sent == result.retrying
    assert len(provider.recipients()) == len(set(provider.recipients())) == 33
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}


def test_a_recipient_the_provider_rejects_fails_and_the_rest_are_sent(readers, settings):
    with FakePostmark() as postmark:
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "t", "POSTMARK_API_URL": postmark.url + "/"}
        rejected = readers["free"][5]
        postmark.reject(rejected.email)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (32, 1, 0)
    delivery = Delivery.objects.get(send=email_send, subscriber=rejected)
    assert delivery.status == Delivery.Status.FAILED
    assert "406" in delivery.last_error and "inactive" in delivery.last_error
    assert rejected.email not in postmark.recipients()


def test_a_call_refused_for_good_fails_its_readers(readers, settings):
    with FakeMailgun() as mailgun:
        settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
        settings.ANYMAIL = {
            "MAILGUN_API_KEY": "k",
            "MAILGUN_API_URL": f"{mailgun.url}/v3",
            "MAILGUN_SENDER_DOMAIN": "mg.example.com",
        }
        mailgun.fail_calls(400, times=2)
        email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (0, 33, 0)
    assert mailgun.copies == []
    failed = email_send.deliveries.filter(status=Delivery.Status.FAILED)
    assert failed.count() == 33
    assert all("Mailgun: HTTP 400" in d.last_error for d in failed)


def test_batch_calls_hold_no_more_readers_than_the_provider_takes(settings):
    SubscriberFactory.create_batch(620)
    with FakePostmark() as postmark:
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "t", "POSTMARK_API_URL": postmark.url + "/"}
        settings.EMAIL_SEND_CONNECTIONS = 1
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=620)

    assert result.sent == 620
    assert sorted(postmark.calls) == [120, 500]


def test_without_batch_sending_each_reader_is_one_call(provider, readers, settings):
    settings.EMAIL_SEND_ESP_BATCH = False
    email_send = start(ArticleFactory())

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 33
    assert provider.calls == [1] * 33
    # Each delivery records the provider's own id for its message (what its webhooks
    # name), not the Message-ID we wrote.
    ids = list(email_send.deliveries.values_list("provider_message_id", flat=True))
    assert len(set(ids)) == 33
    assert all(provider.provider in i and not i.startswith("<broadside.") for i in ids)


def postmark_settings(settings, postmark, **extra):
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {
        "POSTMARK_SERVER_TOKEN": "server-token-1",
        "POSTMARK_API_URL": postmark.url + "/",
        **extra,
    }
    settings.EMAIL_SEND_CONNECTIONS = 1


def test_batch_calls_go_with_the_servers_token_and_message_stream(settings):
    SubscriberFactory.create_batch(3)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark, POSTMARK_MESSAGE_STREAM="newsletters")
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 3
    assert [h["X-Postmark-Server-Token"] for h in postmark.request_headers] == ["server-token-1"]
    assert postmark.message_streams == ["newsletters"] * 3


def test_two_calls_refused_in_a_row_end_the_connections_share_of_the_chunk(settings):
    SubscriberFactory.create_batch(1001)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(503, times=2)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=1001)

    # Two calls of 500 refused; the last reader is never offered to a provider that
    # refuses everything, and waits, untried, for the sweeper to restart the send.
    assert (result.sent, result.retrying, result.released) == (0, 1000, 1)
    assert result.outage.startswith("Postmark: HTTP 503")
    assert len(postmark.request_headers) == 2
    untried = email_send.deliveries.get(attempts=0)
    assert (untried.status, untried.next_attempt_at) == (Delivery.Status.PENDING, None)


def test_one_refused_call_does_not_stop_the_calls_after_it(settings):
    SubscriberFactory.create_batch(1001)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(503, times=1)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=1001)

    assert (result.sent, result.retrying, result.released) == (501, 500, 0)
    assert result.outage == ""
    assert sorted(postmark.calls) == [1, 500]


def test_a_segment_of_one_reader_goes_out_in_its_own_call(settings):
    free = SubscriberFactory.create_batch(2)
    paid = MembershipFactory().subscriber
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 3
    assert sorted(postmark.calls) == [1, 2]
    copies = {copy.to: copy for copy in postmark.copies}
    assert "Paid analysis." in copies[paid.email].text
    assert all("Paid analysis." not in copies[r.email].text for r in free)
    # The provider's reports name the send and the segment each copy came from.
    assert copies[paid.email].headers["Feedback-ID"].startswith(f"{email_send.pk}:paid:")
    assert copies[free[0].email].headers["Feedback-ID"].startswith(f"{email_send.pk}:free:")


def test_calls_refused_for_good_fail_their_readers_and_the_next_call_still_goes(settings):
    SubscriberFactory.create_batch(1001)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(422, times=2)  # the message itself is refused, not the service
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=1001)

    # Postmark answers a batch refused as a whole with one error object, not a list of
    # answers: the call's readers fail with its reason (they were once taken for an
    # outage, released untried, and offered again and again).
    assert (result.sent, result.failed, result.retrying, result.released) == (1, 1000, 0, 0)
    assert result.outage == ""
    assert postmark.calls == [1]
    failed = email_send.deliveries.filter(status=Delivery.Status.FAILED)
    assert {d.last_error for d in failed} == {
        'Postmark: HTTP 422 {"ErrorCode": 422, "Message": "Try later"}'
    }


def test_each_reader_postmark_refuses_is_failed_or_retried_by_its_own_answer(settings):
    readers = SubscriberFactory.create_batch(6)
    invalid, inactive = readers[1], readers[3]
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.invalid.add(invalid.email)
        postmark.reject(inactive.email)
        postmark.unanswered = 1  # the last message of the batch gets no answer
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (3, 2, 1)
    rows = {
        d.subscriber_id: (d.status, d.last_error)
        for d in email_send.deliveries.exclude(status=Delivery.Status.SENT)
    }
    assert rows == {
        invalid.pk: (Delivery.Status.FAILED, "Postmark 300: Invalid 'To' address."),
        inactive.pk: (Delivery.Status.FAILED, rows[inactive.pk][1]),
        # Not refused, only unanswered: tried again later.
        readers[5].pk: (Delivery.Status.PENDING, "Postmark did not answer for this message."),
    }
    assert rows[inactive.pk][1].startswith("Postmark 406: ")
    sent = email_send.deliveries.filter(status=Delivery.Status.SENT)
    assert {d.subscriber_id for d in sent} == {readers[0].pk, readers[2].pk, readers[4].pk}
    assert all(d.provider_message_id.startswith("postmark-") for d in sent)
